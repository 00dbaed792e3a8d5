"""The callback that fails a trial as soon as its training loss stops being a finite number."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

__all__ = ["DivergenceGuard", "TrialDiverged"]


class TrialDiverged(FloatingPointError):
    """The training loss became NaN or infinite: the trial's configuration diverges."""


class DivergenceGuard(pl.Callback):
    """Raise :class:`TrialDiverged` after the first training batch whose loss is NaN or infinite.

    Continuing would only spend the epoch budget on NaN weights. The runner records the message as the
    trial's ``fail_reason`` and goes on with the next trial.
    """

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        value = float(loss.detach().float().mean())
        if math.isfinite(value):
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        raise TrialDiverged(
            f"the training loss is {value} at epoch {trainer.current_epoch + 1}, batch {batch_idx + 1} "
            f"(learning rate {lr:.3g}): this configuration diverges. Nothing is wrong with the data; a lower "
            "learning rate, a warm-up (warmup_epochs) or gradient clipping (trainer: gradient_clip_val) avoids it."
        )
