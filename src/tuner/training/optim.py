"""Optimizer and learning-rate schedule of a trial, the same for every objective."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from tuner.search_space import TrialConfig

__all__ = ["build_optimizer", "build_scheduler", "WarmupCosine"]

#: (each takes lr and weight_decay, which torch.optim.Optimizer itself does not)
_OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "Adam": torch.optim.Adam,
    "AdamW": torch.optim.AdamW,
    "RAdam": torch.optim.RAdam,
    "NAdam": torch.optim.NAdam,
}


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: TrialConfig) -> torch.optim.Optimizer:
    """The trial's optimizer over the parameters that require gradients."""
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise ValueError("no trainable parameters: every layer is frozen")
    optimizer_class = _OPTIMIZERS[config.optimizer]
    return optimizer_class(trainable, lr=config.lr, weight_decay=config.weight_decay)


class WarmupCosine:
    """Per-epoch learning-rate factor: linear warm-up, then constant or cosine annealing to zero.

    A picklable callable for :class:`torch.optim.lr_scheduler.LambdaLR` (so checkpoints can hold it).
    """

    def __init__(self, max_epochs: int, warmup_epochs: int = 0, cosine: bool = True) -> None:
        self.max_epochs = max(1, max_epochs)
        self.warmup_epochs = max(0, min(warmup_epochs, self.max_epochs - 1))
        self.cosine = cosine

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        if not self.cosine:
            return 1.0
        span = self.max_epochs - self.warmup_epochs
        progress = min(1.0, (epoch - self.warmup_epochs) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrialConfig, max_epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The trial's per-epoch schedule (None for a constant rate without warm-up)."""
    cosine = config.schedule == "cosine"
    if not cosine and config.warmup_epochs == 0:
        return None
    factor = WarmupCosine(max_epochs, config.warmup_epochs, cosine=cosine)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
