"""tuner: Optuna studies that fine-tune speech models (pyannote segmentation, WavLM SV, SepFormer).

The public API is small; heavy libraries (torch, pyannote, lightning) load only when a study runs.
"""

from __future__ import annotations

from tuner._version import __version__
from tuner.errors import ConfigError, DataError, StorageError, StudyChanged, TunerError
from tuner.search_space import Param, SearchSpace, TrialConfig
from tuner.study import StudySpec, load_study_file

__all__ = [
    "__version__",
    "StudySpec",
    "load_study_file",
    "SearchSpace",
    "TrialConfig",
    "Param",
    "TunerError",
    "ConfigError",
    "DataError",
    "StorageError",
    "StudyChanged",
    "run_study",
    "StudyCallback",
    "export_best",
]


def __getattr__(name: str):  # lazy: importing these pulls in optuna
    if name == "run_study":
        from tuner.runner import run_study

        return run_study
    if name == "StudyCallback":
        from tuner.callbacks import StudyCallback

        return StudyCallback
    if name == "export_best":
        from tuner.export import export_best

        return export_best
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
