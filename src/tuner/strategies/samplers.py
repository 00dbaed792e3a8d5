"""Samplers of tuner's own, usable from any study file (``sampler=tuner.strategies.RungTPESampler(seed=0)``).

:class:`RungTPESampler` is Optuna's TPE with one change in what it learns from: trials are compared at the
same epoch. Optuna's TPE ranks every completed trial above every pruned one, so in a study that prunes
most trials after two epochs it learns from the few that ran to the end, and a configuration pruned at a
promising value counts as bad. Here, as in BOHB (Falkner et al., 2018: a model at the largest budget with
enough observations), the sampler looks at the deepest epoch that enough trials reached, and ranks every
trial that got that far by the best value it had reported up to then, complete or pruned alike; trials
stopped before it rank below them, as Optuna ranks pruned trials.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.samplers import TPESampler
from optuna.trial import TrialState

from tuner.direction import best_value
from tuner.store.optuna_internals import study_with_trials

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial

__all__ = ["RungTPESampler"]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class RungTPESampler(TPESampler):
    """TPE ranking trials by their value at the deepest epoch (step) that at least ``min_trials_at_rung``
    finished trials reached, whether they completed or were pruned after it.

    Every other argument is :class:`optuna.samplers.TPESampler`'s. ``min_trials_at_rung`` defaults to
    ``n_startup_trials``: the model is fitted on the deepest step with at least that many observations.
    Intermediate values are what trials report (``trial.report``; a tuner study's ``prune_on`` value); the
    best one up to the rung stands for the trial, as a tuner trial's value is its best epoch's.
    """

    def __init__(self, *args: Any, min_trials_at_rung: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init = (args, {**kwargs, "min_trials_at_rung": min_trials_at_rung})
        self._min_at_rung = min_trials_at_rung if min_trials_at_rung is not None else self._n_startup_trials

    def reseeded(self, seed: int) -> RungTPESampler:
        """The same sampler drawing from ``seed`` (a benchmark's seeds; Optuna's ``reseed_rng`` is random)."""
        args, kwargs = self._init
        return type(self)(*args, **{**kwargs, "seed": seed})

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return super().sample_relative(self._at_rung(study), trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return super().sample_independent(self._at_rung(study), trial, param_name, param_distribution)

    def rung(self, trials: Sequence[FrozenTrial]) -> int | None:
        """The step trials are compared at: the deepest one at least ``min_trials_at_rung`` of them reported."""
        depths = sorted((max(t.intermediate_values) for t in trials if t.intermediate_values), reverse=True)
        if len(depths) < max(1, self._min_at_rung):
            return None
        return depths[max(1, self._min_at_rung) - 1]

    def _at_rung(self, study: Study) -> Study:
        trials = study.get_trials(deepcopy=False, states=_FINISHED)
        rung = self.rung(trials)
        if rung is None:
            return study
        direction = "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"
        ranked = []
        for trial in trials:
            reached = {step: v for step, v in trial.intermediate_values.items() if step <= rung and not math.isnan(v)}
            if not trial.intermediate_values or max(trial.intermediate_values) < rung or not reached:
                ranked.append(trial if trial.state == TrialState.PRUNED else _as_pruned(trial))
                continue
            seen = copy.copy(trial)
            seen.state = TrialState.COMPLETE
            seen.value = best_value(reached.values(), direction)
            ranked.append(seen)
        return study_with_trials(study, ranked)


def _as_pruned(trial: FrozenTrial) -> FrozenTrial:
    """A completed trial that reported nothing as deep as the rung ranks with the trials stopped before it."""
    seen = copy.copy(trial)
    seen.state = TrialState.PRUNED
    seen.value = None
    return seen
