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
    assert ranking.starting_point == "worse"  # the untrained model, against the best's 3 runs
    assert ranking_rows(ranking)[-1]["vs best"] == "worse"

    from tuner.export import best_config

    exported = best_config("apart", storage_url)  # the configuration of best confirmed mean, saying so
    assert exported["params"] == {"lr": 1e-2} and exported["confirmed"]["runs"] == 3
    assert exported["confirmed"]["mean"] == pytest.approx(best.summary.mean)
    assert exported["confirmed"]["versus_reference"] == "better" and len(exported["confirmed"]["seeds"]) == 2

    # tuner evaluate tests that configuration: every run of it with a kept checkpoint (the search run, the best
    # trial, and both confirmation runs), and its paired interval covers the items and the seeds
    from tuner.evaluate import evaluate_study

    result = evaluate_study("apart", storage_url, workdir=tmp_path, artifacts=tmp_path / "artifacts")
    assert result["chosen_by"] == "best confirmed mean"
    assert [(r["source"], r["seed"]) for r in result["runs"]] == [
        ("search", 1), ("confirm", SEED_OFFSET), ("confirm", SEED_OFFSET + 1)
    ]  # fmt: skip
    assert result["best"]["mse"] == pytest.approx(sum(r["mse"] for r in result["runs"]) / 3)
    paired = result["paired"]
    assert (paired["runs"], paired["items"]) == (3, 128) and paired["high"] < 0  # better than the untrained model
    text = StudyRecord.of(optuna.load_study(study_name="apart", storage=storage_url)).test_text
    assert "mean of 3 runs of the best confirmed mean configuration (search #1, confirm #0, confirm #1)" in text
    assert "over 128 items and 3 runs" in text


class _PruneOneRate(optuna.pruners.BasePruner):
    """Prunes every trial at learning rate ``lr`` after its first epoch: the search completes one configuration."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def prune(self, study, trial):
        return trial.params.get("lr") == self.lr


def test_with_fewer_completed_configurations_than_top_the_pruned_ones_fill_the_places(tmp_path, storage_url):
    from tuner.confirm import candidates

    space = {"optimizer": "Adam", "schedule": "constant", "batch_size": 64, "lr": {"choices": [1e-5, 1e-2]}}
    spec = _spec("pruned", space, [{"lr": 1e-2}, {"lr": 1e-5}], max_epochs=2).override(pruner=_PruneOneRate(1e-5))
    run_study(spec, storage_url, workdir=tmp_path, show_progress=False, artifacts=tmp_path / "artifacts")
    search = optuna.load_study(study_name="pruned", storage=storage_url)
    assert [t.state.name for t in search.trials] == ["COMPLETE", "PRUNED"]
    chosen = candidates(search, top=2)
    assert [(c.params["lr"], c.pruned, c.trials) for c in chosen] == [(1e-2, False, (0,)), (1e-5, True, (1,))]
    assert candidates(search, top=1) == chosen[:1]  # a place for each completed configuration: none left

    ranking = confirm_study(spec, storage_url, top=2, seeds=2, workdir=tmp_path, show_progress=False,
                            artifacts=tmp_path / "artifacts")  # fmt: skip
    by_lr = {row.config["lr"]: row for row in ranking.rows}
    assert len(by_lr[1e-2].runs) == 3 and len(by_lr[1e-5].runs) == 2  # the pruned run is not a full-length run
    assert all(source.startswith("confirm #") for source in by_lr[1e-5].sources) and by_lr[1e-5].label == "lr=1e-05"


def test_a_configuration_the_search_only_pruned_can_be_the_confirmed_best_and_is_exported(tmp_path, storage_url):
    from tuner.export import best_config

    space = {"optimizer": "Adam", "schedule": "constant", "batch_size": 64, "lr": {"choices": [1e-5, 1e-2]}}
    spec = _spec("lucky", space, [{"lr": 1e-5}, {"lr": 1e-2}], max_epochs=2).override(pruner=_PruneOneRate(1e-2))
    run_study(spec, storage_url, workdir=tmp_path, show_progress=False, artifacts=tmp_path / "artifacts")
    ranking = confirm_study(spec, storage_url, top=2, seeds=2, workdir=tmp_path, show_progress=False,
                            artifacts=tmp_path / "artifacts")  # fmt: skip
    assert ranking.rows[0].config["lr"] == 1e-2 and ranking.rows[0].numbers("search") == []
    exported = best_config("lucky", storage_url)  # carried by a confirmation run, saying which
    assert exported["params"] == {"lr": 1e-2} and exported["trial_study"] == confirmation_name("lucky")
    assert exported["confirmed"]["exported_run"] == f"confirm #{exported['trial']}"
    assert exported["confirmed"]["runs"] == 2


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


def _confirmed(runs: list[float]) -> Any:
    """A row as :func:`tuner.reports.compare.compare_rows` gives it, for a study whose best confirmed configuration
    ran ``runs``."""
    from tuner.confirm import RankedRow
    from tuner.statistics import summarize

    best = RankedRow("lr=0.01", {"lr": 0.01}, tuple(runs), ("confirm",) * len(runs), summarize(runs), "best",
                     float("nan"), "better")  # fmt: skip
    return {"trains": True, "confirmed": best, "direction": "minimize"}


def test_confirmed_studies_are_compared_pairwise_holm_corrected():
    """Three confirmed studies, three pairs: a difference that Welch's test alone calls significant (p < 0.05)
    is not one once Holm corrects for the three comparisons."""
    from tuner.reports.compare import comparison_notes
    from tuner.statistics import holm, welch_test

    a = [1.0, 1.1, 0.9, 1.05]
    c, e = [v + 0.15 for v in a], [v + 0.3 for v in a]
    rows = [{**_confirmed(runs), "study": name} for name, runs in (("a", a), ("c", c), ("e", e))]
    raw = [welch_test(a, c), welch_test(a, e), welch_test(c, e)]
    adjusted = holm(raw)
    assert raw[0] < 0.05 < adjusted[0] and adjusted[1] < 0.05 < adjusted[2]  # what the sentences must follow

    notes = comparison_notes(rows)
    assert not any("single runs" in line for line in notes)  # all three are confirmed
    assert notes[1].startswith("Best confirmed configurations compared") and "3 pairs" in notes[1]
    assert notes[3:] == [
        f"- a and c: indistinguishable (mean 1.0125 vs 1.1625, adjusted p = {adjusted[0]:.4f})",
        f"- a better than e (mean 1.0125 vs 1.3125, adjusted p = {adjusted[1]:.3g})",
        f"- c and e: indistinguishable (mean 1.1625 vs 1.3125, adjusted p = {adjusted[2]:.4f})",
    ]
    maximizing = [{**row, "direction": "maximize"} for row in rows]
    assert f"- e better than a (mean 1.3125 vs 1.0125, adjusted p = {adjusted[1]:.3g})" in comparison_notes(maximizing)
    single = [{**rows[0], "confirmed": None}, {**rows[1], "study": "one", "confirmed": _confirmed([0.5])["confirmed"]}]
    assert comparison_notes(single)[1:] == [  # one run cannot be tested; one confirmed study has no pair
        "Figures of a are from single runs (one training run per configuration): `tuner confirm STUDY` repeats the "
        "best configurations with new seeds.",
    ]
    assert comparison_notes([rows[0], single[1]])[-1] == "- a and one: too few runs to compare (mean 1.0125 vs 0.5)"


def test_compare_shows_each_study_s_confirmation_or_that_its_figures_are_from_single_runs(tmp_path):
    """Two confirmed studies and one without confirmation, compared (SQLite: the comparison reads the store
    through Optuna, as every backend's tests of :mod:`tuner.confirm` check)."""
    import csv
    import json

    from tuner.reports.compare import COMPARE_COLUMNS, write_comparison
    from tuner.statistics import welch_test
    from tuner.text import format_number

    url = f"sqlite:///{tmp_path / 'compare.db'}"
    space = {"optimizer": "Adam", "schedule": "constant", "batch_size": 64, "lr": {"choices": [1e-5, 1e-2]}}
    apart = _run(_spec("apart", space, [{"lr": 1e-5}, {"lr": 1e-2}], max_epochs=2), url, tmp_path, top=1, seeds=2)
    alone = _run(_spec("alone", space, [{"lr": 1e-5}], max_epochs=2), url, tmp_path, top=1, seeds=2)
    single = _spec("single", space, [{"lr": 1e-2}], max_epochs=2)
    run_study(single, url, workdir=tmp_path, show_progress=False, artifacts=tmp_path / "artifacts")
    assert apart.rows[0].config["lr"] == 1e-2 and alone.rows[0].reference  # alone's best is its reference

    rows, paths = write_comparison(["apart", "alone", "single"], storage=url, out_dir=tmp_path / "out")
    with paths["csv"].open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == COMPARE_COLUMNS
        table = {row["study"]: row for row in reader}
    for name, ranking in (("apart", apart), ("alone", alone)):
        top = ranking.rows[0]
        assert top.summary is not None and top.summary.n == 3  # the search run and 2 new seeds
        row = table[name]
        assert float(row["confirmed_mean"]) == top.summary.mean  # unrounded
        assert json.loads(row["confirmed_95ci"]) == [top.summary.low, top.summary.high]
        assert (row["confirmed_config"], row["confirmed_runs"]) == (top.label, "3")
    assert table["apart"]["confirmed_config"] == "lr=0.01" and table["apart"]["confirmed_vs_reference"] == "better"
    assert (table["alone"]["confirmed_config"], table["alone"]["confirmed_vs_reference"]) == ("lr=1e-05", "reference")
    assert all(table["single"][c] == "" for c in COMPARE_COLUMNS if c.startswith("confirmed_"))
    assert float(table["single"]["best"]) == optuna.load_study(study_name="single", storage=url).best_value
    assert [r["confirmed_runs"] for r in rows] == [3, 3, None]

    markdown = paths["md"].read_text()
    summary = apart.rows[0].summary
    interval = f"[{summary.low:.6g}, {summary.high:.6g}]"
    assert f"| lr=0.01 | {summary.mean:.6g} | {interval} | 3 | better |" in markdown
    assert "| - | - | - | - | - |" in next(line for line in markdown.splitlines() if line.startswith("| single |"))
    assert (
        "Figures of single are from single runs (one training run per configuration): `tuner confirm STUDY` "
        "repeats the best configurations with new seeds." in markdown
    )
    p = welch_test(apart.rows[0].runs, alone.rows[0].runs)  # one pair: Holm leaves it as it is
    assert p < 0.05 and f"- apart better than alone (mean {summary.mean:.6g} vs " in markdown
    assert f"adjusted p = {format_number(p)})" in markdown
