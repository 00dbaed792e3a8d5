"""Study declarations (the study files) and their loading."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError

__all__ = ["StudySpec", "load_study_file"]


@dataclass(frozen=True)
class StudySpec:
    """Everything a study is: what it tunes, on what data, over which space, with which budget.

    A study file (``studies/*.py``) builds one of these and names it ``study``. Paths are relative to
    the directory ``tuner run`` is started from.
    """

    name: str
    objective: str
    search_space: str | Path
    data: str | None = "demo"
    pretrained: str | None = None
    n_trials: int = 10  # budget of finished (complete or pruned) trials
    max_epochs: int = 5  # epochs per trial; pruned trials stop earlier
    sampler: Any = None  # an optuna sampler (default: TPESampler seeded with `seed`)
    pruner: Any = None  # an optuna pruner (default: MedianPruner)
    seed: int = 0  # trial k trains with seed + k
    fixed: Mapping[str, Any] = field(default_factory=dict)  # parameters pinned on top of the space
    options: Mapping[str, Any] = field(default_factory=dict)  # objective options (model size, ...)
    trainer: Mapping[str, Any] = field(default_factory=dict)  # extra lightning.Trainer arguments
    description: str = ""

    def __post_init__(self) -> None:
        where = f"study '{self.name}'"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("StudySpec needs a non-empty 'name'.")
        for key in ("n_trials", "max_epochs"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}: '{key}' must be a positive integer, got {value!r}.")
        for key in ("fixed", "options", "trainer"):
            if not isinstance(getattr(self, key), Mapping):
                raise ConfigError(f"{where}: '{key}' must be a dict, got {type(getattr(self, key)).__name__}.")
        forbidden = {"max_epochs", "callbacks", "logger", "enable_progress_bar"} & set(self.trainer)
        if forbidden:
            raise ConfigError(f"{where}: 'trainer' cannot set {sorted(forbidden)}; tuner manages them.")

    def override(self, **changes: Any) -> StudySpec:
        """A copy with the non-None ``changes`` applied (command-line overrides)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_study_file(path: str | Path) -> StudySpec:
    """Execute a study file and return its ``study`` (a :class:`StudySpec`)."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        candidates = sorted(Path("studies").glob("*.py")) if Path("studies").is_dir() else []
        if candidates:
            hint = " Available here: " + ", ".join(str(c) for c in candidates) + "."
        raise ConfigError(f"study file not found: {path}.{hint}")
    module_name = f"_tuner_study_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not a Python file; a study file is a .py declaring `study = StudySpec(...)`.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    except SyntaxError as error:
        raise ConfigError(f"{path}:{error.lineno}: syntax error: {error.msg}.") from None
    except Exception as error:
        line = _line_in(error, path)
        raise ConfigError(f"{path}{line}: {type(error).__name__}: {error}") from None
    finally:
        sys.modules.pop(module_name, None)
    study = getattr(module, "study", None)
    if not isinstance(study, StudySpec):
        raise ConfigError(
            f"{path}: defines no `study = StudySpec(...)` (found {type(study).__name__}). "
            "See studies/pyannote_optim.py for the shape of a study file."
        )
    return study


def _line_in(error: BaseException, path: Path) -> str:
    traceback = error.__traceback__
    line = ""
    while traceback is not None:
        if Path(traceback.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = f":{traceback.tb_lineno}"
        traceback = traceback.tb_next
    return line
