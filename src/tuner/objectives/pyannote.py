"""Diarization segmentation: pyannote.audio's ``SpeakerDiarization`` task and ``PyanNet`` model (metric DER).

What is learned (the model) is separate from what it is learned on (the task), as in pyannote.audio:
the model is ``PyanNet`` with random weights (a small config by default) or any pyannote segmentation
checkpoint given with ``--pretrained``; the task is pyannote's own ``SpeakerDiarization`` (powerset
loss, validation DER with its Confusion / FalseAlarm / Miss components at a 0.5 threshold), reading
audio through soundfile so that neither FFmpeg nor torchcodec is involved.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # pyannote 4 telemetry: off unless asked for

import logging
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from tuner import quiet

with quiet.ignoring(quiet.TORCHCODEC_MISSING):  # torchcodec cannot load without FFmpeg; tuner never needs it
    from pyannote.audio import Model
    from pyannote.audio.core.task import Specifications
    from pyannote.audio.models.segmentation import PyanNet
    from pyannote.audio.tasks import SpeakerDiarization

import lightning.pytorch as pl
import torch

from tuner.data.audio import WaveformCache
from tuner.data.compressed import DecodeCache
from tuner.data.diarization import DiarizationCorpus, resolve_diarization_corpus
from tuner.data.loading import loader_settings, resolve_num_workers
from tuner.errors import ConfigError
from tuner.objectives.base import FitInputs, TrainedObjective
from tuner.objectives.pyannote_internals import match_speakers_in_float32
from tuner.search_space import TrialConfig
from tuner.training.freeze import LayerStack
from tuner.training.items import ItemCollector

__all__ = ["PyannoteSegmentation", "load_pretrained_segmentation"]

logger = logging.getLogger(__name__)

#: pyannote's logged keys -> the names tuner records (the columns of the hand-run tables)
_LOGGED = {
    "DiarizationErrorRate": "DER",
    "DiarizationErrorRate/Confusion": "Confusion",
    "DiarizationErrorRate/FalseAlarm": "FalseAlarm",
    "DiarizationErrorRate/Miss": "Miss",
    "loss/train": "loss/train",
    "loss/val": "loss/val",
}
_BLOCKS = ("sincnet", "lstm", "linear")
_SCRATCH_SAMPLE_RATE = 16000  # PyanNet's default, used when no --pretrained model is given


class _SoundfileSpeakerDiarization(SpeakerDiarization):
    """pyannote's SpeakerDiarization task, handing the model waveforms read with soundfile.

    pyannote's task keeps audio paths and lets torchcodec decode them; here ``get_file`` returns
    ``{"waveform", "sample_rate"}`` from :meth:`WaveformCache.for_crops`: for WAV and FLAC a
    :class:`~tuner.data.audio.SeekableWaveform`, from which ``Audio.crop`` reads each training or
    validation chunk with a seek (no whole file decoded, no audio held); other formats are decoded whole
    into the shared cache. Both carry a few samples of zero padding because ``Audio.crop`` rejects a
    chunk that ends exactly at the last sample.
    """

    def __init__(self, *args: Any, waveforms: WaveformCache, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waveforms = waveforms

    def get_file(self, file_id: int) -> dict[str, Any]:
        waveform, sample_rate = self.waveforms.for_crops(str(self.prepared_data["audio-path"][file_id]))
        return {"waveform": waveform, "sample_rate": sample_rate}


class PyannoteSegmentation(TrainedObjective):
    """Fine-tune pyannote's segmentation model on a diarization protocol; minimise validation DER."""

    name = "pyannote_segmentation"
    metric = "DER"
    direction = "minimize"
    figure = "der_components"
    components = ("Confusion", "FalseAlarm", "Miss", "loss/train", "loss/val")
    default_options: ClassVar[Mapping[str, Any]] = {
        # task: None = from the pretrained model's specifications, else the values below
        "duration": None,  # chunk duration in seconds (3.0 from scratch)
        "max_speakers_per_chunk": None,  # 3 from scratch
        "max_speakers_per_frame": None,  # 2 from scratch (powerset)
        "num_workers": None,  # loader worker processes (None: tuner.data.loading.default_num_workers)
        # the subset validation runs on: "development" in a study; `tuner evaluate` uses "test"
        "split": "development",
        # small PyanNet for CPU runs from scratch (pyannote's defaults: lstm 128 x 2, linear 128 x 2)
        "sincnet": {"stride": 10},
        "lstm": {"hidden_size": 64, "num_layers": 2, "bidirectional": True, "monolithic": True},
        "linear": {"hidden_size": 64, "num_layers": 2},
    }
    runtime_options: ClassVar[frozenset[str]] = frozenset({"num_workers"})
    _SCRATCH_TASK: ClassVar[dict[str, float]] = {
        "duration": 3.0,
        "max_speakers_per_chunk": 3,
        "max_speakers_per_frame": 2,
    }

    def setup(self) -> None:
        if getattr(self, "_corpus", None) is not None:
            return
        corpus = resolve_diarization_corpus(self.data, self.workdir)
        self._task_options = dict(self._SCRATCH_TASK)
        self._num_blocks = len(_BLOCKS)
        sample_rate = _SCRATCH_SAMPLE_RATE
        self._checkpoint = self.resolve_pretrained(kinds=("pyannote-segmentation",))
        if self._checkpoint is not None:
            pretrained = load_pretrained_segmentation(self._checkpoint)
            self._num_blocks = sum(isinstance(getattr(pretrained, n, None), torch.nn.Module) for n in _BLOCKS)
            sample_rate = int(pretrained.audio.sample_rate or _SCRATCH_SAMPLE_RATE)
            specifications = pretrained.specifications
            if not isinstance(specifications, Specifications) or specifications.classes is None:
                raise ConfigError(
                    f"{self._checkpoint}: not a segmentation model (one task with speaker classes expected)."
                )
            self._task_options = {
                "duration": float(specifications.duration),
                "max_speakers_per_chunk": len(specifications.classes),
                "max_speakers_per_frame": specifications.powerset_max_classes or 2,
            }
        for key in self._task_options:
            if self.options[key] is not None:
                self._task_options[key] = self.options[key]
        self.resolved_data = str(corpus)
        # files at another rate, regions shorter than a chunk: warnings (no region left: an error)
        split = self.options["split"]
        self.data_summary = corpus.validate(
            sample_rate=sample_rate, chunk_duration=self._task_options["duration"], subsets=("train", split)
        )
        self._protocol = corpus.protocol(validate_on=split)
        # compressed files decoded once, at the model's rate, into WAVs read a chunk at a time
        match_speakers_in_float32()  # bf16-mixed: SciPy's assignment refuses a bfloat16 cost matrix
        self._waveforms = WaveformCache(
            pad_samples=256, decoded=DecodeCache(self.workdir / "cache" / "decoded", sample_rate)
        )
        cache_dir = Path(tempfile.mkdtemp(prefix="tuner-pyannote-"))
        weakref.finalize(self, shutil.rmtree, cache_dir, ignore_errors=True)  # with the objective, or at exit
        self._task_cache = cache_dir / "prepared.npz"  # pyannote's prepared (meta)data, shared by trials
        self._corpus: DiarizationCorpus = corpus  # last: setup() is done once this is set

    def build(self, config: TrialConfig, seed: int) -> FitInputs:
        self.setup()
        pl.seed_everything(seed, workers=True, verbose=False)
        if self._checkpoint is not None:
            model = load_pretrained_segmentation(self._checkpoint)
        else:
            model = PyanNet(
                sincnet=dict(self.options["sincnet"]),
                lstm=dict(self.options["lstm"]),
                linear=dict(self.options["linear"]),
            )
        workers = resolve_num_workers(self.options["num_workers"])  # pyannote gives each worker its own stream
        model.task = _SoundfileSpeakerDiarization(
            self._protocol,
            cache=str(self._task_cache),
            batch_size=config.batch_size,
            num_workers=workers,
            pin_memory=loader_settings(workers)["pin_memory"],
            waveforms=self._waveforms,
            **self._task_options,
        )
        trainable = sum(p.numel() for p in model.parameters())
        # what was trained: the checkpoint's hyperparameters, or the options a model from scratch was built with
        architecture = {"class": type(model).__name__}
        architecture.update({k: v for k, v in dict(model.hparams).items() if k in ("sincnet", "lstm", "linear")})
        return FitInputs(module=model, info={"parameters_before_setup": trainable, "architecture": architecture})

    def num_blocks(self) -> int | None:
        return self._num_blocks

    def split_options(self, split: str) -> dict[str, Any]:
        return {"split": split}

    def layers(self, module: pl.LightningModule) -> LayerStack:
        names = [name for name in _BLOCKS if isinstance(getattr(module, name, None), torch.nn.Module)]
        classifier = getattr(module, "classifier", None)
        head = [classifier] if isinstance(classifier, torch.nn.Module) else []
        if not head:
            raise ConfigError(
                f"{type(module).__name__} has no 'classifier' head: 'unfrozen_layers' needs a "
                "PyanNet-like model (sincnet > lstm > linear > classifier)."
            )
        return LayerStack(head=head, blocks=[getattr(module, n) for n in names], block_names=names)

    def epoch_metrics(self, logged: Mapping[str, float]) -> dict[str, float]:
        return {ours: float(logged[theirs]) for theirs, ours in _LOGGED.items() if theirs in logged}

    def item_collector(self) -> ItemCollector:
        """Each validation file's DER, weighted by its reference speech (pyannote's model logs only the total)."""
        from tuner.objectives.pyannote_internals import FileDERCollector

        return FileDERCollector()


def load_pretrained_segmentation(source: str | Path) -> Model:
    """A pyannote segmentation model from a local ``pytorch_model.bin``, a directory holding one, a
    Lightning ``.ckpt`` written by pyannote, or (online) a Hugging Face model id (see
    :func:`tuner.pretrained.resolve`, which also takes the names of known checkpoints)."""
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "pytorch_model.bin").is_file():
        raise ConfigError(f"{path} holds no pytorch_model.bin: point --pretrained at the checkpoint file itself.")
    try:
        with quiet.ignoring(category=UserWarning):
            model = Model.from_pretrained(str(path) if path.exists() else str(source), map_location="cpu")
    except Exception as error:
        raise ConfigError(
            f"cannot load pretrained segmentation model from {source}: {error}. It must be a pyannote.audio "
            "checkpoint (a file with a 'pyannote.audio' entry, as Model.save / Trainer.save_checkpoint write)."
        ) from None
    if model is None:
        raise ConfigError(f"cannot load pretrained segmentation model from {source} (not found on the hub).")
    return model
