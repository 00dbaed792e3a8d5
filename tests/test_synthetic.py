"""The synthetic objective: a real, seconds-long trial (small MLP, seeded regression) for worker checks."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from conftest import REPO, changed, fit_capturing

from tuner import StudySpec, load_study_file, run_study
from tuner.errors import ConfigError
from tuner.objectives.synthetic import RegressionMLP, RegressionModule, make_problem
from tuner.runner import prepare_objective
from tuner.store.records import epochs_of
from tuner.training.fit import fit

SMALL = {"n_train": 128, "n_val": 64, "n_features": 8, "hidden": [16, 16, 16]}


def _spec(**overrides):
    values = {
        "name": "synthetic_tiny",
        "objective": "synthetic",
        "data": None,
        "options": SMALL,
        "search_space": str(REPO / "search_spaces" / "synthetic.yaml"),
        "n_trials": 1,
        "max_epochs": 3,
    }
    return StudySpec(**{**values, **overrides})


def test_a_tiny_trial_records_every_epoch_and_learns(tmp_path):
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    spec = _spec(
        fixed={"optimizer": "Adam", "lr": 1e-2, "schedule": "constant", "batch_size": 32, "unfrozen_layers": 3}
    )
    run_study(spec, url, n_trials=1, workdir=tmp_path, show_progress=False)
    stored = optuna.load_study(study_name="synthetic_tiny", storage=url)
    (trial,) = stored.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    epochs = epochs_of(trial)
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    for record in epochs:
        assert {"mse", "loss/train", "loss/val", "lr", "seconds"} <= set(record)
        assert record["mse"] == pytest.approx(record["loss/val"])  # the validation loss is the metric
    assert trial.intermediate_values == {e["epoch"]: pytest.approx(e["mse"]) for e in epochs}
    assert trial.value == pytest.approx(min(e["mse"] for e in epochs))
    baseline = stored.user_attrs["baseline"]["mse"]
    assert 0.5 < baseline < 3  # an untrained MLP on unit-variance targets
    assert trial.value < 0.8 * baseline, "3 epochs of Adam at 1e-2 should learn the teacher"
    assert stored.user_attrs["objective"] == "synthetic" and stored.direction == optuna.study.StudyDirection.MINIMIZE
    # no corpus: the options (recorded) generate the problem, so `tuner evaluate` rebuilds it from them
    assert "n_features" in stored.user_attrs["options"] and stored.user_attrs["data"] is None


def test_prune_on_reports_another_value_and_a_resumed_study_keeps_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    fixed = {"optimizer": "Adam", "lr": 1e-2, "schedule": "constant", "batch_size": 32, "unfrozen_layers": 3}
    spec = _spec(fixed=fixed, prune_on="loss/train")
    run_study(spec, url, n_trials=1, workdir=tmp_path, show_progress=False)
    stored = optuna.load_study(study_name="synthetic_tiny", storage=url)
    (trial,) = stored.trials
    epochs = epochs_of(trial)
    assert trial.intermediate_values == {e["epoch"]: pytest.approx(e["loss/train"]) for e in epochs}
    assert trial.value == pytest.approx(min(e["mse"] for e in epochs))  # the trial's value is still the metric
    assert stored.user_attrs["prune_on"] == "loss/train"
    with pytest.raises(ConfigError, match=r"prune_on: stored 'loss/train', now 'mse' \(.*set prune_on='loss/train'\)"):
        run_study(_spec(fixed=fixed), url, n_trials=1, workdir=tmp_path, show_progress=False)
    assert len(optuna.load_study(study_name="synthetic_tiny", storage=url).trials) == 1


def test_a_study_leaves_no_scratch_folder_and_the_collector_as_it_found_it(tmp_path, monkeypatch):
    import gc
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    fixed = {"optimizer": "Adam", "lr": 1e-2, "schedule": "constant", "batch_size": 32, "unfrozen_layers": 3}
    frozen_before = gc.get_freeze_count()
    frozen_during: list[int] = []
    run_study(
        _spec(fixed=fixed, n_trials=2),
        f"sqlite:///{tmp_path / 'tuner.db'}",
        workdir=tmp_path,
        show_progress=False,
        callbacks=[lambda study, trial: frozen_during.append(gc.get_freeze_count())],
    )
    assert list(scratch.iterdir()) == []  # each trial's checkpoint folder is gone, kept or not
    # while trials run, the heap from before (torch, the objective) is out of the collector's way ...
    assert len(frozen_during) == 2 and min(frozen_during) > frozen_before
    assert gc.get_freeze_count() == frozen_before  # ... and it is given back afterwards


def test_frozen_layers_stay_unchanged(tmp_path):
    objective, space = prepare_objective(_spec())
    result, module, before = fit_capturing(
        objective, space.config_from({"unfrozen_layers": 1, "lr": 1e-2, "batch_size": 32})
    )[:3]
    assert not any(changed(before, module, "model.blocks.0")) and not any(changed(before, module, "model.blocks.1"))
    assert all(changed(before, module, "model.blocks.2")), "the last hidden layer is unfrozen but did not change"
    assert all(changed(before, module, "model.head")), "the output layer must always train"
    assert result.info["trainable_parameters"] == 16 * 16 + 16 + 16 + 1
    assert result.info["parameters"] == (8 * 16 + 16) + 2 * (16 * 16 + 16) + 17


def test_batch_size_and_block_count_are_honoured():
    objective, space = prepare_objective(_spec())
    assert objective.num_blocks() == 3
    _, _, _, trainer = fit_capturing(
        objective, space.config_from({"batch_size": 16}), trainer={"limit_train_batches": 1.0}
    )
    assert trainer.train_dataloader.batch_size == 16 and trainer.num_training_batches == 128 // 16
    with pytest.raises(ConfigError, match="unfrozen_layers"):  # the space's 1..3 against a 2-block MLP
        prepare_objective(_spec(options={**SMALL, "hidden": [16, 16]}))


def test_sleep_per_epoch_is_honoured():
    objective, space = prepare_objective(_spec(options={**SMALL, "sleep_per_epoch": 0.4}))
    result = fit(objective, space.config_from({"batch_size": 64}), seed=0, max_epochs=2)
    assert [record["seconds"] >= 0.4 for record in result.history.values()] == [True, True]
    assert result.info["sleep_per_epoch"] == 0.4


def test_the_problem_is_fixed_by_data_seed_not_by_the_trial_seed():
    a, b = make_problem(32, 8, 4, 0.1, seed=0), make_problem(32, 8, 4, 0.1, seed=0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["y_train"], make_problem(32, 8, 4, 0.1, seed=1)["y_train"])
    big = make_problem(4000, 10, 8, 0.0, seed=0)["y_train"]
    assert float(big.std()) == pytest.approx(1.0, abs=0.05)  # unit-variance targets: MSE ~1 means "learned nothing"


def test_a_huge_learning_rate_makes_the_loss_non_finite():
    torch.manual_seed(0)
    problem = make_problem(128, 8, 8, 0.1, seed=0)
    module = RegressionModule(RegressionMLP(8, [16, 16, 16]))
    optimizer = torch.optim.Adam(module.parameters(), lr=1e6)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.mse_loss(module(problem["x_train"]), problem["y_train"])
        losses.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert math.isfinite(losses[0]) and not math.isfinite(losses[-1])


def test_a_diverging_trial_fails_without_a_value(tmp_path):
    """Today's runner: the trial ends FAIL with no value, and no finite metric is recorded for it."""
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    spec = _spec(fixed={"optimizer": "Adam", "lr": 1e6, "schedule": "constant", "batch_size": 32, "unfrozen_layers": 3})
    run_study(spec, url, n_trials=1, workdir=tmp_path, show_progress=False)
    (trial,) = optuna.load_study(study_name="synthetic_tiny", storage=url).trials
    assert trial.state == optuna.trial.TrialState.FAIL and trial.value is None
    assert not any(math.isfinite(e["mse"]) for e in epochs_of(trial))


def test_options_and_data_are_checked():
    with pytest.raises(ConfigError, match="'hidden' must be a non-empty list"):
        prepare_objective(_spec(options={"hidden": []}))
    with pytest.raises(ConfigError, match="'sleep_per_epoch' must be a number >= 0"):
        prepare_objective(_spec(options={"sleep_per_epoch": -1}))
    with pytest.raises(ConfigError, match="unknown option"):
        prepare_objective(_spec(options={"n_samples": 10}))
    with pytest.raises(ConfigError, match="generates its data"):
        prepare_objective(_spec(data="/some/corpus"))
    with pytest.raises(ConfigError, match="random initialisation"):
        prepare_objective(_spec(pretrained="model.bin"))


def test_the_smoke_test_study_loads(monkeypatch):
    monkeypatch.chdir(REPO)
    spec = load_study_file("studies/smoke_test.py")
    objective, space = prepare_objective(spec)
    assert (spec.objective, spec.n_trials, spec.max_epochs) == ("synthetic", 8, 3)
    assert objective.options["sleep_per_epoch"] > 0
    assert {"optimizer", "lr", "schedule", "batch_size", "unfrozen_layers", "weight_decay"} <= set(space.to_dict())
