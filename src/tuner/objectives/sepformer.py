"""Source separation: SpeechBrain's SepFormer on LibriMix-format mixtures (metric: dev SI-SNRi, dB).

What is learned (:class:`SeparationModule`: SepFormer trained with permutation-invariant SI-SNR) is
separate from what it is learned on (:class:`MixtureData`: LibriMix or SpeechBrain CSVs). Training uses
fixed-length random segments and gradient clipping (``clip``); validation separates each dev mixture
whole (its first ``max_eval_seconds``) and reports SI-SNRi with SDRi, SI-SNR and SDR beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
from typing_extensions import override

from tuner.data.loading import Draw, DrawRandom, KeyedSampler, loader_settings, resolve_num_workers
from tuner.errors import DataError
from tuner.objectives.base import FitInputs, TrainedObjective, under
from tuner.search_space import Param, TrialConfig
from tuner.text import describe
from tuner.training.freeze import LayerStack
from tuner.training.items import ItemScores

if TYPE_CHECKING:
    from tuner.data.separation import Mixture
    from tuner.models.sepformer import SepFormer

__all__ = ["SepFormerSeparation", "SeparationModule", "MixtureData"]

logger = logging.getLogger(__name__)

_DATA_HINT = (
    "Give the folder the CSVs are relative to (e.g. Libri2Mix/wav8k/min with metadata/mixture_*_mix_both.csv; "
    "see README, 'Bring your corpus')."
)


class _Segments(Dataset):
    """Training mixtures as random fixed-length segments: (mixture (time,), sources (time, n))."""

    def __init__(self, mixtures: Sequence[Any], num_samples: int, seed: int) -> None:
        self.mixtures, self.num_samples = list(mixtures), num_samples
        self.random = DrawRandom(seed)  # the same segments in any process, after any resume

    def __len__(self) -> int:
        return len(self.mixtures)

    def __getitem__(self, draw: Draw) -> tuple[torch.Tensor, torch.Tensor]:
        from tuner.data.separation import load_mixture, random_segment

        mix, sources, _ = load_mixture(self.mixtures[draw.item])
        mix, sources = random_segment(mix, sources, self.num_samples, self.random.generator(draw))
        return torch.from_numpy(np.ascontiguousarray(mix)), torch.from_numpy(np.ascontiguousarray(sources.T))


class _Whole(Dataset):
    """Dev mixtures, whole (up to ``max_samples``), one per batch."""

    def __init__(self, mixtures: Sequence[Any], max_samples: int) -> None:
        self.mixtures, self.max_samples = list(mixtures), max_samples

    def __len__(self) -> int:
        return len(self.mixtures)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from tuner.data.separation import load_mixture

        mix, sources, _ = load_mixture(self.mixtures[index])
        end = self.max_samples
        return torch.from_numpy(np.ascontiguousarray(mix[:end])), torch.from_numpy(
            np.ascontiguousarray(sources[:, :end].T)
        )


class MixtureData(pl.LightningDataModule):
    """Random training segments and whole dev mixtures."""

    def __init__(
        self,
        train: Sequence[Any],
        dev: Sequence[Any],
        *,
        sample_rate: int,
        batch_size: int,
        crop_seconds: float,
        max_eval_seconds: float,
        seed: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.train, self.dev, self.batch_size, self.seed, self.num_workers = train, dev, batch_size, seed, num_workers
        self.crop_samples = int(crop_seconds * sample_rate)
        self.max_eval_samples = int(max_eval_seconds * sample_rate)

    @override
    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)  # the order: a checkpoint holds its state
        dataset = _Segments(self.train, self.crop_samples, self.seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=KeyedSampler(RandomSampler(dataset, generator=generator)),
            drop_last=True,
            generator=generator,
            **loader_settings(self.num_workers),
        )

    @override
    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Whole(self.dev, self.max_eval_samples), batch_size=1, **loader_settings(self.num_workers))


class SeparationModule(pl.LightningModule):
    """SepFormer trained with permutation-invariant SI-SNR; validation logs SI-SNRi, SDRi, SI-SNR, SDR."""

    def __init__(self, model: SepFormer) -> None:
        super().__init__()
        self.model = model
        self._scores: list[dict[str, float]] = []
        self.item_scores: ItemScores | None = None  # the last validation's SI-SNRi per mixture (tuner evaluate)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return self.model(mix)

    @override
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        from tuner.metrics.separation import si_snr_loss

        mix, sources = batch
        loss = si_snr_loss(self(mix), sources)
        self.log("loss/train", loss, on_step=False, on_epoch=True, batch_size=len(mix))
        return loss

    @override
    def on_validation_epoch_start(self) -> None:
        self._scores = []

    @override
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        from tuner.metrics.separation import separation_metrics

        mix, sources = batch
        estimates = self(mix)
        scores = separation_metrics(estimates, sources, mix)
        scores["loss/val"] = -scores["SI-SNR"]
        self._scores.append(scores)

    @override
    def on_validation_epoch_end(self) -> None:
        if self._scores:
            keys = self._scores[0]
            self.log_dict({k: float(np.mean([s[k] for s in self._scores])) for k in keys}, on_epoch=True)
            values = np.array([s["SI-SNRi"] for s in self._scores])  # one mixture a batch: one score each
            self.item_scores = ItemScores(ids=tuple(map(str, range(len(values)))), values=values)


class SepFormerSeparation(TrainedObjective):
    """Fine-tune SpeechBrain's SepFormer on LibriMix-format data; maximise dev SI-SNRi (dB)."""

    name = "sepformer_separation"
    metric = "SI-SNRi"
    direction = "maximize"
    unit = "dB"
    figure = "before_after"
    components = ("SDRi", "SI-SNR", "SDR", "loss/train", "loss/val")
    params: ClassVar[Mapping[str, Param]] = {
        "clip": Param(float, 5.0, positive=True, help="gradient-norm clipping value (the recipe's clip_grad_norm)"),
    }
    default_options: ClassVar[Mapping[str, Any]] = {
        # CSVs relative to the data folder: LibriMix metadata or SpeechBrain's CSVs (both are read)
        "train_csv": "metadata/mixture_train_mix_both.csv",
        "dev_csv": "metadata/mixture_dev_mix_both.csv",
        "test_csv": "metadata/mixture_test_mix_both.csv",  # for `tuner evaluate`
        "split": "development",  # which mixtures validation separates: development, or test (tuner evaluate)
        "crop_seconds": 2.0,  # training segments
        "max_eval_seconds": 8.0,  # validation separates the first seconds of each dev mixture
        "model": None,  # SepFormer size for random init (None: a small config); ignored with --pretrained
        "num_workers": None,  # loader worker processes (None: tuner.data.loading.default_num_workers)
    }
    runtime_options: ClassVar[frozenset[str]] = frozenset({"num_workers", "test_csv"})
    #: the train and dev mixtures, set by :meth:`setup`
    _train: list[Mixture]
    _dev: list[Mixture]

    def setup(self) -> None:
        if getattr(self, "_root", None) is not None:
            return
        from tuner.data.demo import ensure_separation_corpus
        from tuner.data.separation import check_mixtures, read_mixture_csv

        root = self.data_folder(lambda demo: ensure_separation_corpus(demo / "separation"), _DATA_HINT)
        summaries, csvs = {}, {}
        evaluated = "test" if self.options["split"] == "test" else "dev"
        for split in ("train", "dev"):
            csv = csvs[split] = under(root, self.options[f"{evaluated if split == 'dev' else split}_csv"])
            if not csv.is_file() and evaluated == "test" and split == "dev":
                raise DataError(
                    f"{csv}: no test mixture list. Evaluating a study needs one: add it (LibriMix: "
                    "metadata/mixture_test_mix_both.csv) or point options['test_csv'] at it."
                )
            if not csv.is_file():
                raise DataError(
                    f"{csv}: {split} CSV not found. Point the study's options['{split}_csv'] at a LibriMix metadata "
                    "CSV (mixture_ID,mixture_path,source_1_path,...,length) "
                    "or a SpeechBrain CSV (ID,duration,mix_wav,s1_wav,...)."
                )
            mixtures = read_mixture_csv(csv)
            summaries[split] = check_mixtures(mixtures, csv)
            setattr(self, f"_{split}", mixtures)
        train, dev = summaries["train"], summaries["dev"]
        if train["sample_rate"] != dev["sample_rate"]:
            raise DataError(
                f"{csvs['dev']}: its mixtures are {dev['sample_rate']} Hz but those of the train CSV {csvs['train']} "
                f"are {train['sample_rate']} Hz; train and dev must share one rate. Point options['dev_csv'] at the "
                f"{train['sample_rate']} Hz list (LibriMix: the wav{train['sample_rate'] // 1000}k folder), "
                "or resample."
            )
        if train["sources"] != dev["sources"]:
            raise DataError(
                f"{csvs['dev']}: its mixtures have {dev['sources']} sources but those of the train CSV {csvs['train']} "
                f"have {train['sources']}; the model separates a fixed number of sources. Use train and dev lists "
                "of the same LibriMix variant (e.g. both Libri2Mix)."
            )
        self._sample_rate, self._num_spks = train["sample_rate"], train["sources"]
        self.data_summary = summaries
        logger.info("%s: %s", root, describe(summaries))
        self._model_config: dict[str, Any] | None = None
        if self.pretrained is None:
            from tuner.models.sepformer import SMALL_SEPFORMER

            self._model_config = dict(self.options["model"] or SMALL_SEPFORMER)
        else:
            from tuner.models.sepformer import load_speechbrain_sepformer

            self._num_blocks = len(load_speechbrain_sepformer(self.pretrained, self._num_spks).blocks)
        self._root = root  # last: setup() is done once this is set

    def num_blocks(self) -> int | None:
        if self._model_config is not None:
            from tuner.models.sepformer import RECIPE_SEPFORMER

            return int({**RECIPE_SEPFORMER, **self._model_config}["num_blocks"])
        return self._num_blocks

    def split_options(self, split: str) -> dict[str, Any]:
        return {"split": split}

    def build(self, config: TrialConfig, seed: int) -> FitInputs:
        self.setup()
        pl.seed_everything(seed, workers=True, verbose=False)
        if self._model_config is not None:
            from tuner.models.sepformer import build_sepformer

            model = build_sepformer(self._model_config, self._num_spks)
        else:
            from tuner.models.sepformer import load_speechbrain_sepformer

            assert self.pretrained is not None  # setup() made a model config otherwise
            model = load_speechbrain_sepformer(self.pretrained, self._num_spks)
        data = MixtureData(
            self._train,
            self._dev,
            sample_rate=self._sample_rate,
            batch_size=config.batch_size,
            crop_seconds=float(self.options["crop_seconds"]),
            max_eval_seconds=float(self.options["max_eval_seconds"]),
            seed=seed,
            num_workers=resolve_num_workers(self.options["num_workers"]),
        )
        clip = float(config.extra.get("clip", self.params["clip"].default))
        return FitInputs(
            module=SeparationModule(model),
            datamodule=data,
            trainer_options={"gradient_clip_val": clip, "gradient_clip_algorithm": "norm"},
            info={"sample_rate": self._sample_rate, "sources": self._num_spks, "architecture": model.architecture()},
        )

    def layers(self, module: pl.LightningModule) -> LayerStack:
        assert isinstance(module, SeparationModule)  # what build() returns
        model = module.model
        return LayerStack(
            head=model.head, blocks=model.blocks, block_names=[f"dual_path.{i}" for i in range(len(model.blocks))]
        )
