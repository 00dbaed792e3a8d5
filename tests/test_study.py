"""Studies in the store: records, pruning, resume, budgets, export — against every storage backend."""

from __future__ import annotations

import math

import optuna
import pytest
import yaml

from tuner import export_best, run_study
from tuner.errors import ConfigError
from tuner.reports.tables import trial_rows
from tuner.store.records import epochs_of

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def test_study_records_every_epoch_and_the_baseline(make_spec, storage_url, tmp_path):
    run_study(make_spec(), storage_url, n_trials=1, workdir=tmp_path, show_progress=False)
    # everything below is read back from the store, not from the returned object
    stored = optuna.load_study(study_name="tiny", storage=storage_url)
    (trial,) = stored.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    epochs = epochs_of(trial)
    assert [e["epoch"] for e in epochs] == [0, 1]
    for record in epochs:
        assert {"DER", "Confusion", "FalseAlarm", "Miss", "loss/train", "loss/val", "lr", "seconds"} <= set(record)
    assert trial.intermediate_values == {e["epoch"]: pytest.approx(e["DER"]) for e in epochs}
    assert trial.value == pytest.approx(min(e["DER"] for e in epochs))
    assert trial.user_attrs["best_epoch"] == min(epochs, key=lambda e: e["DER"])["epoch"]
    assert trial.user_attrs["config"]["batch_size"] == 8  # fixed by the study on top of the space
    assert set(trial.params) == {"optimizer", "lr", "schedule", "unfrozen_layers", "weight_decay"}
    attrs = stored.user_attrs
    assert attrs["objective"] == "pyannote_segmentation" and attrs["metric"] == "DER"
    assert attrs["direction"] == "minimize" and stored.direction == optuna.study.StudyDirection.MINIMIZE
    assert math.isfinite(attrs["baseline"]["DER"]) and attrs["baseline"]["DER"] > 0
    assert attrs["search_space"]["optimizer"] == {"choices": ["Adam", "AdamW", "RAdam", "NAdam"]}


def test_pruner_prunes_after_the_first_epoch(make_spec, storage_url, tmp_path):
    # DER is never below 0, so a threshold pruner at 0 must stop every trial after its first epoch
    spec = make_spec(max_epochs=3, pruner=optuna.pruners.ThresholdPruner(upper=0.0, n_warmup_steps=0))
    run_study(spec, storage_url, n_trials=2, workdir=tmp_path, show_progress=False)
    trials = optuna.load_study(study_name="tiny", storage=storage_url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    for trial in trials:
        assert trial.user_attrs["epochs_run"] == 1
        assert list(trial.intermediate_values) == [0]
        assert len(epochs_of(trial)) == 1  # training really stopped


def test_median_pruner_prunes_a_bad_trial(make_spec, storage_url, tmp_path):
    """The study file's kind of pruner: a trial far worse than the earlier ones is cut short."""
    spec = make_spec(
        max_epochs=3,
        n_trials=2,  # the two enqueued trials are the budget
        fixed={"batch_size": 8, "optimizer": "Adam", "schedule": "constant", "unfrozen_layers": 3, "weight_decay": 0.0},
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )
    study = optuna.create_study(study_name="tiny", storage=storage_url, direction="minimize")
    study.enqueue_trial({"lr": 1e-2})  # learns
    study.enqueue_trial({"lr": 1e-7})  # cannot learn in 3 epochs: worse than the median at epoch 0
    run_study(spec, storage_url, workdir=tmp_path, show_progress=False)
    good, bad = optuna.load_study(study_name="tiny", storage=storage_url).trials
    assert good.state == optuna.trial.TrialState.COMPLETE and good.user_attrs["epochs_run"] == 3
    assert bad.state == optuna.trial.TrialState.PRUNED and bad.user_attrs["epochs_run"] < 3


def test_a_callback_that_stops_the_study_ends_the_run_after_its_trial(make_spec, storage_url, tmp_path):
    seen: list[int] = []

    def stop_after_the_first(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seen.append(trial.number)
        study.stop()

    spec = make_spec(max_epochs=1, n_trials=3)
    run_study(spec, storage_url, workdir=tmp_path, show_progress=False, callbacks=[stop_after_the_first])
    states = [t.state for t in optuna.load_study(study_name="tiny", storage=storage_url).trials]
    assert seen == [0]
    assert states == [optuna.trial.TrialState.COMPLETE] + [optuna.trial.TrialState.WAITING] * 2
    # the trials left in the queue run on the next call
    run_study(spec, storage_url, workdir=tmp_path, show_progress=False)
    assert [t.state for t in optuna.load_study(study_name="tiny", storage=storage_url).trials] == [
        optuna.trial.TrialState.COMPLETE
    ] * 3


def test_resume_adds_trials_to_the_same_study(make_spec, storage_url, tmp_path):
    run_study(
        make_spec(max_epochs=1, sampler=optuna.samplers.RandomSampler(seed=0)),
        storage_url,
        n_trials=2,
        workdir=tmp_path,
        show_progress=False,
    )
    run_study(
        make_spec(max_epochs=1, sampler=optuna.samplers.RandomSampler(seed=0)),
        storage_url,
        n_trials=2,
        workdir=tmp_path,
        show_progress=False,
    )
    summaries = optuna.get_all_study_summaries(storage_url)
    assert [s.study_name for s in summaries] == ["tiny"]
    trials = optuna.load_study(study_name="tiny", storage=storage_url).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state in FINISHED for t in trials)
    # the resumed run does not replay the first run's configurations from the same sampler seed
    assert trials[2].params != trials[0].params and trials[3].params != trials[1].params
    # without --n-trials a run only tops the study up to its budget (here already met)
    run_study(make_spec(max_epochs=1, n_trials=3), storage_url, workdir=tmp_path, show_progress=False)
    assert len(optuna.load_study(study_name="tiny", storage=storage_url).trials) == 4


def test_budget_counts_finished_trials(make_spec, storage_url, tmp_path):
    run_study(make_spec(max_epochs=1, n_trials=1), storage_url, workdir=tmp_path, show_progress=False)
    run_study(make_spec(max_epochs=1, n_trials=2), storage_url, workdir=tmp_path, show_progress=False)
    assert len(optuna.load_study(study_name="tiny", storage=storage_url).trials) == 2


def test_a_study_cannot_change_objective(make_spec, storage_url, tmp_path):
    run_study(make_spec(max_epochs=1), storage_url, n_trials=1, workdir=tmp_path, show_progress=False)
    optuna.load_study(study_name="tiny", storage=storage_url).set_user_attr("objective", "something_else")
    with pytest.raises(ConfigError, match="was created for objective 'something_else'"):
        run_study(make_spec(max_epochs=1), storage_url, n_trials=1, workdir=tmp_path, show_progress=False)


def test_export_round_trips_the_best_parameters(make_spec, storage_url, tmp_path):
    run_study(make_spec(max_epochs=1), storage_url, n_trials=2, workdir=tmp_path, show_progress=False)
    out = tmp_path / "best.yaml"
    export_best("tiny", out, storage_url)
    exported = yaml.safe_load(out.read_text())
    best = optuna.load_study(study_name="tiny", storage=storage_url).best_trial
    assert exported["params"] == best.params
    assert exported["trial"] == best.number
    assert exported["objective"] == "pyannote_segmentation"
    assert exported["metric"]["name"] == "DER" and exported["metric"]["value"] == pytest.approx(best.value)
    assert exported["metric"]["epoch"] == best.user_attrs["best_epoch"] + 1  # people count epochs from 1
    assert exported["fixed"]["batch_size"] == 8
    assert exported["trained_on"]["data"].endswith("database.yml:Demo.SpeakerDiarization.Default")
    assert exported["trained_on"]["pretrained"] is None
    assert exported["trained_on"]["seed"] == best.user_attrs["seed"]


def test_trial_table_is_sorted_by_the_metric(make_spec, storage_url, tmp_path):
    study = run_study(make_spec(max_epochs=1), storage_url, n_trials=2, workdir=tmp_path, show_progress=False)
    rows = trial_rows(study)
    assert [r["DER"] for r in rows] == sorted(r["DER"] for r in rows)
    assert {
        "trial",
        "state",
        "optimizer",
        "schedule",
        "batch_size",
        "lr",
        "unfrozen_layers",
        "epochs",
        "best_epoch",
        "Confusion",
        "FalseAlarm",
        "Miss",
    } <= set(rows[0])
