"""The callback that turns each finished epoch into a trial record and an Optuna report."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from typing_extensions import override

from tuner.direction import is_better
from tuner.store import records

if TYPE_CHECKING:
    import optuna

    from tuner.objectives.base import TrainedObjective

__all__ = ["TrialReporter"]

logger = logging.getLogger(__name__)


class TrialReporter(pl.Callback):
    """After every training epoch (validation included): record its metrics, report, ask the pruner.

    Each epoch's ``{metric, components, lr, seconds}`` is written to the trial as user attribute
    ``epoch/NNN`` so that tables can be rebuilt from the store alone; the metric (or ``prune_on``, another
    value of the record) is reported to Optuna at step = epoch. A module may also expose
    ``epoch_details`` (small JSON-able data of its last validation, e.g. a DET curve): the best epoch's
    is kept as ``details/best``. When the pruner says so, training stops at the end of this epoch and
    :attr:`pruned_at` is set (the runner then raises ``optuna.TrialPruned``).
    """

    def __init__(
        self,
        objective: TrainedObjective,
        trial: optuna.Trial | None = None,
        label: str = "",
        prune_on: str | None = None,
    ) -> None:
        self.objective = objective
        self.trial = trial
        self.prune_on = prune_on or objective.metric
        self.label = label or (f"trial {trial.number}" if trial is not None else "run")
        self.history: dict[int, dict[str, float]] = {}
        self.best_epoch: int | None = None
        self.pruned_at: int | None = None
        self._epoch_start = 0.0
        self._epoch_lr: float | None = None

    @property
    def best(self) -> dict[str, float] | None:
        return None if self.best_epoch is None else self.history[self.best_epoch]

    @override
    def state_dict(self) -> dict[str, Any]:
        """Saved in each checkpoint, so a resumed trial's best epoch takes its earlier epochs into account."""
        return {
            "history": {str(epoch): record for epoch, record in self.history.items()},
            "best_epoch": self.best_epoch,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {int(epoch): dict(record) for epoch, record in state_dict.get("history", {}).items()}
        self.best_epoch = state_dict.get("best_epoch")

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        # Lightning steps epoch schedulers before on_train_epoch_end: read this epoch's rate now
        self._epoch_lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        record = self.objective.epoch_metrics(_floats(trainer.callback_metrics))
        metric = self.objective.metric
        reported = self.prune_on if self.trial is not None else metric
        for key in dict.fromkeys((metric, reported)):  # in order, once
            if key not in record:
                raise RuntimeError(
                    f"{type(self.objective).__name__} logged no '{key}' in epoch {epoch} "
                    f"(logged: {sorted(trainer.callback_metrics)}); is there a validation set?"
                )
        if self._epoch_lr is not None:
            record["lr"] = self._epoch_lr
        record["seconds"] = round(time.perf_counter() - self._epoch_start, 3)
        self.history[epoch] = record
        value = record[metric]
        improved = self._improves(value)
        if improved:
            self.best_epoch = epoch
        logger.info("%s epoch %d/%d: %s", self.label, epoch + 1, trainer.max_epochs, _format(record, metric))
        if self.trial is None:
            return
        records.write_epoch(self.trial, epoch, record)
        details = getattr(pl_module, "epoch_details", None)
        if improved and details:  # what a figure of the best epoch needs (a DET curve, ...)
            records.write_best_details(self.trial, epoch, details)
        self.trial.report(record[self.prune_on], step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True
            logger.info(
                "%s pruned after epoch %d (%s=%.4f)", self.label, epoch + 1, self.prune_on, record[self.prune_on]
            )

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_epoch is None:
            return True
        best = self.history[self.best_epoch][self.objective.metric]
        return is_better(value, best, self.objective.direction)


def _floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items()}


def _format(record: Mapping[str, float], metric: str) -> str:
    items = [f"{metric}={record[metric]:.4f}"]
    items += [f"{k}={v:.4f}" for k, v in record.items() if k not in (metric, "lr", "seconds")]
    items.append(f"({record['seconds']:.1f}s)")
    return " ".join(items)
