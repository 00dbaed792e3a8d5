"""Large studies: the compact per-epoch layout and stores in the layout before it; report, studies, export and
the dashboard API on a 1,000-trial store (built once per backend by tuner's own record writers,
tuner.testing.large_study) give the rows a small study gives and the store holds; what tuner leaves for
optuna-dashboard stays bounded."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import STORAGE_BACKENDS
from test_dashboard_internals import comparable_detail

from tuner.reports import dashboard_internals, notes, serving
from tuner.reports.html import write_report
from tuner.reports.summary import DETAILED_TRIALS, TABLE_ROWS
from tuner.reports.tables import store_study_rows, study_rows, trial_columns, trial_row
from tuner.store import optuna_internals, records
from tuner.store.connect import open_storage
from tuner.testing.large_study import build_study, noted_numbers
from tuner.testing.wsgi import get_json

LARGE, SMALL = 1000, 12
optuna.logging.set_verbosity(optuna.logging.WARNING)


# ------------------------------------------------------------------------------------- the layout


def test_epochs_are_one_table_per_trial_rewritten_each_epoch():
    attrs = records.TrialAttrs()
    records.write_epoch(attrs, 0, {"DER": 0.5, "lr": 1e-3})
    records.write_epoch(attrs, 1, {"DER": 0.25, "lr": 1e-3, "seconds": 2.0})  # a value the first epoch lacked
    assert attrs.user_attrs == {} and list(attrs.system_attrs) == ["tuner:epochs"]
    assert attrs.system_attrs["tuner:epochs"] == {
        "columns": ["epoch", "DER", "lr", "seconds"],
        "rows": [[0, 0.5, 1e-3, None], [1, 0.25, 1e-3, 2.0]],
    }
    assert records.epochs_of(attrs) == (
        {"epoch": 0, "DER": 0.5, "lr": 1e-3},  # the null cell is not part of the record
        {"epoch": 1, "DER": 0.25, "lr": 1e-3, "seconds": 2.0},
    )
    records.write_epoch(attrs, 1, {"DER": 0.3})  # an epoch written again (a resumed run) replaces its row
    assert [e["DER"] for e in records.epochs_of(attrs)] == [0.5, 0.3]


def test_a_live_trial_writes_its_table_to_the_store(storage_url):
    study = optuna.create_study(storage=open_storage(storage_url, heartbeat=False))
    trial = study.ask()
    for epoch in range(3):
        records.write_epoch(trial, epoch, {"DER": 1.0 / (epoch + 1)})
    study.tell(trial, 1 / 3)
    (stored,) = optuna.load_study(study_name=study.study_name, storage=storage_url).trials  # stock Optuna
    assert stored.system_attrs["tuner:epochs"]["rows"] == [[0, 1.0], [1, 0.5], [2, 1 / 3]]
    assert not stored.user_attrs and [e["DER"] for e in records.epochs_of(stored)] == [1.0, 0.5, 1 / 3]


def test_the_layout_before_and_a_retry_that_continues_it_read_as_one():
    legacy = {"epoch/000": {"DER": 0.5}, "epoch/001": {"DER": 0.4}, "epoch/x": 1, "epochs_run": 2}
    assert records.epochs_from_attrs(legacy) == ({"epoch": 0, "DER": 0.5}, {"epoch": 1, "DER": 0.4})
    retry = records.TrialAttrs(legacy)  # a retry inherits the old attributes, then records its own epochs
    records.write_epoch(retry, 2, {"DER": 0.3})
    assert [(e["epoch"], e["DER"]) for e in records.epochs_of(retry)] == [(0, 0.5), (1, 0.4), (2, 0.3)]
    assert records.epochs_from_attrs({}, {"tuner:epochs": "not a table"}) == ()


# ------------------------------------------------------------------------------------ the stores


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="session", params=sorted(STORAGE_BACKENDS))
def stores(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Per backend, three stores built by the same seeded path: ``large`` (1,000 trials, 2 % failed),
    ``small`` (its first 12 trials: the same trials) and ``legacy`` (``large`` in the layout before the
    compact one: one ``epoch/NNN`` attribute per epoch, a dashboard note for every trial)."""
    names = {"large": (LARGE, "compact"), "small": (SMALL, "compact"), "legacy": (LARGE, "legacy")}
    folder = tmp_path_factory.mktemp("large")
    urls: dict[str, str] = {}
    server = request.getfixturevalue("postgres_server") if request.param == "postgresql" else None
    for key, (n, layout) in names.items():
        urls[key] = server.new_database(f"large_{key}") if server else f"sqlite:///{folder / key}.db"
        build_study(urls[key], "big", n, seed=3, failed=0.02, layout=layout)  # type: ignore[arg-type]
    yield urls
    if server is not None:
        for key in names:
            server.drop_database(f"large_{key}")


@pytest.fixture(scope="session")
def reports(stores: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    out = tmp_path_factory.mktemp("large_reports")
    return {key: write_report("big", storage=url, out_dir=out / key) for key, url in stores.items()}


def _reference(url: str) -> tuple[records.StudyRecord, list[records.TrialRecord]]:
    """The study read with Optuna's own storage (its ORM reads), through tuner's records."""
    study = optuna.load_study(study_name="big", storage=optuna.storages.RDBStorage(url))
    return records.study_trials(study)


def test_report_csvs_hold_every_trial_and_epoch_as_the_store_does(stores, reports):
    record, trials = _reference(stores["large"])
    rows = _rows(reports["large"]["csv"].read_text())
    assert len(rows) == LARGE and {int(r["trial"]) for r in rows} == set(range(LARGE))
    columns = trial_columns(record)
    by_number = {t.number: t for t in trials}
    for row in rows:
        expected = trial_row(by_number[int(row["trial"])], record)
        for column in columns:
            value = expected[column]
            cell = row[column]
            if isinstance(value, float):
                assert float(cell) == value, (row["trial"], column)  # full precision
            else:
                assert cell == ("" if value is None else str(value)), (row["trial"], column)
    scored = [float(r["DER"]) for r in rows if r["DER"] and not r["state"].startswith("FAIL")]
    assert scored == sorted(scored) and {r["state"] for r in rows} == {"COMPLETE", "PRUNED", "FAIL"}
    states = [r["state"] for r in rows]  # a failure's last value is not a result: failed trials come last
    assert states.index("FAIL") > max(i for i, state in enumerate(states) if state != "FAIL")

    epochs = _rows(reports["large"]["epochs"].read_text())
    assert len(epochs) == sum(t.epochs_run for t in trials)
    for line in epochs[:500]:
        trial = by_number[int(line["trial"])]
        stored = next(e for e in trial.epochs if e["epoch"] + 1 == int(line["epoch"]))  # the CSV counts from 1
        assert all(float(line[k]) == v for k, v in stored.items() if k != "epoch")
        assert (line["best"] == "1") == (stored["epoch"] == trial.best_epoch)


def test_the_large_reports_rows_are_the_small_studys_rows(reports):
    """The small study's 12 trials are the large one's first 12: the same rows, in either layout."""
    small = {r["trial"]: r for r in _rows(reports["small"]["csv"].read_text())}
    large = {r["trial"]: r for r in _rows(reports["large"]["csv"].read_text())}
    assert len(small) == SMALL and all(large[n] == row for n, row in small.items())
    small_epochs = _rows(reports["small"]["epochs"].read_text())
    large_epochs = [r for r in _rows(reports["large"]["epochs"].read_text()) if int(r["trial"]) < SMALL]
    key = lambda r: (int(r["trial"]), int(r["epoch"]))  # noqa: E731
    assert sorted(small_epochs, key=key) == sorted(large_epochs, key=key)
    # a store in the layout before the compact one reports the same, to the byte
    assert reports["legacy"]["csv"].read_text() == reports["large"]["csv"].read_text()
    assert reports["legacy"]["epochs"].read_text() == reports["large"]["epochs"].read_text()


def test_large_pages_summarise_and_detail_the_best_trials(reports):
    md = reports["large"]["md"].read_text()
    assert "## Summary" in md and f"the best {TABLE_ROWS} of {LARGE} trials" in md and "big.epochs.csv" in md
    assert "failed (" in md and "lower the learning rate" in md  # failures grouped by reason
    rows = _rows(reports["large"]["csv"].read_text())
    table = [line for line in md.split("## Trials by", 1)[1].split("\n## ", 1)[0].splitlines() if line[:2] == "| "]
    assert len(table) == TABLE_ROWS + 1  # its header, then the best 200
    headings = [line for line in md.splitlines() if line.startswith("## Trial ")]
    assert [h.split()[2] for h in headings] == [r["trial"] for r in rows[:DETAILED_TRIALS]]
    page = reports["large"]["html"].read_text()
    figures = page.count('class="figure"')
    assert figures == 5 and page.count("<details>") == DETAILED_TRIALS
    assert len(page) < 5_000_000 + 3_000_000  # plotly.js (4.7 MB) and at most 3 MB of figures and tables
    small = reports["small"]["md"].read_text()
    assert "## Summary" not in small and small.count("\n## Trial ") == SMALL  # a small study: everything


def test_studies_and_export_read_what_the_store_holds(stores, tmp_path):
    from tuner.export import export_best

    for key in ("large", "legacy"):
        storage = open_storage(stores[key], heartbeat=False)
        (row,) = study_rows(storage)
        assert store_study_rows(stores[key]) == [row]  # `tuner studies`: the SQL engine alone
        reference = optuna.load_study(study_name="big", storage=optuna.storages.RDBStorage(stores[key]))
        states = [t.state.name for t in reference.trials]
        assert row["trials"] == LARGE and row["objective"] == "pyannote_segmentation"
        assert (row["complete"], row["pruned"], row["failed"], row["running"]) == tuple(
            states.count(s) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
        )
        assert (row["best"], row["best_trial"]) == (reference.best_value, reference.best_trial.number)
        exported = export_best("big", tmp_path / f"{key}.yaml", stores[key])
        best = reference.best_trial
        assert exported["trial"] == best.number and exported["params"] == best.params
        assert exported["metric"]["epoch"] == best.user_attrs["best_epoch"] + 1  # counted from 1
        assert yaml.safe_load((tmp_path / f"{key}.yaml").read_text())["metric"]["value"] == best.value


def _dashboard_get(url: str, path: str, query: str = "", *, tuners: bool = False) -> Any:
    """optuna-dashboard's answer to ``path`` (``tuners``: as `tuner dashboard` serves it)."""
    import optuna_dashboard

    storage = optuna_internals.cached(open_storage(url, heartbeat=False))
    app = optuna_dashboard.wsgi(storage)
    if tuners:
        app = serving.StudyDetailFirst(app, storage)
    return get_json(app, path, query)


def test_the_dashboard_api_serves_every_trial_with_bounded_notes_and_figures(stores):
    from tuner.reports.figures import study_figures

    details = {}
    for key in ("large", "small", "legacy"):
        (summary,) = _dashboard_get(stores[key], "/api/studies")["study_summaries"]
        details[key] = _dashboard_get(stores[key], f"/api/studies/{summary['study_id']}", "after=0")
    large, small = details["large"], details["small"]
    served = _dashboard_get(stores["large"], f"/api/studies/{large['trials'][0]['study_id']}", "after=0", tuners=True)
    assert comparable_detail(served) == comparable_detail(json.loads(json.dumps(large)))  # tuner's, the same
    assert len(large["trials"]) == LARGE == len(details["legacy"]["trials"]) and len(small["trials"]) == SMALL

    def shown(trial: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in trial.items() if k not in ("trial_id", "study_id", "note")}

    assert [shown(t) for t in large["trials"][:SMALL]] == [shown(t) for t in small["trials"]]
    study = optuna.load_study(study_name="big", storage=open_storage(stores["large"], heartbeat=False))
    noted = [t["number"] for t in large["trials"] if t["note"]["body"]]
    assert noted == noted_numbers(study)
    assert len(noted) <= notes.NOTES_UP_TO + notes.NOTED_BEST
    assert {t["number"] for t in large["best_trials"]} <= set(noted)  # the best trial has its note
    best = large["trials"][large["best_trials"][0]["number"]]
    assert f"Trial {best['number']}: complete" in best["note"]["body"] and "(best)" in best["note"]["body"]
    small_study = optuna.load_study(study_name="big", storage=open_storage(stores["small"], heartbeat=False))
    assert [t["number"] for t in small["trials"] if t["note"]["body"]] == noted_numbers(small_study)
    figures = {g["id"] for g in large["plotly_graph_objects"]}
    assert figures == {notes._figure_id(k) for k in study_figures(study, dashboard=True)}
    assert "tuner-Optimization-history" not in figures and "tuner-Intermediate-values" in figures
    assert sum(len(g["graph_object"]) for g in large["plotly_graph_objects"]) < 200_000
    # per-epoch records: one system attribute per trial, which the dashboard does not send; one user
    # attribute per epoch before
    keys = {a["key"] for a in large["trials"][0]["user_attrs"]}
    assert {"config", "seed", "epochs_run", "best_epoch"} <= keys and not any("epoch/" in k for k in keys)
    assert "epoch/000" in {a["key"] for a in details["legacy"]["trials"][0]["user_attrs"]}


def test_a_worker_leaves_notes_only_for_the_first_and_the_best_trials(storage_url):
    """The notes tuner writes after each trial (and those it retires) are those noted_numbers() predicts."""
    storage = open_storage(storage_url, heartbeat=False)
    built = build_study(storage, "w", 70, seed=5, pruned=0.2, dashboard=False)
    for trial in built.get_trials(deepcopy=False):
        notes.publish_trial_note(built, trial)
    with_notes = [t.number for t in built.trials if dashboard_internals.read_note(built, t._trial_id)]
    assert with_notes == noted_numbers(built) and len(with_notes) < 70
    # a note a person wrote in is kept when its trial leaves the best ones
    victim = next(n for n in with_notes if n >= notes.NOTES_UP_TO)
    ref = dashboard_internals.DashboardTrial.of(built, built.trials[victim])
    import optuna_dashboard

    optuna_dashboard.save_note(ref, optuna_dashboard.get_note(ref) + "\nkeep this -- Ana\n")
    for value in (-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0, -10.0, -11.0):
        built.add_trial(optuna.trial.create_trial(value=value, user_attrs={"config": {}}))
        notes.publish_trial_note(built, built.trials[-1])
    assert "keep this -- Ana" in optuna_dashboard.get_note(ref)
    remaining = [t.number for t in built.trials if dashboard_internals.read_note(built, t._trial_id)]
    assert victim in remaining and len([n for n in remaining if n >= notes.NOTES_UP_TO]) == notes.NOTED_BEST + 1


def test_an_old_layout_store_runs_on(storage_url, tmp_path):
    """A store written before the compact layout opens with `tuner run`'s storage, takes new trials (in the
    compact layout) and reports both kinds the same way."""
    build_study(storage_url, "old", 60, seed=1, layout="legacy")
    study = optuna.load_study(study_name="old", storage=open_storage(storage_url, heartbeat=False))
    trial = study.ask()
    records.start_trial(trial, {"lr": 1e-3}, 1, 10)
    records.write_epoch(trial, 0, {"DER": 0.9, "loss/val": 1.0})
    study.tell(trial, 0.9)
    _, trials = records.study_trials(study)
    assert [e["DER"] for e in trials[-1].epochs] == [0.9] and "tuner:epochs" in study.trials[-1].system_attrs
    assert all(t.epochs and t.best_epoch is not None for t in trials[:60] if t.state == "COMPLETE")
    assert all(math.isfinite(t.best["DER"]) for t in trials if t.state == "COMPLETE")
    paths = write_report("old", storage=storage_url, out_dir=tmp_path)
    assert len(_rows(paths["csv"].read_text())) == 61
    assert sum(1 for line in _rows(paths["epochs"].read_text()) if line["trial"] == "60") == 1


def test_reads_fall_back_to_optunas_storage_and_its_errors(storage_url, tmp_path):
    """A store without Optuna's tables yet lists no study; an unknown study is named with the store's."""
    from tuner.errors import ConfigError
    from tuner.export import export_best

    assert store_study_rows(storage_url) == []  # the tables are created, as `tuner studies` always did
    build_study(storage_url, "one", 30, dashboard=False)
    with pytest.raises(ConfigError, match=r"no study 'two'.*Studies there: one"):
        export_best("two", tmp_path / "x.yaml", storage_url)
    optuna.create_study(study_name="empty", storage=storage_url)
    with pytest.raises(ConfigError, match="'empty' has no completed trial yet"):
        export_best("empty", tmp_path / "x.yaml", storage_url)
    assert [r["study"] for r in store_study_rows(storage_url)] == ["one", "empty"]
