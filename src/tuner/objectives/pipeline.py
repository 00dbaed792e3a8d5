"""Diarization pipeline: the hyper-parameters of pyannote.audio's ``SpeakerDiarization`` pipeline (metric DER).

The second stage of the workflow: once the segmentation model is fine-tuned, tune what the pipeline does
with it (``segmentation.min_duration_off``, and for non-powerset models ``segmentation.threshold``; the
clustering's ``threshold``, linkage ``method`` and ``min_cluster_size``, or VBx's ``Fa`` / ``Fb``). Nothing
is trained: a trial runs the pipeline over the development files one by one, reporting each file's DER
(pyannote.metrics, optimal mapping) so that Optuna's ``WilcoxonPruner`` can stop a trial significantly worse
than the best one on the same files; its value is the DER over every file.

The pipeline is built from local parts, never the hub:

- segmentation (``pretrained``): a known checkpoint (``segmentation-3.0``), a local pyannote checkpoint, or
  ``study:NAME``, the best trial's checkpoint of a tuner study in the same store (``segmentation_fallback``
  is used, with a warning, when that study has none yet);
- embedding (option ``embedding``): ``campplus`` (CAM++, 3D-Speaker's zh/en model, Apache-2.0, fetched from
  the package registry), a local pyannote-loadable speaker-embedding checkpoint, or the WavLM + ECAPA
  embedder a ``wavlm_sv`` study trained: its ``tuner train`` output (``final.ckpt``) or ``study:NAME`` (that
  study's best trial), behind pyannote's embedding interface (:mod:`tuner.models.wavlm_embedding`);
- clustering: agglomerative, or VBx when option ``plda`` names a folder with ``xvec_transform.npz`` and
  ``plda.npz`` for that embedding. pyannote 4 loads a PLDA whatever the clustering, from the hub by default:
  agglomerative clustering gets a neutral one it never reads.

pyannote caches segmentations and embeddings in each file while the pipeline is in training mode; the
files live as long as the objective, so only the first trial pays for them and a clustering-only trial
costs seconds.
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

import numpy as np
import torch

from tuner import quiet
from tuner.errors import ConfigError, DataError
from tuner.objectives.base import StepwiseObjective
from tuner.search_space import Param, SearchSpace, TrialConfig

__all__ = ["PyannotePipeline", "pipeline_parameters", "write_neutral_plda", "export_pipeline_folder"]

logger = logging.getLogger(__name__)

#: the pipeline's demo corpus: the demo's unseen speakers in 12 development and 8 test conversations (a
#: per-file pruner needs more files than the segmentation demo's 4 to tell trials apart); 2 train files
#: only make it a complete protocol (nothing is trained)
DEMO_CORPUS = {"seed": 1, "n_train": 2, "n_dev": 12, "n_test": 8}
#: linkage methods of pyannote's AgglomerativeClustering
_METHODS = ("average", "centroid", "complete", "median", "single", "ward", "weighted")
#: pyannote's own defaults: agglomerative as released with pyannote/speaker-diarization-3.1, VBx as pyannote 4's
_DEFAULTS: dict[str, dict[str, Any]] = {
    "AgglomerativeClustering": {"clustering.threshold": 0.7045654963945799, "clustering.method": "centroid",
                                "clustering.min_cluster_size": 12},
    "VBxClustering": {"clustering.threshold": 0.6, "clustering.Fa": 0.07, "clustering.Fb": 0.8},
}  # fmt: skip
#: which parameters each part of the pipeline has (the others are refused in a search space)
_OWN = {
    "AgglomerativeClustering": {"clustering.threshold", "clustering.method", "clustering.min_cluster_size"},
    "VBxClustering": {"clustering.threshold", "clustering.Fa", "clustering.Fb"},
}


def pipeline_parameters(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"segmentation.min_duration_off": 0.1, ...}`` -> ``{"segmentation": {"min_duration_off": 0.1}, ...}``."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in config.items():
        if value is None or "." not in key:
            continue
        part, name = key.split(".", 1)
        nested.setdefault(part, {})[name] = value
    return nested


class PyannotePipeline(StepwiseObjective):
    """Tune pyannote's speaker-diarization pipeline on a diarization protocol; minimise DER over the dev files."""

    name = "pyannote_pipeline"
    metric = "DER"
    direction = "minimize"
    item_weight = "total_s"  # DER over files weighs each file by its reference speech
    components = ("Confusion", "FalseAlarm", "Miss")
    params: ClassVar[Mapping[str, Param]] = {
        "segmentation.min_duration_off": Param(float, 0.0, minimum=0.0, help="fill non-speech gaps shorter than this"),
        "segmentation.threshold": Param(float, None, positive=True, help="speech threshold (non-powerset models)"),
        "clustering.threshold": Param(float, None, positive=True, help="distance at which clusters stop merging"),
        "clustering.method": Param(str, None, allowed=_METHODS, help="agglomerative linkage"),
        "clustering.min_cluster_size": Param(int, None, minimum=1, help="smaller clusters are merged into others"),
        "clustering.Fa": Param(float, None, positive=True, help="VBx: acoustic scaling factor"),
        "clustering.Fb": Param(float, None, positive=True, help="VBx: speaker regularisation"),
    }
    default_options: ClassVar[Mapping[str, Any]] = {
        # a known speaker-embedding name, a local pyannote-loadable checkpoint, a wavlm_sv final.ckpt or study:NAME
        "embedding": "campplus",
        "plda": None,  # a folder with xvec_transform.npz and plda.npz (for this embedding): VBx clustering
        "segmentation_fallback": None,  # used when pretrained="study:NAME" has no best checkpoint (yet)
        "segmentation_step": 0.1,  # sliding-window step, in chunk durations (pyannote's default)
        "embedding_exclude_overlap": False,  # pyannote's default
        "segmentation_batch_size": 32,
        "embedding_batch_size": 32,
    }
    #: segmentation_fallback: what it stood in for is the study's recorded pretrained checkpoint
    runtime_options: ClassVar[frozenset[str]] = frozenset(
        {"segmentation_batch_size", "embedding_batch_size", "segmentation_fallback"}
    )

    # -- set-up --------------------------------------------------------------------------------------
    def setup(self) -> None:
        if getattr(self, "_pipeline", None) is not None:
            return
        from tuner.data.diarization import resolve_diarization_corpus

        if self.pretrained is None:
            raise ConfigError(
                "the pipeline needs a segmentation model: pretrained='segmentation-3.0', the path of a pyannote "
                "checkpoint, or 'study:NAME' (the best trial of a tuner study in the same store)."
            )
        data = self.data
        if data is None or str(data) == "demo":  # the pipeline's own demo corpus: enough files to compare on
            from tuner.data.demo import ensure_diarization_corpus

            data = ensure_diarization_corpus(self.workdir / "demo" / "diarization_pipeline", **DEMO_CORPUS)
        corpus = resolve_diarization_corpus(data, self.workdir)
        self.resolved_data = str(corpus)
        self._corpus = corpus
        segmentation = self._segmentation_model()
        embedding, self._embedding_source = self._embedding_model()
        plda_folder = self.options["plda"]
        self._clustering = "VBxClustering" if plda_folder else "AgglomerativeClustering"
        self._powerset = bool(segmentation.specifications.powerset)
        self._scratch = Path(tempfile.mkdtemp(prefix="tuner-pipeline-"))
        weakref.finalize(self, shutil.rmtree, self._scratch, ignore_errors=True)
        plda = (
            _load_plda(Path(plda_folder))
            if plda_folder
            else _load_plda(write_neutral_plda(self._scratch / "plda", embedding.dimension))
        )
        self._parts = {"segmentation": segmentation, "embedding": embedding, "plda_folder": plda_folder}
        self._pipeline = self._build(segmentation, embedding, plda)
        self._files: dict[str, list[dict[str, Any]]] = {}
        self._instantiated: dict[str, Any] | None = None
        self.data_summary = {"development": self._summary("development")}

    def _segmentation_model(self) -> Any:
        source = str(self.pretrained)
        if source.startswith("study:"):
            checkpoint = self._study_checkpoint(source[len("study:") :], "segmentation")
            if checkpoint is None:
                fallback = self.options["segmentation_fallback"]
                if fallback is None:
                    raise ConfigError(self._missing_study_checkpoint)
                logger.warning(
                    "%s; the pipeline uses %s (its segmentation_fallback) instead",
                    self._missing_study_checkpoint,
                    fallback,
                )
                self.pretrained = fallback
                return self._segmentation_model()
            self.pretrained_source = self._study_source
            return _load_segmentation(checkpoint)
        path = self.resolve_pretrained(kinds=("pyannote-segmentation",))
        if path is None:
            raise ConfigError(
                "objective 'pyannote_pipeline' needs a segmentation model: set pretrained= to a known name "
                "(segmentation-3.0), a checkpoint path, or 'study:NAME'."
            )
        return _load_segmentation(path)

    def _study_checkpoint(self, study_name: str, part: str) -> Path | None:
        """The kept checkpoint of the best trial of ``study_name`` in this study's store (the ``part``, a
        segmentation or an embedding), downloaded to the work folder, its provenance in :attr:`_study_source`
        (None, with :attr:`_missing_study_checkpoint` saying why, when there is none)."""
        from tuner.pretrained import sha256_of
        from tuner.store.resolver import CheckpointUnavailable

        given = "pretrained" if part == "segmentation" else f"options['{part}']"
        if self.store is None:
            raise ConfigError(f"{given}='study:{study_name}' needs a store (tuner run / tuner evaluate provide it).")
        try:
            found = self.store.best_checkpoint(study_name, self.workdir / "cache" / part)
        except CheckpointUnavailable as error:
            self._missing_study_checkpoint = f"{given}='study:{study_name}': {error}"
            return None
        self._study_source = {
            "source": f"study:{study_name}",
            "study": study_name,
            "trial": found.trial,
            "epoch": found.epoch,
            "value": found.value,
            "path": str(found.path.resolve()),
            "sha256": sha256_of(found.path),
            "fine_tuned_from": dict(found.record.pretrained_source or {}) or found.record.pretrained,
        }
        logger.info(
            "%s: the best trial %d of study '%s' (%s %.4f; its checkpoint after epoch %d)",
            part, found.trial, study_name, found.record.metric, found.value, found.epoch + 1,
        )  # fmt: skip
        return found.path

    def _embedding_model(self) -> tuple[Any, dict[str, Any]]:
        from tuner.models.wavlm_embedding import load_wavlm_sv_embedding, read_wavlm_sv_checkpoint
        from tuner.pretrained import KNOWN, resolve

        source = str(self.options["embedding"])
        if source.startswith("study:"):  # a wavlm_sv study's best trial
            checkpoint = self._study_checkpoint(source[len("study:") :], "embedding")
            if checkpoint is None:
                raise ConfigError(self._missing_study_checkpoint)
            found = read_wavlm_sv_checkpoint(checkpoint)
            if found is None:
                raise ConfigError(f"options['embedding'] = {source!r}: that study's checkpoints are not wavlm_sv's.")
            return load_wavlm_sv_embedding(found), self._study_source
        resolved = resolve(source, self.workdir / "pretrained", kinds=("speaker-embedding",))
        if source in KNOWN:
            from tuner.models.campplus import load_campplus

            return load_campplus(resolved.load), dict(resolved.provenance)
        found = read_wavlm_sv_checkpoint(resolved.load)  # `tuner train`'s final.ckpt of a wavlm_sv study
        if found is not None:
            return load_wavlm_sv_embedding(found), dict(resolved.provenance)
        model = _load_model(resolved.load, what="speaker-embedding")
        if not hasattr(model, "dimension"):
            raise ConfigError(
                f"embedding {source}: {type(model).__name__} is not a speaker-embedding model (it has no "
                "'dimension'); give a pyannote embedding checkpoint (e.g. a local copy of "
                "pyannote/wespeaker-voxceleb-resnet34-LM) or 'campplus'."
            )
        return model, dict(resolved.provenance)

    def _build(self, segmentation: Any, embedding: Any, plda: Any) -> Any:
        from pyannote.audio.pipelines import SpeakerDiarization

        with quiet.ignoring(category=UserWarning):
            pipeline = SpeakerDiarization(
                segmentation=segmentation,
                segmentation_step=float(self.options["segmentation_step"]),
                embedding=embedding,
                embedding_exclude_overlap=bool(self.options["embedding_exclude_overlap"]),
                plda=plda,
                clustering=self._clustering,
                embedding_batch_size=int(self.options["embedding_batch_size"]),
                segmentation_batch_size=int(self.options["segmentation_batch_size"]),
            )
        pipeline.training = True  # pyannote then caches segmentations and embeddings in each file dict
        return pipeline

    def check_space(self, space: SearchSpace) -> None:
        own = set(_OWN[self._clustering]) | {"segmentation.min_duration_off"}
        if not self._powerset:
            own.add("segmentation.threshold")
        for name in (*space.dimensions, *space.fixed):
            if name in own:
                continue
            if name == "segmentation.threshold":
                why = "the segmentation model is powerset (its output is already binary): remove it"
            elif self._clustering == "AgglomerativeClustering":
                why = "VBx's; this pipeline clusters agglomeratively: remove it, or give options['plda'] for VBx"
            else:
                why = "agglomerative clustering's; with a PLDA this pipeline clusters with VBx: remove it"
            raise ConfigError(f"{space.source}: key '{name}' is {why}.")

    def default_config(self) -> dict[str, Any]:
        self.setup()
        config = {"segmentation.min_duration_off": 0.0, **_DEFAULTS[self._clustering]}
        if not self._powerset:
            config["segmentation.threshold"] = 0.5
        return config

    @property
    def baseline_label(self) -> str:
        return "pyannote's default parameters"

    # -- trials --------------------------------------------------------------------------------------
    def steps(self, split: str = "development") -> list[str]:
        return [file["uri"] for file in self._split_files(split)]

    def evaluate_step(self, config: TrialConfig, index: int, split: str = "development") -> dict[str, float]:
        from pyannote.metrics.diarization import DiarizationErrorRate

        self.setup()
        params = pipeline_parameters({**self.default_config(), **config.extra})
        if params != self._instantiated:
            self._pipeline.instantiate(params)
            self._instantiated = params
        file = self._split_files(split)[index]
        with quiet.ignoring(category=UserWarning):
            output = self._pipeline(file)
        hypothesis = getattr(output, "speaker_diarization", output)
        detail = DiarizationErrorRate()(file["annotation"], hypothesis, uem=file["annotated"], detailed=True)
        return _rates(detail["confusion"], detail["false alarm"], detail["missed detection"], detail["total"])

    def combine(self, results: list[dict[str, float]]) -> dict[str, float]:
        return _rates(*(sum(r[k] for r in results) for k in ("confusion_s", "false_alarm_s", "miss_s", "total_s")))

    def _split_files(self, split: str) -> list[dict[str, Any]]:
        """The files of ``split`` with their waveform in memory (and, once a trial ran, pyannote's caches)."""
        if split not in self._files:
            from tuner.data.audio import WaveformCache
            from tuner.data.compressed import DecodeCache

            subset = {"development": "development", "test": "test"}[split]
            if subset == "test":
                self._corpus.validate(subsets=("test",))  # a corpus without one: an error naming what to add
            # Audio.crop refuses a chunk ending at the last sample; compressed files decoded once at 16 kHz
            waveforms = WaveformCache(pad_samples=256, decoded=DecodeCache(self.workdir / "cache" / "decoded", 16000))
            files = []
            for file in self._corpus.files(subset):
                waveform, sample_rate = waveforms.get(str(file["audio"]))
                files.append(
                    {
                        "uri": file["uri"],
                        "waveform": torch.from_numpy(waveform),  # (channels, samples): pyannote downmixes
                        "sample_rate": sample_rate,
                        "annotation": file["annotation"],
                        "annotated": file["annotated"],
                    }
                )
            if not files:
                raise DataError(f"{self._corpus}: the {subset} subset has no file to diarize.")
            self._files[split] = files
        return self._files[split]

    def _summary(self, split: str) -> dict[str, Any]:
        files = self._split_files(split)
        seconds = sum(f["waveform"].shape[-1] / f["sample_rate"] for f in files)
        return {"files": len(files), "hours": round(seconds / 3600, 4)}

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described["options"] = {**described["options"], "embedding_source": getattr(self, "_embedding_source", None)}
        return described

    # -- export --------------------------------------------------------------------------------------
    exports_folder = True

    def export(self, folder: str | Path, config: Mapping[str, Any]) -> Path:
        """Write ``folder`` so that ``pyannote.audio.Pipeline.from_pretrained(folder)`` loads this pipeline with
        ``config``'s parameters (see :func:`export_pipeline_folder`)."""
        self.setup()
        params = pipeline_parameters({**self.default_config(), **config})
        return export_pipeline_folder(
            folder,
            segmentation=self._parts["segmentation"],
            embedding=self._parts["embedding"],
            plda_folder=self._parts["plda_folder"],
            clustering=self._clustering,
            params=params,
            options={k: self.options[k] for k in ("segmentation_step", "embedding_exclude_overlap",
                                                  "segmentation_batch_size", "embedding_batch_size")},
        )  # fmt: skip


def _rates(confusion: float, false_alarm: float, miss: float, total: float) -> dict[str, float]:
    total = float(total)
    scale = 1.0 / total if total > 0 else float("nan")
    return {
        "DER": (confusion + false_alarm + miss) * scale,
        "Confusion": confusion * scale,
        "FalseAlarm": false_alarm * scale,
        "Miss": miss * scale,
        "confusion_s": float(confusion),
        "false_alarm_s": float(false_alarm),
        "miss_s": float(miss),
        "total_s": total,
    }


def _load_model(path: str | Path, what: str) -> Any:
    from pyannote.audio import Model

    try:
        with quiet.ignoring(category=UserWarning):
            model = Model.from_pretrained(str(path), map_location="cpu", strict=False)
    except Exception as error:  # any loading failure gets the same advice
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"{path}: not a pyannote.audio {what} model ({detail}). Give a pyannote checkpoint (pytorch_model.bin, "
            "its folder, or a Lightning .ckpt written by pyannote)."
        ) from None
    if model is None:
        raise ConfigError(f"{path}: no {what} model found (not a local file, not on the hub).")
    return model.eval()


def _load_segmentation(path: str | Path) -> Any:
    model = _load_model(path, "segmentation")
    specifications = model.specifications
    if isinstance(specifications, tuple) or specifications.problem.name == "REPRESENTATION":
        raise ConfigError(
            f"{path}: a {type(model).__name__} is not a segmentation model (pretrained= is the segmentation)."
        )
    return model


def write_neutral_plda(folder: str | Path, dimension: int, lda_dimension: int = 128) -> Path:
    """A PLDA that leaves embeddings as they are (identity transforms, unit variances), for pyannote 4's
    pipeline, which loads one whatever the clustering; agglomerative clustering never reads it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lda = min(lda_dimension, dimension)
    np.savez(
        folder / "xvec_transform.npz", mean1=np.zeros(dimension), mean2=np.zeros(lda), lda=np.eye(dimension)[:, :lda]
    )
    np.savez(folder / "plda.npz", mu=np.zeros(lda), tr=np.eye(lda), psi=np.ones(lda))
    return folder


def _load_plda(folder: Path) -> Any:
    from pyannote.audio.core.plda import PLDA

    missing = [name for name in ("xvec_transform.npz", "plda.npz") if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"options['plda'] = {folder}: no {' or '.join(missing)} there (a pyannote PLDA folder holds both)."
        )
    return PLDA.from_pretrained(str(folder))


def export_pipeline_folder(
    folder: str | Path,
    *,
    segmentation: Any,
    embedding: Any,
    plda_folder: str | Path | None,
    clustering: str,
    params: Mapping[str, Any],
    options: Mapping[str, Any],
) -> Path:
    """``folder/config.yaml`` (the pipeline and its parameters), ``segmentation/`` and ``embedding/`` (pyannote
    checkpoints) and ``plda/``: what ``pyannote.audio.Pipeline.from_pretrained(folder)`` loads, offline."""
    import pyannote.audio
    import yaml

    from tuner.models.campplus import save_pyannote_checkpoint

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_pyannote_checkpoint(segmentation, folder / "segmentation" / "pytorch_model.bin")
    save_pyannote_checkpoint(embedding, folder / "embedding" / "pytorch_model.bin")
    if plda_folder:
        (folder / "plda").mkdir(exist_ok=True)
        for name in ("xvec_transform.npz", "plda.npz"):
            shutil.copyfile(Path(plda_folder) / name, folder / "plda" / name)
    else:
        write_neutral_plda(folder / "plda", embedding.dimension)
    config = {
        "dependencies": {"pyannote.audio": pyannote.audio.__version__},
        "pipeline": {
            "name": "pyannote.audio.pipelines.SpeakerDiarization",
            "params": {
                "segmentation": "$model/segmentation",
                "embedding": "$model/embedding",
                "plda": "$model/plda",
                "clustering": clustering,
                **{k: v for k, v in options.items()},
            },
        },
        "params": {part: dict(values) for part, values in params.items()},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return folder
