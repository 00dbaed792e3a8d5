"""Confirmation runs: the search's best configurations trained again with new seeds, and the ranking that says
whether a difference is larger than what another seed does (the synthetic objective: seconds per run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from tuner.confirm import SEED_OFFSET, confirm_study, confirmation_name
from tuner.reports.tables import ranking_rows
from tuner.runner import run_study
from tuner.store.records import StudyRecord, TrialRecord
from tuner.study import StudySpec


def _spec(name: str, space: dict[str, Any], warm_start: list[dict[str, Any]], max_epochs: int) -> StudySpec:
    return StudySpec(
        name=name,
        objective="synthetic",
        search_space=space,
        data=None,
        n_trials=len(warm_start),
        max_epochs=max_epochs,
        warm_start=warm_start,
        options={"n_train": 256, "n_val": 128},
        sampler=optuna.samplers.RandomSampler(seed=0),
    )


def _run(spec: StudySpec, url: str, tmp_path: Path, **confirm: int) -> Any:
    run_study(spec, url, workdir=tmp_path, show_progress=False, artifacts=tmp_path / "artifacts")
    return confirm_study(spec, url, workdir=tmp_path, show_progress=False, artifacts=tmp_path / "artifacts", **confirm)


def test_two_configurations_identical_up_to_the_seed_are_indistinguishable(tmp_path, storage_url):
    """Over one epoch a cosine schedule has not moved the learning rate yet: both configurations train alike,
    and only the seed separates their runs."""
    space = {"optimizer": "Adam", "lr": 3e-3, "batch_size": 64, "schedule": {"choices": ["constant", "cosine"]}}
    spec = _spec("twins", space, [{"schedule": "constant"}, {"schedule": "cosine"}], max_epochs=1)
    ranking = _run(spec, storage_url, tmp_path, top=2, seeds=3)

    assert [len(row.runs) for row in ranking.rows] == [4, 4]  # the search run and 3 new seeds each
    assert [row.verdict for row in ranking.rows] == ["best", "indistinguishable"]
    assert {row.versus_reference for row in ranking.rows} == {"reference", "indistinguishable"}
    assert ranking.seeds == tuple(SEED_OFFSET + i for i in range(3))
    search = optuna.load_study(study_name="twins", storage=storage_url)
    companion = optuna.load_study(study_name=confirmation_name("twins"), storage=storage_url)
    assert len(search.trials) == 2  # the search's budget and its trials are untouched
    record = StudyRecord.of(companion)
    runs = [TrialRecord.of(t, record) for t in companion.trials]
    assert len(runs) == 6 and all(r.state == "COMPLETE" and r.epochs_run == 1 for r in runs)
    assert sorted({r.seed for r in runs}) == list(ranking.seeds)  # the same new seeds for every configuration
    assert record.confirms == "twins"
    rows = ranking_rows(ranking)
    assert rows[-1]["configuration"].endswith("(starting point)") and rows[0]["runs"] == 4

    again = confirm_study(spec, storage_url, top=2, seeds=3, workdir=tmp_path, show_progress=False,
                          artifacts=tmp_path / "artifacts")  # fmt: skip
    assert len(optuna.load_study(study_name=confirmation_name("twins"), storage=storage_url).trials) == 6
    assert [len(row.runs) for row in again.rows] == [4, 4]  # complete: nothing added
    more = confirm_study(spec, storage_url, top=2, seeds=4, workdir=tmp_path, show_progress=False,
                         artifacts=tmp_path / "artifacts")  # fmt: skip
    assert [len(row.runs) for row in more.rows] == [5, 5]  # the missing seed added, for each configuration


def test_a_clearly_better_configuration_is_better_than_the_reference(tmp_path, storage_url):
    space = {"optimizer": "Adam", "schedule": "constant", "batch_size": 64, "lr": {"choices": [1e-5, 1e-2]}}
    spec = _spec("apart", space, [{"lr": 1e-5}, {"lr": 1e-2}], max_epochs=2)  # the first is the reference
    ranking = _run(spec, storage_url, tmp_path, top=1, seeds=2)

    best, reference = ranking.rows
    assert best.config["lr"] == 1e-2 and reference.reference and reference.config["lr"] == 1e-5
    assert (best.verdict, best.versus_reference) == ("best", "better")
    assert (reference.verdict, reference.versus_reference) == ("worse", "reference")
    assert best.summary is not None and best.summary.n == 3 and best.summary.low <= best.summary.mean

    from tuner.export import best_config

    exported = best_config("apart", storage_url)  # the configuration of best confirmed mean, saying so
    assert exported["params"] == {"lr": 1e-2} and exported["confirmed"]["runs"] == 3
    assert exported["confirmed"]["mean"] == pytest.approx(best.summary.mean)
    assert exported["confirmed"]["versus_reference"] == "better" and len(exported["confirmed"]["seeds"]) == 2


def test_a_search_without_a_completed_trial_has_nothing_to_confirm(tmp_path, storage_url):
    from tuner.errors import ConfigError

    space = {"optimizer": "Adam", "batch_size": 64, "schedule": "constant", "lr": {"choices": [1e-3, 1e-2]}}
    spec = _spec("none", space, [{"lr": 1e-3}], max_epochs=1)
    optuna.create_study(study_name="none", storage=storage_url)
    with pytest.raises(ConfigError, match="no completed trial yet: nothing to confirm"):
        confirm_study(spec, storage_url, workdir=tmp_path, show_progress=False)


def test_reports_show_the_confirmed_ranking_or_say_the_ranking_is_from_single_runs(tmp_path, storage_url):
    from tuner.reports.figures import study_figures
    from tuner.reports.markdown import report_markdown
    from tuner.reports.notes import study_note

    space = {"optimizer": "Adam", "schedule": "constant", "batch_size": 64, "lr": {"choices": [1e-5, 1e-2]}}
    spec = _spec("shown", space, [{"lr": 1e-5}, {"lr": 1e-2}], max_epochs=1)
    run_study(spec, storage_url, workdir=tmp_path, show_progress=False, artifacts=tmp_path / "artifacts")
    search = optuna.load_study(study_name="shown", storage=storage_url)
    assert "- ranking: from single runs" in report_markdown(search) and "`tuner confirm shown`" in study_note(search)

    confirm_study(spec, storage_url, top=1, seeds=2, workdir=tmp_path, show_progress=False,
                  artifacts=tmp_path / "artifacts")  # fmt: skip
    markdown = report_markdown(search)
    assert "## Confirmed ranking by mse" in markdown and "- confirmed: 2 configurations x 3 runs" in markdown
    assert "| 1 | lr=0.01 | 3 |" in markdown and "(starting point)" in markdown
    assert "#### Confirmed ranking by mse" in study_note(search)
    assert "Confirmed ranking" in study_figures(search)
