"""Replaying a table of recorded learning curves: any Optuna sampler and pruner, run for many seeds in minutes.

A recorded-curve table holds, for every configuration of a discrete grid, the per-epoch values of a real
fine-tuning run trained in full (the way tabular HPO benchmarks such as LCBench or NAS-Bench-201 record
them). :class:`ReplayObjective` is an Optuna objective that looks the trial's configuration up in the
table instead of training, reports each recorded epoch to the trial (so samplers and pruners run
unchanged: a pruned trial stops where the pruner says), and counts the epochs and seconds a study spent,
when it first reached a goal and the best value it had at each point. :func:`replay` runs one strategy for
one seed under an epoch budget.

The table is JSON (``benchmarks/curve_table.py`` writes one)::

    {"keys": ["optimizer", "lr", ...], "columns": ["DER", ..., "seconds"], "metric": "DER",
     "direction": "minimize", "rows": [{"params": {"optimizer": "Adam", ...}, "name": ..., "epochs":
     [[0.209, ..., 17.3], ...]}, ...]}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.direction import Direction, best_value, is_better, reaches
from tuner.errors import ConfigError

if TYPE_CHECKING:
    import optuna

    from tuner.search_space import SearchSpace

__all__ = ["CurveTable", "ReplayObjective", "SeedRun", "replay"]


@dataclass(frozen=True)
class CurveTable:
    """Recorded curves by configuration: ``curves[key]`` is one ``{column: value}`` record per epoch."""

    keys: tuple[str, ...]
    metric: str
    direction: str
    curves: Mapping[tuple[Any, ...], tuple[Mapping[str, float], ...]]
    names: Mapping[tuple[Any, ...], str | None] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> CurveTable:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> CurveTable:
        keys = tuple(table["keys"])
        columns = tuple(table["columns"])
        curves: dict[tuple[Any, ...], tuple[Mapping[str, float], ...]] = {}
        names: dict[tuple[Any, ...], str | None] = {}
        for row in table["rows"]:
            key = tuple(row["params"][k] for k in keys)
            curves[key] = tuple(dict(zip(columns, epoch, strict=True)) for epoch in row["epochs"])
            names[key] = row.get("name")
        return cls(keys, table["metric"], table.get("direction", "minimize"), curves, names)

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def key(self, config: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(config[k] for k in self.keys)

    def curve(self, config: Mapping[str, Any]) -> tuple[Mapping[str, float], ...]:
        """The recorded epochs of ``config``; a configuration the table lacks is an error naming it."""
        key = self.key(config)
        if key not in self.curves:
            given = ", ".join(f"{k}={v!r}" for k, v in zip(self.keys, key, strict=True))
            raise ConfigError(
                f"the curve table has no configuration {given} ({len(self.curves)} recorded): replay only searches "
                "the table's grid (its search space's values), or build the table for this configuration."
            )
        return self.curves[key]

    def better(self, a: float, b: float) -> bool:
        return is_better(a, b, self.direction)

    def best_value(self, keys: Sequence[tuple[Any, ...]] | None = None) -> float:
        """The best per-epoch metric of the given configurations (default: every one)."""
        values = [e[self.metric] for k in (keys or list(self.curves)) for e in self.curves[k]]
        return best_value(values, self.direction)

    def reaches(self, value: float, goal: float) -> bool:
        return reaches(value, goal, self.direction)

    def oracle_epochs(self, goal: float) -> int | None:
        """The cheapest path in the table: fewest epochs any single configuration needs to reach ``goal``."""
        best = None
        for curve in self.curves.values():
            for epoch, record in enumerate(curve, start=1):
                if self.reaches(record[self.metric], goal):
                    best = epoch if best is None else min(best, epoch)
                    break
        return best


class ReplayObjective:
    """An Optuna objective that replays ``table`` instead of training.

    Each trial's configuration comes from ``space`` (tuner's :class:`~tuner.search_space.SearchSpace`, as
    in a real study); its recorded epochs are reported to the trial one by one (``prune_on``, default the
    metric), and the trial stops where the pruner says. Its value is its best epoch's metric, as a tuner
    trial's. Every epoch replayed counts in :attr:`spent_epochs` and :attr:`spent_seconds`; once
    ``budget_epochs`` are spent the study is stopped (the trial running then ends there). The first epoch
    whose metric reaches ``goal`` is remembered in :attr:`reached_at` (``(epochs, seconds)`` spent by then).
    """

    def __init__(
        self,
        table: CurveTable,
        space: SearchSpace,
        *,
        prune_on: str | None = None,
        budget_epochs: int | None = None,
        goal: float | None = None,
    ) -> None:
        self.table = table
        self.space = space
        self.prune_on = prune_on or table.metric
        self.budget_epochs = budget_epochs
        self.goal = goal
        self.spent_epochs = 0
        self.spent_seconds = 0.0
        self.reached_at: tuple[int, float] | None = None
        #: best metric so far after each epoch spent (the anytime curve)
        self.anytime: list[float] = []
        self.configurations: list[dict[str, Any]] = []

    @property
    def exhausted(self) -> bool:
        return self.budget_epochs is not None and self.spent_epochs >= self.budget_epochs

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        config = self.space.suggest(trial).as_dict()
        curve = self.table.curve(config)
        self.configurations.append({k: config[k] for k in self.table.keys})
        best = math.nan
        for epoch, record in enumerate(curve):
            if self.exhausted:
                trial.study.stop()
                raise optuna.TrialPruned("the study's epoch budget is spent")
            self.spent_epochs += 1
            self.spent_seconds += float(record.get("seconds", 0.0))
            value = float(record[self.table.metric])
            if math.isnan(best) or self.table.better(value, best):
                best = value
            previous = self.anytime[-1] if self.anytime else math.nan
            self.anytime.append(best if math.isnan(previous) or self.table.better(best, previous) else previous)
            if self.goal is not None and self.reached_at is None and self.table.reaches(value, self.goal):
                self.reached_at = (self.spent_epochs, self.spent_seconds)
            trial.report(float(record[self.prune_on]), step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")
        if self.exhausted:
            trial.study.stop()
        return best


@dataclass
class SeedRun:
    """One strategy, one seed: what it spent to reach the goal and the best it found within the budget."""

    seed: int
    reached: bool
    epochs_to_goal: int  # epochs spent when the goal was first reached (else every epoch spent)
    seconds_to_goal: float
    best_at_budget: float
    anytime: list[float]
    trials: int


def replay(
    table: CurveTable,
    space: SearchSpace,
    *,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    budget_epochs: int,
    goal: float,
    seed: int,
    prune_on: str | None = None,
    enqueue: Sequence[Mapping[str, Any]] = (),
    max_trials: int = 10_000,
    study_factory: Callable[..., optuna.Study] | None = None,
) -> SeedRun:
    """Run one study of ``sampler`` and ``pruner`` on the table until ``budget_epochs`` are spent (the
    configurations in ``enqueue`` first, as a study's warm start)."""
    import optuna

    direction: Direction = "maximize" if table.maximize else "minimize"
    study = (study_factory or optuna.create_study)(direction=direction, sampler=sampler, pruner=pruner)
    for params in enqueue:
        study.enqueue_trial(dict(params))
    objective = ReplayObjective(table, space, prune_on=prune_on, budget_epochs=budget_epochs, goal=goal)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study.optimize(objective, n_trials=max_trials, catch=())
    reached = objective.reached_at is not None
    if objective.reached_at is not None:
        epochs, seconds = objective.reached_at
    else:
        epochs, seconds = objective.spent_epochs, objective.spent_seconds
    best = objective.anytime[min(budget_epochs, len(objective.anytime)) - 1] if objective.anytime else math.nan
    ran = len(
        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    )
    return SeedRun(seed, reached, epochs, seconds, best, objective.anytime[:budget_epochs], ran)
