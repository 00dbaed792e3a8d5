"""The callback that stops a trial another worker took over: marked failed (no heartbeat of it reached the store
for the grace period) and retried elsewhere while this worker still trains it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
from typing_extensions import override

__all__ = ["TrialTakenOver", "TakeoverGuard"]


class TrialTakenOver(Exception):
    """The running trial was marked failed by another worker, which queued its retry: this worker stops it
    without recording anything more (the retry resumes from the trial's last checkpoint)."""


class TakeoverGuard(pl.Callback):
    """After every batch, stop the trial if ``taken_over()`` (a look at what its heartbeat last found, no store
    call) says another worker took it over."""

    def __init__(self, taken_over: Callable[[], bool], label: str) -> None:
        self.taken_over = taken_over
        self.label = label

    def _check(self) -> None:
        if self.taken_over():
            raise TrialTakenOver(f"{self.label} was marked failed by another worker")

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        self._check()

    @override
    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        self._check()
