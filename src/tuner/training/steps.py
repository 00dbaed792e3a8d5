"""Evaluating a configuration item by item: the stepwise counterpart of :func:`tuner.training.fit.fit`, for
objectives that tune something not trained (a diarization pipeline's parameters), pruned between items."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuner.objectives.base import StepwiseObjective
from tuner.search_space import TrialConfig

if TYPE_CHECKING:
    import optuna

__all__ = ["StepsResult", "evaluate_steps"]

logger = logging.getLogger(__name__)


@dataclass
class StepsResult:
    """The outcome of a stepwise trial: each evaluated item's values, the combined metrics, where it was pruned."""

    per_step: dict[int, dict[str, float]]
    metrics: dict[str, float]
    pruned_at: int | None = None


def evaluate_steps(
    objective: StepwiseObjective,
    config: TrialConfig,
    *,
    trial: optuna.Trial | None = None,
    prune_on: str | None = None,
    split: str = "development",
    seed: int = 0,
) -> StepsResult:
    """Evaluate ``config`` item by item (in an order shuffled by ``seed``), reporting each item's ``prune_on``
    value (default: the metric) to ``trial`` at its step and stopping where the pruner says so."""
    import random

    steps = objective.steps(split)
    order = list(range(len(steps)))
    random.Random(seed).shuffle(order)  # a pruner comparing items should not see them always in one order
    reported = prune_on or objective.metric
    per_step: dict[int, dict[str, float]] = {}
    for done, index in enumerate(order, start=1):
        started = time.perf_counter()
        values = objective.evaluate_step(config, index, split)
        values["seconds"] = round(time.perf_counter() - started, 3)
        per_step[index] = values
        logger.debug(  # the store and the report keep each item's values; the log gets one line per trial
            "%s item %d/%d (%s): %s=%.4f (%.1fs)", f"trial {trial.number}" if trial is not None else "run", done,
            len(order), steps[index], objective.metric, values[objective.metric], values["seconds"],
        )  # fmt: skip
        if trial is None:
            continue
        trial.report(values[reported], step=index)
        if done < len(order) and trial.should_prune():
            return StepsResult(per_step, objective.combine(list(per_step.values())), pruned_at=index)
    return StepsResult(per_step, objective.combine(list(per_step.values())))
