"""Each use of optuna-dashboard's private API (tuner.reports.dashboard_internals), checked against the
installed version on every store backend: an upgrade that changes one fails here first, by name."""

from __future__ import annotations

import io
import json

import optuna
import optuna_dashboard
import plotly.graph_objects as go
import pytest
from test_optuna_internals import assorted_trials

from tuner.reports import dashboard_internals
from tuner.reports.dashboard_internals import read_note
from tuner.store import optuna_internals as internals
from tuner.store.connect import open_storage
from tuner.testing.store_builders import insert_study_system_attrs
from tuner.testing.wsgi import get_json


@pytest.fixture
def study(storage_url: str) -> optuna.Study:
    return optuna.create_study(study_name="c", storage=open_storage(storage_url, heartbeat=False))


def test_dashboard_notes_of_a_finished_trial_and_figures_under_the_plot_prefix(study):
    study.tell(study.ask(), 1.0)
    frozen = study.trials[0]
    optuna_dashboard.save_note(dashboard_internals.DashboardTrial.of(study, frozen), "hello")
    assert optuna_dashboard.get_note(dashboard_internals.DashboardTrial.of(study, frozen)) == "hello"
    optuna_dashboard.save_plotly_graph_object(study, go.Figure(), graph_object_id="tuner-x")
    assert any(
        k.startswith(f"{dashboard_internals.PLOT_DATA_PREFIX}tuner-x:") for k in internals.study_system_attrs(study)
    )


def test_notes_are_read_and_written_in_optuna_dashboards_layout(study):
    study.tell(study.ask(), 1.0)
    frozen = study.trials[0]
    ref = dashboard_internals.DashboardTrial.of(study, frozen)
    long_body, short_body = "x" * 5000 + "end", "short"
    dashboard_internals.write_note(study, frozen._trial_id, long_body)
    assert optuna_dashboard.get_note(ref) == long_body == read_note(study, frozen._trial_id)
    dashboard_internals.write_note(study, frozen._trial_id, short_body)  # the chunks a longer note left are blanked
    assert optuna_dashboard.get_note(ref) == short_body == read_note(study, frozen._trial_id)
    optuna_dashboard.save_note(ref, long_body)  # and what the dashboard (or a person in it) saves reads back
    assert read_note(study, frozen._trial_id) == long_body
    dashboard_internals.write_note(study, None, "study note")
    optuna_dashboard.save_note(study, optuna_dashboard.get_note(study) + "!")
    assert read_note(study) == "study note!" and read_note(study, frozen._trial_id) == long_body
    dashboard_internals.delete_note(study, frozen._trial_id)
    assert optuna_dashboard.get_note(ref) == "" == read_note(study, frozen._trial_id)
    assert not any(k.startswith(f"dashboard:{frozen._trial_id}:") for k in internals.study_system_attrs(study))
    insert_study_system_attrs(study, {"dashboard:note_x": 1, "k": [1]})
    assert internals.study_system_attrs(study)["k"] == [1]


def comparable_detail(body: dict) -> dict:
    """A study-detail answer with its search spaces' categorical choices in one order (optuna-dashboard's
    come from a set)."""
    for key in ("union_search_space", "intersection_search_space"):
        for entry in body[key]:
            if "choices" in entry.get("distribution", {}):
                entry["distribution"]["choices"].sort(key=json.dumps)
        body[key].sort(key=json.dumps)
    return body


def test_the_study_detail_is_optuna_dashboards_own(study, tmp_path):
    assorted_trials(study)
    study.tell(study.ask({"y": optuna.distributions.FloatDistribution(0, 1)}), state=optuna.trial.TrialState.PRUNED)
    finished = study.trials[0]
    optuna_dashboard.save_note(dashboard_internals.DashboardTrial.of(study, finished), "a note")
    optuna_dashboard.save_note(study, "the study's note")
    optuna_dashboard.save_plotly_graph_object(study, go.Figure(go.Bar(y=[1, 2])), graph_object_id="tuner-x")
    store = optuna.artifacts.FileSystemArtifactStore(tmp_path)
    store.write("a-1", io.BytesIO(b"x"))
    running = next(t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING)
    internals.list_artifact(study, running, "a-1", "a.ckpt")
    meta = {"artifact_id": "a-2", "filename": "b.txt", "mimetype": "text/plain", "encoding": None}
    internals.set_study_system_attr(study, f"dashboard:artifacts:{finished._trial_id}:a-2", json.dumps(meta))
    storage = internals.cached(internals.backend_of(study))
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    sid = internals.study_id(study)
    for after in (0, 2):
        theirs = get_json(app, f"/api/studies/{sid}", f"after={after}")
        ours = json.loads(json.dumps(dashboard_internals.dashboard_study_detail(app, storage, sid, after)))
        assert comparable_detail(ours) == comparable_detail(theirs) and theirs["trials"][0]["number"] == after
        assert any(t["note"]["body"] == "a note" for t in theirs["trials"]) == (after == 0)
    assert theirs["note"]["body"] == "the study's note" and theirs["plotly_graph_objects"]
    assert ours["best_trials"] and any(t["artifacts"] for t in ours["trials"])
    # studies it leaves to optuna-dashboard: several objectives, preferential
    several = optuna.create_study(study_name="two", storage=storage, directions=["minimize", "maximize"])
    assert dashboard_internals.dashboard_study_detail(app, storage, internals.study_id(several)) is None
    internals.set_study_system_attr(study, "preference:is_preferential", True)
    assert dashboard_internals.dashboard_study_detail(app, storage, sid) is None
    assert dashboard_internals.dashboard_study_detail(app, storage, sid + 1000) is None
