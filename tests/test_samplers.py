"""tuner's own samplers: RungTPESampler learns from pruned trials at the epoch they reached."""

from __future__ import annotations

import collections

import optuna
import pytest

from tuner.strategies.samplers import RungTPESampler

Distribution = optuna.distributions.CategoricalDistribution(["good_early", "complete_late", "other"])


def _study(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Completed trials of 'complete_late' (0.30 at epoch 2, 0.25 at the end) and 'other', and trials of
    'good_early' pruned after epoch 2 at 0.10: better than anything else at the epoch all of them reached."""
    study = optuna.create_study(sampler=sampler)
    for value, curve in (("complete_late", [0.4, 0.3, 0.28, 0.25]), ("other", [0.5, 0.45, 0.4, 0.35])):
        for _ in range(3):
            study.add_trial(optuna.trial.create_trial(
                params={"x": value}, distributions={"x": Distribution}, value=min(curve),
                intermediate_values=dict(enumerate(curve)),
            ))  # fmt: skip
    for _ in range(4):
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED, params={"x": "good_early"}, distributions={"x": Distribution},
            intermediate_values={0: 0.2, 1: 0.1},
        ))  # fmt: skip
    return study


def _draws(sampler: optuna.samplers.BaseSampler, n: int = 60) -> collections.Counter:
    study = _study(sampler)
    counts: collections.Counter = collections.Counter()
    for _ in range(n):
        trial = study.ask()
        counts[trial.suggest_categorical("x", Distribution.choices)] += 1
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # failed trials teach neither sampler anything
    return counts


def test_trials_are_compared_at_the_deepest_step_enough_of_them_reached():
    sampler = RungTPESampler(n_startup_trials=4, seed=0)
    trials = _study(optuna.samplers.RandomSampler()).get_trials()
    assert sampler.rung(trials) == 3  # six completed trials reached step 3
    assert RungTPESampler(min_trials_at_rung=8).rung(trials) == 1  # ten reached step 1
    assert RungTPESampler(min_trials_at_rung=20).rung(trials) is None  # not enough trials yet: plain TPE


def test_a_configuration_pruned_at_a_promising_value_is_sampled_again():
    """Plain TPE ranks every completed trial above the pruned ones and favours 'complete_late'; compared at
    step 1, which all 10 trials reached, 'good_early' (0.10 there) is the one to try again."""
    plain = _draws(optuna.samplers.TPESampler(n_startup_trials=4, seed=0))
    at_rung = _draws(RungTPESampler(n_startup_trials=4, min_trials_at_rung=8, seed=0))
    assert plain.most_common(1)[0][0] == "complete_late"
    assert at_rung.most_common(1)[0][0] == "good_early" and at_rung["good_early"] > 2 * at_rung["complete_late"]


def test_reseeded_draws_repeat_and_seeds_differ():
    sampler = RungTPESampler(n_startup_trials=4, min_trials_at_rung=8)
    first, again = _draws(sampler.reseeded(1), 20), _draws(sampler.reseeded(1), 20)
    assert first == again and sum(first.values()) == 20
    assert isinstance(sampler.reseeded(2), RungTPESampler)


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_without_intermediate_values_it_is_plain_tpe(direction):
    study = optuna.create_study(direction=direction, sampler=RungTPESampler(n_startup_trials=3, seed=0))
    study.optimize(lambda trial: trial.suggest_float("x", -1, 1) ** 2, n_trials=12)
    assert len(study.trials) == 12 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
