"""Each use of Optuna's and optuna-dashboard's private API (tuner._compat), checked against the installed
versions on every store backend: an upgrade that changes one fails here first, by name."""

from __future__ import annotations

import io
import json
import warnings

import optuna
import optuna_dashboard
import plotly.graph_objects as go
import pytest

from tuner import _compat
from tuner.storage import open_storage


@pytest.fixture
def study(storage_url: str) -> optuna.Study:
    return optuna.create_study(study_name="c", storage=open_storage(storage_url, heartbeat=False))


def test_the_storage_under_a_study_and_its_ids(study):
    backend = _compat.backend_of(study)
    assert isinstance(backend, optuna.storages.RDBStorage)
    assert _compat.storage_of(study).get_study_id_from_name("c") == _compat.study_id(study)
    trial = study.ask()
    assert _compat.trial_id(trial) == backend.get_trial_id_from_study_id_trial_number(
        _compat.study_id(study), trial.number
    )
    frozen = _compat.frozen_trial(study, trial)
    assert frozen.number == trial.number and frozen.state == optuna.trial.TrialState.RUNNING
    assert _compat.trial_id(frozen) == _compat.trial_id(trial)


def test_trial_and_study_system_attributes_round_trip(study):
    trial = study.ask()
    _compat.set_trial_system_attr(study, trial, "tuner:x", {"a": [1, 2]})
    assert _compat.trial_system_attrs(study, trial)["tuner:x"] == {"a": [1, 2]}
    study.tell(trial, 1.0)
    assert study.trials[0].system_attrs["tuner:x"] == {"a": [1, 2]}  # what FrozenTrial readers see
    _compat.set_study_system_attr(study, "tuner:y", [3])
    assert _compat.study_system_attrs(study)["tuner:y"] == [3]


def test_study_system_attributes_are_deleted_by_key(study):
    for key in ("dashboard:plot_data:a:0", "dashboard:plot_data:a:1", "dashboard:plot_data:b:0", "keep"):
        _compat.set_study_system_attr(study, key, "x")
    removed = _compat.delete_study_system_attrs(study, keep=lambda key: not key.startswith("dashboard:plot_data:a:"))
    assert removed == 2
    assert sorted(_compat.study_system_attrs(study)) == ["dashboard:plot_data:b:0", "keep"]


def test_guarded_trial_creation_refuses_only_trials_without_a_template(storage_url):
    class Refusing(_compat.GuardedTrialCreation):
        def _allow_new_trial(self) -> None:
            raise LookupError("no new trials")

    study = optuna.create_study(study_name="g", storage=Refusing(storage_url))
    study.enqueue_trial({"x": 0.5})
    trial = study.ask()  # the enqueued one: created from a template
    assert trial.suggest_float("x", 0, 1) == 0.5
    with pytest.raises(LookupError, match="no new trials"):
        study.ask()  # through Optuna's cache layer (_create_new_trial)
    with pytest.raises(LookupError, match="no new trials"):
        _compat.storage_of(study).create_new_trial(_compat.study_id(study))  # the public storage API
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))  # a template: allowed
    assert len(study.trials) == 2


def test_a_study_attribute_row_is_an_atomic_register(study):
    row = _compat.StudyAttrRow(study, "tuner:lock:x")
    first, second = json.dumps({"who": 1}), json.dumps({"who": 2})
    assert row.read() is None and row.insert(first) and not row.insert(second)
    assert row.read() == first
    assert _compat.study_system_attrs(study)["tuner:lock:x"] == {"who": 1}  # Optuna reads the same row
    assert not row.replace(second, first) and row.replace(first, second) and row.read() == second
    assert not row.delete(first) and row.delete(second) and row.read() is None


def test_an_artifact_written_by_tuner_is_listed_under_its_trial(study, tmp_path):
    store = optuna.artifacts.FileSystemArtifactStore(tmp_path)
    trial = study.ask()
    store.write("ckpt-1", io.BytesIO(b"checkpoint"))
    _compat.list_artifact(study, trial, "ckpt-1", "trial0-epoch1.ckpt")
    study.tell(trial, 1.0)
    [meta] = optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=_compat.storage_of(study))
    assert (meta.artifact_id, meta.filename) == ("ckpt-1", "trial0-epoch1.ckpt")
    assert list(_compat.listed_artifacts(study.trials[0].system_attrs)) == ["ckpt-1"]


def test_dashboard_notes_of_a_finished_trial_and_figures_under_the_plot_prefix(study):
    study.tell(study.ask(), 1.0)
    frozen = study.trials[0]
    optuna_dashboard.save_note(_compat.DashboardTrial.of(study, frozen), "hello")
    assert optuna_dashboard.get_note(_compat.DashboardTrial.of(study, frozen)) == "hello"
    optuna_dashboard.save_plotly_graph_object(study, go.Figure(), graph_object_id="tuner-x")
    assert any(k.startswith(f"{_compat.PLOT_DATA_PREFIX}tuner-x:") for k in _compat.study_system_attrs(study))


def test_experimental_silences_optunas_experimental_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with _compat.experimental():
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
