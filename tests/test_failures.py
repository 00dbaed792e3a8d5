"""Trials that fail, stores that refuse: each failure is recorded with its reason and nothing done is lost."""

from __future__ import annotations

import html
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from conftest import REPO

from tuner import StudySpec
from tuner.cli import main
from tuner.errors import DataError, StorageError
from tuner.reports.dashboard_internals import DashboardTrial
from tuner.reports.html import write_report
from tuner.reports.markdown import report_markdown
from tuner.reports.publish import DashboardPublisher
from tuner.runner import run_study
from tuner.store.records import CHECKPOINT as CHECKPOINT_ATTR
from tuner.store.records import StudyRecord, TrialRecord
from tuner.training.failures import describe_failure

State = optuna.trial.TrialState
pytestmark = pytest.mark.bad_input

#: the common vocabulary with a learning-rate range wide enough to diverge
WIDE_LR_SPACE = {
    "optimizer": "Adam",
    "schedule": "constant",
    "batch_size": 64,
    "lr": {"low": 1e-4, "high": 1e8, "log": True},
}


@pytest.fixture
def synthetic_spec() -> Callable[..., StudySpec]:
    """``make(**overrides)``: a seconds-long study of the synthetic objective (3 trials x 2 epochs)."""

    def make(**overrides: Any) -> StudySpec:
        values: dict[str, Any] = {
            "name": "fail",
            "objective": "synthetic",
            "search_space": str(REPO / "search_spaces" / "synthetic.yaml"),
            "data": None,
            "n_trials": 3,
            "max_epochs": 2,
            "options": {"n_train": 256, "n_val": 64},
        }
        values.update(overrides)
        return StudySpec(**values)

    return make


def _run(spec: StudySpec, url: str, tmp_path: Path, **kwargs: Any) -> list[optuna.trial.FrozenTrial]:
    """A run as `tuner run` makes it (with its optuna-dashboard publisher)."""
    kwargs.setdefault("callbacks", [DashboardPublisher()])
    run_study(spec, url, workdir=tmp_path, show_progress=False, artifacts=tmp_path / "artifacts", **kwargs)
    return optuna.load_study(study_name=spec.name, storage=url).trials


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)  # store-independent: one backend is enough
def test_a_diverging_trial_fails_with_its_reason_and_the_study_goes_on(synthetic_spec, storage_url, tmp_path):
    spec = synthetic_spec(search_space=WIDE_LR_SPACE, warm_start=[{"lr": 1e-2}, {"lr": 1e7}, {"lr": 1e-3}])
    good, diverged, after = _run(spec, storage_url, tmp_path)
    assert (good.state, diverged.state, after.state) == (State.COMPLETE, State.FAIL, State.COMPLETE)
    reason = diverged.user_attrs["fail_reason"]
    assert "the training loss is" in reason and "at epoch 1, batch" in reason and "learning rate 1e+07" in reason
    assert "diverges" in reason and "lower" in reason  # what to do about it
    assert not diverged.system_attrs.get(CHECKPOINT_ATTR)  # a failed trial's checkpoint is not kept
    assert good.user_attrs["epochs_run"] == 2 and after.user_attrs["epochs_run"] == 2


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_out_of_memory_in_a_trial_is_recorded_and_the_next_trial_runs(
    synthetic_spec, storage_url, tmp_path, monkeypatch
):
    from tuner.objectives.synthetic import RegressionModule

    step = RegressionModule.training_step
    calls = {"n": 0}

    def greedy_first_trial(self: RegressionModule, batch: Any, batch_idx: int) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:  # the first trial asks the allocator for 1 PiB: a real allocation failure
            torch.empty(2**50, dtype=torch.uint8)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(RegressionModule, "training_step", greedy_first_trial)
    first, second, third = _run(synthetic_spec(), storage_url, tmp_path)
    assert first.state == State.FAIL and second.state == third.state == State.COMPLETE
    reason = first.user_attrs["fail_reason"]
    assert reason.startswith("out of memory (") and "can't allocate memory" in reason and "batch_size" in reason


def test_cuda_out_of_memory_is_told_apart_from_other_errors():
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total capacity)")
    assert describe_failure(oom).startswith("out of memory (CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "--device N" in describe_failure(oom)
    assert describe_failure(MemoryError()).startswith("out of memory (MemoryError)")
    assert describe_failure(RuntimeError("shape mismatch\nmore")) == "RuntimeError: shape mismatch"


def test_a_corpus_error_mid_study_stops_it_and_a_rerun_finishes_the_budget(
    synthetic_spec, storage_url, tmp_path, monkeypatch
):
    from tuner.objectives.synthetic import SyntheticRegression

    build = SyntheticRegression.build
    calls = {"n": 0}

    def build_then_lose_the_disk(self: SyntheticRegression, config: Any, seed: int) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:  # builds: the untrained baseline, trial 0, then trial 1
            raise DataError("/data/corpus/train/0042.wav: not found (was the disk unmounted?)")
        return build(self, config, seed)

    monkeypatch.setattr(SyntheticRegression, "build", build_then_lose_the_disk)
    spec = synthetic_spec(n_trials=2)
    with pytest.raises(DataError, match=r"0042.wav"):
        _run(spec, storage_url, tmp_path)
    done, stopped, retry = optuna.load_study(study_name="fail", storage=storage_url).trials
    assert (done.state, stopped.state, retry.state) == (State.COMPLETE, State.FAIL, State.WAITING)
    assert "0042.wav" in stopped.user_attrs["fail_reason"] and retry.params == stopped.params

    monkeypatch.setattr(SyntheticRegression, "build", build)  # the disk is back: the same command goes on
    trials = _run(spec, storage_url, tmp_path)
    assert [t.state for t in trials] == [State.COMPLETE, State.FAIL, State.COMPLETE]
    assert trials[0].datetime_complete == done.datetime_complete and trials[0].value == done.value
    # the retry that completed does not keep the reason it inherited; it says what it retried, and why
    study = optuna.load_study(study_name="fail", storage=storage_url)
    record = StudyRecord.of(study)
    stopped, retried = TrialRecord.of(trials[1], record), TrialRecord.of(trials[2], record)
    assert "0042.wav" in stopped.fail_reason and retried.fail_reason is None
    assert trials[2].user_attrs["fail_reason"] is None
    assert retried.retry_summary.startswith("retries trial 1 from its start (it stopped: DataError: /data/corpus/")
    markdown = report_markdown(study)
    assert markdown.count("0042.wav") == 2  # the failed trial's reason, and the retry saying what it took over
    assert "failed: DataError: /data/corpus/train/0042.wav" in markdown


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_a_failed_trial_says_why_in_the_report_the_html_and_the_dashboard(synthetic_spec, storage_url, tmp_path):
    """A real diverging trial (lr 1e8): its reason is where a person looks, not only in the store."""
    import optuna_dashboard

    spec = synthetic_spec(search_space=WIDE_LR_SPACE, warm_start=[{"lr": 1e-2}, {"lr": 1.0e8}], n_trials=2)
    good, diverged = _run(spec, storage_url, tmp_path)
    assert (good.state, diverged.state) == (State.COMPLETE, State.FAIL)
    study = optuna.load_study(study_name="fail", storage=storage_url)
    reason = TrialRecord.of(diverged, StudyRecord.of(study)).fail_summary
    assert "learning rate 1e+08" in reason and "diverges" in reason

    paths = write_report("fail", storage_url, tmp_path / "reports")
    markdown = paths["md"].read_text()
    assert "## Trial 1 (FAIL)" in markdown and f"failed: {reason}" in markdown
    assert html.escape(f"failed: {reason}") in paths["html"].read_text()
    note = optuna_dashboard.get_note(DashboardTrial.of(study, diverged))
    assert f"Failed: `{reason}`" in note
    assert "Failed" not in optuna_dashboard.get_note(DashboardTrial.of(study, good))


def test_an_unreachable_store_is_one_clear_line_without_its_password(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the study file names its search space relative to the repository
    url = "postgresql://tuner:s3cret-pw@127.0.0.1:9/tuner"  # nothing listens on port 9
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "studies/smoke_test.py", "--storage", url, "--workdir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "cannot open the trial store postgresql://tuner:***@127.0.0.1:9/tuner" in err
    assert "server is running and reachable" in err and "s3cret-pw" not in err and "Traceback" not in err


def test_a_read_only_store_refuses_trials_and_still_serves_reads(synthetic_spec, tmp_path):
    db = tmp_path / "tuner.db"
    spec = synthetic_spec(n_trials=1)
    [done] = _run(spec, f"sqlite:///{db}", tmp_path)
    before = db.read_bytes()
    read_only = f"sqlite:///file:{db}?mode=ro&uri=true"
    with pytest.raises(StorageError) as error:
        _run(spec.override(n_trials=2), read_only, tmp_path)
    message = str(error.value)
    assert "read-only" in message and "writable store (--storage URL" in message and str(db) in message
    assert db.read_bytes() == before  # not a byte changed
    # reading works: the table, the export and the report come from the read-only store
    with sqlite3.connect(db) as connection:
        assert connection.execute("select count(*) from trials").fetchone() == (1,)
    main(["export", "fail", "--storage", read_only, "--out", str(tmp_path / "best.yaml")])
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["trial"] == done.number


def test_a_misspelled_trainer_option_is_refused_before_the_store_is_touched(synthetic_spec, tmp_path):
    from tuner.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"trainer option 'limit_train_batch' \(did you mean 'limit_train_batches'\?\)"
    ):
        _run(synthetic_spec(trainer={"limit_train_batch": 2}), f"sqlite:///{tmp_path / 'never.db'}", tmp_path)
    assert not (tmp_path / "never.db").exists()
