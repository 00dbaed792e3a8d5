"""Live progress of a study on a terminal: trials done, and the batches of the running epoch.

On a terminal this is a rich progress display; elsewhere (CI logs, files) it is silent and the per-epoch
log lines of :class:`~tuner.training.reporting.TrialReporter` tell the progress instead.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from typing_extensions import override

__all__ = ["StudyProgress", "BatchProgress"]


class StudyProgress:
    """Trials done out of the budget, plus the running trial's epoch and batch."""

    def __init__(self, total_trials: int | None, console: Console | None = None) -> None:
        from tuner._console import stderr_console

        self.console = console or stderr_console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            disable=not self.console.is_terminal,
            transient=False,
        )
        self.trials = self.progress.add_task("trials", total=total_trials, status="")
        self.epoch = self.progress.add_task("epoch", total=None, status="", visible=False)

    def __enter__(self) -> StudyProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def trial_finished(self, status: str) -> None:
        self.progress.update(self.trials, advance=1, status=status)
        self.progress.update(self.epoch, visible=False)


class BatchProgress(pl.Callback):
    """Moves the 'epoch' bar of a :class:`StudyProgress` along the training batches."""

    def __init__(self, display: StudyProgress, label: str) -> None:
        self.display = display
        self.label = label

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = trainer.num_training_batches
        self.display.progress.reset(
            self.display.epoch,
            total=None if total == float("inf") else int(total),
            description=f"{self.label} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}",
            visible=True,
            status="",
        )

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.display.progress.advance(self.display.epoch)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.display.progress.update(self.display.epoch, status="validating")
