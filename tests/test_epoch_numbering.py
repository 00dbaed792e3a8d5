"""One epoch numbering, from 1, everywhere a person reads it; a trial keeps its best epoch's checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import REPO

from tuner import StudySpec, export_best, run_study
from tuner.evaluate import evaluate_study
from tuner.reports.markdown import report_markdown
from tuner.reports.tables import trial_rows
from tuner.store import optuna_internals, records
from tuner.store.records import StudyRecord, TrialRecord
from tuner.training.reporting import TrialReporter


def test_every_reader_counts_the_trials_best_epoch_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A trial of 3 epochs whose first is its best (the later ones are made not to improve): the log, the
    table, the report, the export, the kept checkpoint's file and its dashboard listing, and ``tuner evaluate``
    all say epoch 1, and the checkpoint kept is that epoch's, not the last."""
    original = TrialReporter._improves
    monkeypatch.setattr(
        TrialReporter, "_improves", lambda self, value: self.best_epoch is None and original(self, value)
    )
    spec = StudySpec(
        name="numbers", objective="synthetic", data=None, n_trials=1, max_epochs=3,
        search_space=str(REPO / "search_spaces" / "synthetic.yaml"), options={"n_train": 128, "n_val": 64},
        fixed={"optimizer": "Adam", "lr": 1e-3, "schedule": "constant", "batch_size": 32, "unfrozen_layers": 3},
    )  # fmt: skip
    url, artifacts = f"sqlite:///{tmp_path / 'tuner.db'}", tmp_path / "artifacts"
    with caplog.at_level(logging.INFO, logger="tuner"):
        study = run_study(spec, url, workdir=tmp_path, show_progress=False, artifacts=artifacts)
    (frozen,) = study.trials
    trial = TrialRecord.of(frozen, StudyRecord.of(study))
    assert trial.best_epoch == 0 and trial.epochs_run == 3  # stored as Lightning counts, from 0
    assert frozen.value == trial.epochs[0]["mse"] != trial.epochs[2]["mse"]

    logged = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage()]
    assert any(line.startswith("trial 0 epoch 1/3: mse=") for line in logged), logged
    assert trial_rows(study)[0]["best_epoch"] == 1
    assert "trial 0, mse = " in report_markdown(study, url) and " at epoch 1" in report_markdown(study, url)
    exported = export_best("numbers", tmp_path / "best.yaml", url)
    assert (
        exported["metric"]["epoch"] == 1
        and yaml.safe_load((tmp_path / "best.yaml").read_text())["metric"]["epoch"] == 1
    )

    # the kept checkpoint is the best epoch's (its value), alone in the folder, named and listed from 1
    kept = records.checkpoint_of(study, frozen)
    assert kept is not None and kept["epoch"] == 0 and "best" not in kept
    assert kept["artifact_id"].startswith("trial0-epoch001-")
    assert sorted(p.name for p in artifacts.iterdir() if not p.name.startswith(".")) == [kept["artifact_id"]]
    listed: dict[str, Any] = {
        key: json.loads(value) for key, value in optuna_internals.frozen_trial(study, frozen).system_attrs.items()
        if key.startswith("artifacts:")
    }  # fmt: skip
    assert [meta["filename"] for meta in listed.values()] == ["trial0-epoch1.ckpt"]

    result = evaluate_study("numbers", url, workdir=tmp_path, artifacts=artifacts)
    assert result["checkpoint_epoch"] == 0 and records.evaluated_label(result) == "trial 0 (checkpoint after epoch 1)"
    # the checkpoint evaluated is the one the trial's value comes from: its validation gives that value again
    validated = evaluate_study("numbers", url, split="development", workdir=tmp_path, artifacts=artifacts)
    assert validated["best"]["mse"] == pytest.approx(frozen.value, rel=1e-6)
    assert optuna.load_study(study_name="numbers", storage=url).user_attrs["test"]["split"] == "development"
