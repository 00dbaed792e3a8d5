"""A synthetic objective: a small MLP learning a fixed, seeded regression problem (metric: validation MSE).

It is a real trial (Lightning fit, per-epoch reports, the common search space, unfrozen layers) that takes
seconds and needs no corpus, no checkpoint and no GPU: for checking a multi-worker or multi-machine setup
(``studies/smoke_test.py``) and for the workers benchmark. ``sleep_per_epoch`` adds that many seconds of
``time.sleep`` to every training epoch, standing in for GPU work that does not compete for the CPU.

The problem is the same in every process and on every machine for a given ``data_seed``: inputs drawn
from N(0, 1), targets from a random one-hidden-layer tanh "teacher" plus ``noise``, scaled to unit
variance (predicting the mean scores an MSE of about 1; the noise floor is about ``noise**2``).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

from tuner.errors import ConfigError
from tuner.objectives.base import FitInputs, TrainedObjective
from tuner.search_space import TrialConfig
from tuner.training.freeze import LayerStack
from tuner.training.items import ItemScores

__all__ = ["RegressionMLP", "RegressionModule", "SyntheticRegression", "make_problem"]

logger = logging.getLogger(__name__)


def make_problem(
    n_train: int, n_val: int, n_features: int, noise: float, seed: int, n_test: int = 0
) -> dict[str, torch.Tensor]:
    """``{x_train, y_train, x_val, y_val, x_test, y_test}`` of the seeded regression problem (float32, y of
    shape (n, 1)); the test samples are drawn after the others, so they leave train and val unchanged."""
    rng = np.random.default_rng(seed)
    teacher_hidden = 2 * n_features
    w1 = rng.normal(size=(n_features, teacher_hidden)) / np.sqrt(n_features)
    w2 = rng.normal(size=(teacher_hidden, 1)) / np.sqrt(teacher_hidden)
    x = rng.normal(size=(n_train + n_val, n_features))
    signal = np.tanh(x @ w1) @ w2
    center, scale = signal.mean(), signal.std()

    def targets(signal: np.ndarray) -> np.ndarray:  # the teacher's signal at unit variance, then the noise
        y = (signal - center) / scale
        return (y + noise * rng.normal(size=y.shape)) / np.sqrt(1 + noise**2)

    y = targets(signal)
    tensors = {"x": torch.as_tensor(x, dtype=torch.float32), "y": torch.as_tensor(y, dtype=torch.float32)}
    x_test = rng.normal(size=(n_test, n_features))
    y_test = targets(np.tanh(x_test @ w1) @ w2)
    return {
        "x_train": tensors["x"][:n_train],
        "y_train": tensors["y"][:n_train],
        "x_val": tensors["x"][n_train:],
        "y_val": tensors["y"][n_train:],
        "x_test": torch.as_tensor(x_test, dtype=torch.float32),
        "y_test": torch.as_tensor(y_test, dtype=torch.float32),
    }


class RegressionMLP(nn.Module):
    """``blocks`` (Linear + ReLU each, input to output) and a linear ``head`` to one output."""

    def __init__(self, n_features: int, hidden: Sequence[int]) -> None:
        super().__init__()
        sizes = [n_features, *hidden]
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in itertools.pairwise(sizes))
        self.head = nn.Linear(sizes[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class RegressionModule(pl.LightningModule):
    """MSE regression; logs ``loss/train``, ``loss/val`` and ``mse`` (the validation MSE, = ``loss/val``).

    Each training epoch starts with ``sleep_per_epoch`` seconds of sleep (inside the epoch's measured time).
    """

    def __init__(self, model: RegressionMLP, sleep_per_epoch: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.sleep_per_epoch = sleep_per_epoch
        self._errors: list[torch.Tensor] = []
        self.item_scores: ItemScores | None = None  # the last validation's squared error per sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @override
    def on_train_epoch_start(self) -> None:
        if self.sleep_per_epoch > 0:
            time.sleep(self.sleep_per_epoch)

    @override
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("loss/train", loss, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    @override
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        errors = (self(x) - y).pow(2)
        loss = errors.mean()
        self.log_dict({"loss/val": loss, "mse": loss}, on_step=False, on_epoch=True, batch_size=len(x))
        self._errors.append(errors.detach().reshape(len(x), -1).mean(dim=1).cpu())

    @override
    def on_validation_epoch_start(self) -> None:
        self._errors = []

    @override
    def on_validation_epoch_end(self) -> None:
        if self._errors:
            values = torch.cat(self._errors).double().numpy()
            self.item_scores = ItemScores(ids=tuple(map(str, range(len(values)))), values=values)


class SyntheticRegression(TrainedObjective):
    """Train a small MLP on a seeded synthetic regression problem; minimise validation MSE (seconds a trial)."""

    name = "synthetic"
    metric = "mse"
    direction = "minimize"
    components = ("loss/train", "loss/val")
    default_options: ClassVar[Mapping[str, Any]] = {
        "n_train": 1024,
        "n_val": 256,
        "n_features": 16,
        "hidden": [64, 64, 64],  # hidden layer sizes: the freezable blocks, input to output
        "noise": 0.1,  # target noise (relative to the teacher's signal)
        "data_seed": 0,  # the problem; trials' seeds only change the initialisation and batch order
        "sleep_per_epoch": 0.0,  # seconds of time.sleep per training epoch (stand-in for GPU work)
        "split": "development",  # what validation scores: development, or test (tuner evaluate; n_val samples)
    }
    runtime_options: ClassVar[frozenset[str]] = frozenset({"sleep_per_epoch"})

    def setup(self) -> None:
        if getattr(self, "_problem", None) is not None:
            return
        if self.data is not None and str(self.data) not in ("demo", "synthetic"):
            raise ConfigError(
                f"the synthetic objective generates its data; got data={str(self.data)!r}. Leave `data` unset "
                "(or 'demo') and size the problem with options n_train, n_val, n_features, noise, data_seed."
            )
        if self.pretrained is not None:
            raise ConfigError(
                "the synthetic objective trains from random initialisation; "
                f"remove pretrained={str(self.pretrained)!r}."
            )
        options = self.options
        for key in ("n_train", "n_val", "n_features"):
            _check(
                isinstance(options[key], int) and not isinstance(options[key], bool) and options[key] > 0,
                key,
                options[key],
                "a positive integer",
            )
        _check(
            isinstance(options["data_seed"], int) and not isinstance(options["data_seed"], bool),
            "data_seed",
            options["data_seed"],
            "an integer",
        )
        hidden = options["hidden"]
        _check(
            isinstance(hidden, Sequence)
            and not isinstance(hidden, str)
            and len(hidden) > 0
            and all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden),
            "hidden",
            hidden,
            "a non-empty list of positive integers (hidden layer sizes)",
        )
        for key in ("noise", "sleep_per_epoch"):
            value = options[key]
            _check(
                isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
                key,
                value,
                "a number >= 0",
            )
        self._problem = make_problem(
            options["n_train"], options["n_val"], options["n_features"], float(options["noise"]), options["data_seed"],
            n_test=options["n_val"],
        )  # fmt: skip
        if options["split"] == "test":
            self._problem["x_val"], self._problem["y_val"] = self._problem["x_test"], self._problem["y_test"]
        # the problem is generated from the options (recorded with the study): `data` stays unset
        self.data_summary = (
            f"synthetic regression: {options['n_train']} train + {options['n_val']} val x {options['n_features']} "
            f"features, noise {options['noise']}, data_seed {options['data_seed']}"
        )
        logger.info("%s", self.data_summary)

    def num_blocks(self) -> int | None:
        return len(self.options["hidden"])

    def split_options(self, split: str) -> dict[str, Any]:
        return {"split": split}

    def build(self, config: TrialConfig, seed: int) -> FitInputs:
        self.setup()
        pl.seed_everything(seed, workers=True, verbose=False)
        problem = self._problem
        model = RegressionMLP(int(self.options["n_features"]), [int(h) for h in self.options["hidden"]])
        train = DataLoader(
            TensorDataset(problem["x_train"], problem["y_train"]),
            batch_size=config.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        val = DataLoader(TensorDataset(problem["x_val"], problem["y_val"]), batch_size=max(config.batch_size, 256))
        sleep = float(self.options["sleep_per_epoch"])
        return FitInputs(
            module=RegressionModule(model, sleep_per_epoch=sleep),
            train_dataloaders=train,
            val_dataloaders=val,
            info={"sleep_per_epoch": sleep},
        )

    def layers(self, module: pl.LightningModule) -> LayerStack:
        assert isinstance(module, RegressionModule)  # what build() returns
        model = module.model
        return LayerStack(
            head=[model.head], blocks=list(model.blocks), block_names=[f"hidden.{i}" for i in range(len(model.blocks))]
        )


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"synthetic objective: option '{key}' must be {expected}, got {value!r}.")
