"""The replay harness on a tiny hand-written table of curves, where every answer is known."""

from __future__ import annotations

import math

import optuna
import pytest

from tuner.errors import ConfigError
from tuner.search_space import SearchSpace
from tuner.strategies.replay import CurveTable, replay

TABLE = {
    "keys": ["optimizer", "lr"],
    "columns": ["DER", "loss/val", "seconds"],
    "metric": "DER",
    "direction": "minimize",
    "rows": [
        {"params": {"optimizer": "Adam", "lr": 1e-3}, "name": "A", "epochs": [[0.5, 5, 1], [0.3, 3, 1], [0.2, 2, 1]]},
        {"params": {"optimizer": "Adam", "lr": 1e-4}, "name": "B", "epochs": [[0.6, 6, 2], [0.55, 5, 2], [0.5, 5, 2]]},
        {"params": {"optimizer": "AdamW", "lr": 1e-3}, "name": "C", "epochs": [[0.4, 4, 1], [0.1, 1, 1], [0.05, 0, 1]]},
        {"params": {"optimizer": "AdamW", "lr": 1e-4}, "name": "D", "epochs": [[0.7, 7, 1], [0.7, 7, 1], [0.7, 7, 1]]},
    ],
}
A, B, C = ({"optimizer": "Adam", "lr": 1e-3}, {"optimizer": "Adam", "lr": 1e-4}, {"optimizer": "AdamW", "lr": 1e-3})


@pytest.fixture
def table() -> CurveTable:
    return CurveTable.from_dict(TABLE)


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace.from_dict({"optimizer": {"choices": ["Adam", "AdamW"]}, "lr": {"choices": [1e-3, 1e-4]}})


def _run(table, space, enqueue, budget, goal=0.1, pruner=None, **kwargs):
    pruner = pruner or optuna.pruners.NopPruner()
    return replay(table, space, sampler=optuna.samplers.RandomSampler(seed=0), pruner=pruner,
                  budget_epochs=budget, goal=goal, seed=0, enqueue=enqueue, **kwargs)  # fmt: skip


def test_epochs_and_seconds_are_counted_until_an_epoch_reaches_the_goal(table, space):
    run = _run(table, space, [B, A, C], budget=9)
    assert run.reached and run.epochs_to_goal == 3 + 3 + 2  # C's second epoch is the first at 0.1
    assert run.seconds_to_goal == 6 + 3 + 2
    assert run.anytime == [0.6, 0.55, 0.5, 0.5, 0.3, 0.2, 0.2, 0.1, 0.05]
    assert run.best_at_budget == 0.05 and run.trials == 3


def test_the_budget_stops_the_study_in_the_middle_of_a_trial(table, space):
    run = _run(table, space, [A, B, C], budget=4)
    assert not run.reached and run.epochs_to_goal == 4  # what it spent: A's 3 epochs and one of B's
    assert run.best_at_budget == 0.2 and run.anytime == [0.5, 0.3, 0.2, 0.2] and run.trials == 2


def test_a_pruned_trial_costs_the_epochs_it_ran(table, space):
    run = _run(table, space, [B, C], budget=9, pruner=optuna.pruners.ThresholdPruner(upper=0.45))
    assert run.epochs_to_goal == 1 + 2  # B is pruned after its first epoch (0.6 > 0.45), C reaches 0.1 at its 2nd


def test_prune_on_reports_another_recorded_value(table, space):
    """The pruner reads loss/val (5, 3, 2 for A) while the goal and the values are DER."""
    run = _run(table, space, [A, C], budget=6, pruner=optuna.pruners.ThresholdPruner(upper=4.5), prune_on="loss/val")
    assert run.epochs_to_goal == 1 + 2  # A pruned at loss 5 > 4.5; C's loss 4 then 1 goes on


def test_a_configuration_the_table_lacks_is_refused(table):
    space = SearchSpace.from_dict({"optimizer": "Adam", "lr": {"choices": [1e-2]}})
    with pytest.raises(ConfigError, match=r"no configuration optimizer='Adam', lr=0.01 \(4 recorded\)"):
        _run(table, space, [], budget=3)


def test_the_oracle_is_the_cheapest_path_in_the_table(table):
    assert table.oracle_epochs(0.1) == 2 and table.oracle_epochs(0.5) == 1 and table.oracle_epochs(0.01) is None
    assert table.best_value() == 0.05 and table.best_value([table.key(A), table.key(B)]) == 0.2
    assert math.isclose(table.best_value([table.key(B)]), 0.5)
