"""Speaker verification: s3prl's WavLM + weighted layer sum + ECAPA-TDNN head (metric: dev EER %).

What is learned (:class:`SpeakerEmbedder`: upstream, featurizer, head, loss) is separate from what it
is learned on (:class:`VerificationData`: training speakers in the Kathbath layout and a dev trial list).
Training uses fixed-length random crops and AAM-softmax over the training speakers (pair BCE and batch-hard
triplet as ``loss`` choices); validation embeds every utterance of the dev trial list (its first
``max_eval_seconds``), scores each trial by cosine similarity and reports EER (%), its threshold and
minDCF (p_target = 0.01).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from tuner import quiet
from tuner.data.audio import WaveformCache
from tuner.data.compressed import DecodeCache
from tuner.data.loading import Draw, DrawRandom, KeyedSampler, loader_settings, resolve_num_workers
from tuner.errors import ConfigError, DataError
from tuner.objectives.base import FitInputs, TrainedObjective, under
from tuner.search_space import Param, TrialConfig
from tuner.text import describe
from tuner.training.freeze import LayerStack
from tuner.training.items import ItemScores

__all__ = ["WavLMSpeakerVerification", "SpeakerEmbedder", "VerificationData"]

logger = logging.getLogger(__name__)

_DATA_HINT = (
    "Give the corpus root holding <root>/<train_split>/<speaker>/<utterance>.wav and the dev trial list "
    "(see README, 'Bring your corpus')."
)

SAMPLE_RATE = 16000


class _CropDataset(Dataset):
    """Training utterances as fixed-length random crops, labelled with their speaker index."""

    def __init__(
        self, paths: Sequence[Path], labels: Sequence[int], crop_samples: int, waveforms: WaveformCache, seed: int
    ) -> None:
        self.paths, self.labels, self.crop_samples = list(paths), list(labels), crop_samples
        self.waveforms = waveforms
        self.random = DrawRandom(seed)  # the same crops in any process, after any resume

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, draw: Draw) -> tuple[torch.Tensor, int]:
        from tuner.data.verification import random_crop

        waveform, _ = self.waveforms.get(self.paths[draw.item])
        crop = random_crop(waveform.mean(axis=0), self.crop_samples, self.random.generator(draw))
        return torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32)), self.labels[draw.item]


class _UtteranceDataset(Dataset):
    """Whole utterances (up to ``max_samples``) of a trial list, one per item."""

    def __init__(self, paths: Sequence[Path], max_samples: int, waveforms: WaveformCache) -> None:
        self.paths, self.max_samples, self.waveforms = list(paths), max_samples, waveforms

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        waveform, _ = self.waveforms.get(self.paths[index])
        return torch.from_numpy(np.ascontiguousarray(waveform.mean(axis=0)[: self.max_samples])), index


class VerificationData(pl.LightningDataModule):
    """Training speakers (random crops, speaker-balanced batches) and the dev trial list."""

    def __init__(
        self,
        train_paths: Sequence[Path],
        train_labels: Sequence[int],
        eval_paths: Sequence[Path],
        trials: np.ndarray,
        *,
        batch_size: int,
        crop_seconds: float,
        max_eval_seconds: float,
        per_speaker: int,
        waveforms: WaveformCache,
        seed: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.train_paths, self.train_labels = train_paths, train_labels
        self.eval_paths = eval_paths
        self.trials = trials  # (n, 3): label, index of enrollment utterance, index of test utterance
        self.batch_size, self.per_speaker, self.seed, self.num_workers = batch_size, per_speaker, seed, num_workers
        self.crop_samples = int(crop_seconds * SAMPLE_RATE)
        self.max_eval_samples = int(max_eval_seconds * SAMPLE_RATE)
        self.waveforms = waveforms

    @override
    def train_dataloader(self) -> DataLoader:
        from tuner.data.verification import SpeakerBatchSampler

        dataset = _CropDataset(self.train_paths, self.train_labels, self.crop_samples, self.waveforms, self.seed)
        sampler = SpeakerBatchSampler(self.train_labels, self.batch_size, per_speaker=self.per_speaker, seed=self.seed)
        return DataLoader(dataset, batch_sampler=KeyedSampler(sampler), **loader_settings(self.num_workers))

    @override
    def val_dataloader(self) -> DataLoader:
        # one utterance per batch: full lengths, no padding (WavLM's group norm would see the padding)
        dataset = _UtteranceDataset(self.eval_paths, self.max_eval_samples, self.waveforms)
        return DataLoader(dataset, batch_size=1, shuffle=False, **loader_settings(self.num_workers))


class SpeakerEmbedder(pl.LightningModule):
    """WavLM -> weighted sum of its hidden states -> ECAPA-TDNN -> speaker embedding, trained with a
    speaker loss; validation computes EER on the datamodule's trials."""

    def __init__(
        self, wavlm: Mapping[str, Any], head: Mapping[str, Any], n_speakers: int, loss: str, margin: float, scale: float
    ) -> None:
        super().__init__()
        from tuner.models.ecapa import ECAPATDNN
        from tuner.models.losses import build_speaker_loss
        from tuner.models.wavlm import WavLMUpstream, WeightedLayerSum

        self.save_hyperparameters()
        with quiet.ignoring(quiet.WEIGHT_NORM_DEPRECATED, FutureWarning):
            self.upstream = WavLMUpstream(dict(wavlm))
        self.featurizer = WeightedLayerSum(self.upstream.num_layers + 1)
        self.head = ECAPATDNN(self.upstream.hidden_size, **dict(head))
        emb_dim = int(dict(head).get("emb_dim", 256))
        self.loss = build_speaker_loss(loss, emb_dim, n_speakers, margin=margin, scale=scale)
        self._embeddings: dict[int, torch.Tensor] = {}
        self.epoch_details: dict[str, Any] | None = None  # the last validation's DET curve (for reports)
        self.item_scores: ItemScores | None = None  # the last validation's trial scores (tuner evaluate)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        hidden, frames = self.upstream(wav, lengths)
        features = self.featurizer(hidden)
        return self.head(features, frames)

    @override
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        wav, labels = batch
        loss = self.loss(self(wav), labels)
        self.log("loss/train", loss, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    @override
    def on_validation_epoch_start(self) -> None:
        self._embeddings = {}

    @override
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        wav, index = batch
        embedding = self(wav)
        for i, e in zip(index.tolist(), embedding):
            self._embeddings[i] = e.detach().float().cpu()

    @override
    def on_validation_epoch_end(self) -> None:
        from tuner.metrics.verification import (
            cosine_similarity,
            det_points,
            verification_metrics,
        )

        # Lightning's DataConnector sets Trainer.datamodule, which the Trainer class does not declare
        trials = self.trainer.datamodule.trials  # type: ignore[attr-defined]
        if len(self._embeddings) == 0:
            return
        table = torch.stack([self._embeddings[i] for i in range(len(self._embeddings))]).numpy()
        scores = cosine_similarity(table[trials[:, 1]], table[trials[:, 2]])
        metrics = verification_metrics(scores, trials[:, 0])
        self.log_dict({k: float(v) for k, v in metrics.items()}, on_epoch=True)
        self.epoch_details = {"det": det_points(scores, trials[:, 0])}
        self.item_scores = ItemScores(
            ids=tuple(map(str, range(len(scores)))),
            values=np.asarray(scores, dtype=float),
            labels=np.asarray(trials[:, 0], dtype=np.int64),
        )


class WavLMSpeakerVerification(TrainedObjective):
    """Fine-tune WavLM + ECAPA-TDNN for speaker verification; minimise dev EER (%)."""

    name = "wavlm_sv"
    metric = "EER"
    direction = "minimize"
    unit = "%"
    figure = "eer_det"
    components = ("minDCF", "threshold", "loss/train")
    params: ClassVar[Mapping[str, Param]] = {
        "loss": Param(str, "aam", allowed=("aam", "pair_bce", "triplet"), help="speaker loss"),
        "margin": Param(float, 0.2, minimum=0.0, help="AAM-softmax angular margin / triplet margin"),
        "scale": Param(float, 30.0, positive=True, help="AAM-softmax scale"),
    }
    default_options: ClassVar[Mapping[str, Any]] = {
        "train_split": "train",  # <root>/<train_split>/<speaker>/<utterance>.wav|flac
        "dev_trials": "trials/dev.txt",  # 'label path1 path2' lines, paths relative to <root>
        "test_trials": "trials/test.txt",  # the same, for `tuner evaluate`
        "split": "development",  # which trial list validation scores: development, or test (tuner evaluate)
        "crop_seconds": 2.0,  # training crops
        "max_eval_seconds": 10.0,  # scoring uses the first seconds of each utterance
        "per_speaker": 2,  # utterances of a speaker in each training batch
        "wavlm": None,  # WavLM config for random init (None: a small config); ignored with --pretrained
        "head": {"channels": 128, "emb_dim": 256},
        "trust_checkpoint": False,  # allow unpickling a checkpoint torch.load(weights_only=True) refuses
        "num_workers": None,  # loader worker processes (None: tuner.data.loading.default_num_workers)
    }
    runtime_options: ClassVar[frozenset[str]] = frozenset({"num_workers", "trust_checkpoint", "test_trials"})

    def setup(self) -> None:
        if getattr(self, "_root", None) is not None:
            return
        from tuner.data.demo import ensure_verification_corpus
        from tuner.data.verification import read_trials, scan_speakers, validate_audio

        root = self.data_folder(lambda demo: ensure_verification_corpus(demo / "verification"), _DATA_HINT)
        utterances = scan_speakers(root, self.options["train_split"])
        speakers = sorted({u.speaker for u in utterances})
        self._speakers = speakers
        self._train_paths = [u.path for u in utterances]
        self._train_labels = [speakers.index(u.speaker) for u in utterances]
        key = "test_trials" if self.options["split"] == "test" else "dev_trials"
        trials_path = under(root, self.options[key])
        if key == "test_trials" and not trials_path.is_file():
            raise DataError(
                f"{trials_path}: no test trial list. Evaluating a study needs one: add it ('label path1 path2' "
                f"lines, paths relative to {root}, as {self.options['dev_trials']}) or point options['test_trials'] "
                "at it (IndicSUPERB: meta_data/<language>/test_known_data.txt)."
            )
        trials = read_trials(trials_path, root)
        self._eval_paths = sorted({t.enroll for t in trials} | {t.test for t in trials})
        position = {p: i for i, p in enumerate(self._eval_paths)}
        self._trials = np.array([(t.label, position[t.enroll], position[t.test]) for t in trials], dtype=np.int64)
        # compressed utterances (Kathbath's .m4a) decoded once into 16 kHz WAVs, then checked like the rest
        decoded = DecodeCache(self.workdir / "cache" / "decoded", SAMPLE_RATE)
        train_seconds = validate_audio(
            decoded.paths(self._train_paths, "training utterances"), expected_sample_rate=SAMPLE_RATE
        )
        eval_seconds = validate_audio(
            decoded.paths(self._eval_paths, "trial utterances"), expected_sample_rate=SAMPLE_RATE
        )
        self.data_summary = {
            "train": {
                "speakers": len(speakers),
                "utterances": len(self._train_paths),
                "hours": round(train_seconds / 3600, 4),
            },
            "dev": {
                "trials": len(trials),
                "targets": int(self._trials[:, 0].sum()),
                "utterances": len(self._eval_paths),
                "hours": round(eval_seconds / 3600, 4),
            },
        }
        logger.info("%s: %s", root, describe(self.data_summary))
        # the cache's 2 GB shared by the training process and its loader workers (each worker holds its own)
        processes = 1 + resolve_num_workers(self.options["num_workers"])
        self._waveforms = WaveformCache(max_bytes=WaveformCache.DEFAULT_BYTES // processes, decoded=decoded)
        self._pretrained_state: dict[str, torch.Tensor] | None = None
        if self.pretrained is not None:
            from tuner.models.wavlm import load_wavlm_checkpoint

            self._wavlm_config, self._pretrained_state = load_wavlm_checkpoint(
                self.pretrained, self.options["trust_checkpoint"]
            )
        else:
            from tuner.models.wavlm import SMALL_WAVLM

            self._wavlm_config = dict(self.options["wavlm"] or SMALL_WAVLM)
        self._root = root  # last: setup() is done once this is set

    def build(self, config: TrialConfig, seed: int) -> FitInputs:
        self.setup()
        pl.seed_everything(seed, workers=True, verbose=False)
        extra = config.extra
        module = SpeakerEmbedder(
            self._wavlm_config,
            self.options["head"],
            n_speakers=len(self._speakers),
            loss=extra.get("loss", "aam"),
            margin=float(extra.get("margin", 0.2)),
            scale=float(extra.get("scale", 30.0)),
        )
        if self._pretrained_state is not None:
            missing, unexpected = module.upstream.model.load_state_dict(self._pretrained_state, strict=False)
            if missing:
                raise ConfigError(
                    f"{self.pretrained}: the checkpoint lacks {len(missing)} WavLM weights (e.g. {missing[0]})."
                )
            if unexpected:
                logger.warning(
                    "%s: %d unused weights in the checkpoint (e.g. %s)", self.pretrained, len(unexpected), unexpected[0]
                )
        data = VerificationData(
            self._train_paths,
            self._train_labels,
            self._eval_paths,
            self._trials,
            batch_size=config.batch_size,
            crop_seconds=float(self.options["crop_seconds"]),
            max_eval_seconds=float(self.options["max_eval_seconds"]),
            per_speaker=int(self.options["per_speaker"]),
            waveforms=self._waveforms,
            seed=seed,
            num_workers=resolve_num_workers(self.options["num_workers"]),
        )
        wavlm = {k: v for k, v in self._wavlm_config.items() if k.startswith("encoder_") and "drop" not in k}
        architecture = {"class": "WavLM + ECAPA-TDNN", "wavlm": wavlm, "head": dict(self.options["head"])}
        return FitInputs(
            module=module, datamodule=data, info={"speakers": len(self._speakers), "architecture": architecture}
        )

    def num_blocks(self) -> int | None:
        return int(self._wavlm_config.get("encoder_layers", 12))

    def split_options(self, split: str) -> dict[str, Any]:
        return {"split": split}

    def layers(self, module: pl.LightningModule) -> LayerStack:
        assert isinstance(module, SpeakerEmbedder)
        blocks = module.upstream.layers
        return LayerStack(
            head=[module.featurizer, module.head, module.loss],
            blocks=blocks,
            block_names=[f"wavlm.layer{i}" for i in range(len(blocks))],
        )
