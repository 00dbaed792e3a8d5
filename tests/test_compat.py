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
from tuner.testing.wsgi import get_json


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


@pytest.mark.parametrize(
    "make", [lambda: optuna.samplers.TPESampler(n_startup_trials=3), optuna.samplers.RandomSampler]
)
def test_a_reseeded_sampler_repeats_its_draws_and_differs_across_seeds(make):
    def draws(sampler: optuna.samplers.BaseSampler) -> list[float]:
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1) ** 2, n_trials=6)
        return [t.params["x"] for t in study.trials]

    base = make()
    first, again = draws(_compat.reseeded_optuna_sampler(base, 3)), draws(_compat.reseeded_optuna_sampler(base, 3))
    assert first == again and first != draws(_compat.reseeded_optuna_sampler(base, 4))


# ----------------------------------------------------------------------------------- trials in bulk


def _assorted_trials(study: optuna.Study) -> None:
    """Trials of every state, with infinite values, NaN and infinite intermediate values, every kind of
    distribution and nested attributes: what the bulk reader must read back as Optuna does."""
    dists = {
        "x": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
        "s": optuna.distributions.FloatDistribution(0.0, 1.0, step=0.25),
        "n": optuna.distributions.IntDistribution(1, 9, step=2),
        "c": optuna.distributions.CategoricalDistribution([None, True, 3, 0.5, "a"]),
    }
    values = {"x": 0.01, "s": 0.75, "n": 5, "c": None}
    common = {"params": values, "distributions": dists, "system_attrs": {"fixed_params": {}, "k": [1, {"a": None}]}}
    study.add_trial(
        optuna.trial.create_trial(
            value=0.5,
            user_attrs={"epochs": {"columns": ["epoch", "DER"], "rows": [[0, 0.5]]}, "seed": 3, "none": None},
            intermediate_values={0: float("nan"), 1: float("inf"), 2: -float("inf"), 3: 0.25},
            **common,
        )
    )
    study.add_trial(optuna.trial.create_trial(value=float("inf"), **{**common, "params": {**values, "c": True}}))
    study.add_trial(optuna.trial.create_trial(value=-float("inf"), **{**common, "params": {**values, "c": "a"}}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, intermediate_values={0: 1.0}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"fail_reason": "x"}))
    study.enqueue_trial({"x": 0.5})
    running = study.ask()
    running.suggest_float("x", 1e-4, 1.0, log=True)
    running.set_user_attr("epochs", {"columns": ["epoch"], "rows": [[0]]})


def _same(trials: list) -> list[str]:
    """Trials as comparable text: NaN equals NaN, and attribute order (the database's) does not count."""
    return [json.dumps(t.__dict__, sort_keys=True, default=repr) for t in trials]


def test_bulk_reads_give_what_optunas_own_reads_give(study):
    _assorted_trials(study)
    backend = _compat.backend_of(study)
    sid = _compat.study_id(study)
    orm = optuna.storages.RDBStorage._get_trials  # Optuna's own implementation, bypassing tuner's
    ids = [t._trial_id for t in backend.get_all_trials(sid)]
    cases = [
        (None, set(), -1),
        ((optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING), set(), -1),
        (None, set(), ids[2]),
        (None, {ids[0], ids[3]}, ids[4]),
    ]
    for states, included, above in cases:
        ours = _compat.read_trials(backend, sid, states, included, above)
        theirs = orm(backend, sid, states, included, above)
        assert [t.number for t in ours] == [t.number for t in theirs] and ours, (states, included, above)
        assert _same(ours) == _same(theirs)
    assert isinstance(backend, _compat.BulkTrialReads)  # tuner's stores read this way
    assert _same(backend.get_all_trials(sid)) == _same(orm(backend, sid, None, set(), -1))
    with pytest.raises(KeyError):
        _compat.read_trials(backend, sid + 1000)


def test_trials_inserted_in_bulk_are_stored_as_add_trials_stores_them(storage_url):
    storage = open_storage(storage_url, heartbeat=False)
    source = optuna.create_study(study_name="source", storage=storage)
    _assorted_trials(source)
    finished = [t for t in source.get_trials() if t.state.is_finished()]
    added = optuna.create_study(study_name="added", storage=storage)
    added.add_trials(finished)
    inserted = optuna.create_study(study_name="inserted", storage=storage)
    inserted.add_trial(finished[0])  # numbered after the trials a study already has
    assert _compat.insert_trials(inserted, finished) == len(finished)
    orm = optuna.storages.RDBStorage._get_trials
    backend = _compat.backend_of(added)

    def stored(study: optuna.Study, skip: int = 0) -> list[str]:
        trials = orm(backend, _compat.study_id(study), None, set(), -1)[skip:]
        return [json.dumps({**t.__dict__, "_trial_id": None, "_number": t.number - skip}, sort_keys=True, default=repr)
                for t in trials]  # fmt: skip

    assert stored(inserted, skip=1) == stored(added)
    assert [t.number for t in inserted.get_trials()] == list(range(len(finished) + 1))


def test_counts_ranks_and_retries_come_from_the_database(study):
    for value in (3.0, 1.0, 2.0, float("-inf"), 2.0):
        study.add_trial(optuna.trial.create_trial(value=value))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    study.enqueue_trial({})
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, system_attrs={"failed_trial": 1, "retry_history": [1, 5]}
        )
    )
    backend = _compat.backend_of(study)
    sid = _compat.study_id(study)
    assert _compat.count_trials(study) == {"COMPLETE": 5, "PRUNED": 1, "WAITING": 2}
    assert _compat.trial_counts(backend) == {sid: {"COMPLETE": 5, "PRUNED": 1, "WAITING": 2}}
    assert (sid, "c") in _compat.study_ids(backend)
    assert [_compat.count_better(study, v) for v in (float("-inf"), 1.0, 2.0, 2.5, 3.0, float("inf"))] == [
        0, 1, 2, 4, 4, 5
    ]  # fmt: skip
    assert _compat.count_better(study, 2.5, below=3) == 2  # trials 0-2 only: 1.0 and 2.0 beat it
    ranked = [_compat.nth_best_trial(study, n) for n in range(6)]
    assert [r[0] if r else None for r in ranked] == [3, 1, 2, 4, 0, None]  # ties by number
    assert all(r is None or r[1] == _compat.trial_id(study.trials[r[0]]) for r in ranked)
    with _compat.experimental():
        expected = {t.number: optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(t) for t in study.trials}
    assert _compat.retry_histories(study) == {n: h for n, h in expected.items() if h} == {7: [1, 5]}
    assert _compat.trial_system_attr(backend, sid, "failed_trial") == {7: 1}


def test_notes_are_read_and_written_in_optuna_dashboards_layout(study):
    study.tell(study.ask(), 1.0)
    frozen = study.trials[0]
    ref = _compat.DashboardTrial.of(study, frozen)
    long_body, short_body = "x" * 5000 + "end", "short"
    _compat.write_note(study, frozen._trial_id, long_body)
    assert optuna_dashboard.get_note(ref) == long_body == _compat.read_note(study, frozen._trial_id)
    _compat.write_note(study, frozen._trial_id, short_body)  # the chunks a longer note left are blanked
    assert optuna_dashboard.get_note(ref) == short_body == _compat.read_note(study, frozen._trial_id)
    optuna_dashboard.save_note(ref, long_body)  # and what the dashboard (or a person in it) saves reads back
    assert _compat.read_note(study, frozen._trial_id) == long_body
    _compat.write_note(study, None, "study note")
    optuna_dashboard.save_note(study, optuna_dashboard.get_note(study) + "!")
    assert _compat.read_note(study) == "study note!" and _compat.read_note(study, frozen._trial_id) == long_body
    _compat.delete_note(study, frozen._trial_id)
    assert optuna_dashboard.get_note(ref) == "" == _compat.read_note(study, frozen._trial_id)
    assert not any(k.startswith(f"dashboard:{frozen._trial_id}:") for k in _compat.study_system_attrs(study))
    _compat.insert_study_system_attrs(study, {"dashboard:note_x": 1, "k": [1]})
    assert _compat.study_system_attrs(study)["k"] == [1]


def test_optunas_cache_layer_wraps_a_store():
    cached = _compat.cached(open_storage("sqlite:///:memory:", heartbeat=False))
    assert isinstance(cached, optuna.storages._CachedStorage)
    study = optuna.create_study(storage=cached)
    study.tell(study.ask(), 1.0)
    assert len(study.trials) == 1


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
    _assorted_trials(study)
    study.tell(study.ask({"y": optuna.distributions.FloatDistribution(0, 1)}), state=optuna.trial.TrialState.PRUNED)
    finished = study.trials[0]
    optuna_dashboard.save_note(_compat.DashboardTrial.of(study, finished), "a note")
    optuna_dashboard.save_note(study, "the study's note")
    optuna_dashboard.save_plotly_graph_object(study, go.Figure(go.Bar(y=[1, 2])), graph_object_id="tuner-x")
    store = optuna.artifacts.FileSystemArtifactStore(tmp_path)
    store.write("a-1", io.BytesIO(b"x"))
    running = next(t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING)
    _compat.list_artifact(study, running, "a-1", "a.ckpt")
    meta = {"artifact_id": "a-2", "filename": "b.txt", "mimetype": "text/plain", "encoding": None}
    _compat.set_study_system_attr(study, f"dashboard:artifacts:{finished._trial_id}:a-2", json.dumps(meta))
    storage = _compat.cached(_compat.backend_of(study))
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    sid = _compat.study_id(study)
    for after in (0, 2):
        theirs = get_json(app, f"/api/studies/{sid}", f"after={after}")
        ours = json.loads(json.dumps(_compat.dashboard_study_detail(app, storage, sid, after)))
        assert comparable_detail(ours) == comparable_detail(theirs) and theirs["trials"][0]["number"] == after
        assert any(t["note"]["body"] == "a note" for t in theirs["trials"]) == (after == 0)
    assert theirs["note"]["body"] == "the study's note" and theirs["plotly_graph_objects"]
    assert ours["best_trials"] and any(t["artifacts"] for t in ours["trials"])
    # studies it leaves to optuna-dashboard: several objectives, preferential
    several = optuna.create_study(study_name="two", storage=storage, directions=["minimize", "maximize"])
    assert _compat.dashboard_study_detail(app, storage, _compat.study_id(several)) is None
    _compat.set_study_system_attr(study, "preference:is_preferential", True)
    assert _compat.dashboard_study_detail(app, storage, sid) is None
    assert _compat.dashboard_study_detail(app, storage, sid + 1000) is None


def test_a_store_reader_reads_what_optunas_storage_reads(study):
    for value in (2.0, 1.0, 3.0):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"u": value}))
    study.set_user_attr("metric", "DER")
    backend = _compat.backend_of(study)
    reader = _compat.StoreReader(backend.url)
    sid = _compat.study_id(study)
    assert _compat.study_id_of(reader, "c") == sid and _compat.study_id_of(reader, "nope") is None
    assert _compat.study_directions(reader, sid) == backend.get_study_directions(sid)
    assert _compat.study_user_attrs(reader, sid) == backend.get_study_user_attrs(sid)
    number, best_id = _compat.ranked_trial(reader, sid, maximize=False)
    assert (number, best_id) == (study.best_trial.number, study.best_trial._trial_id)
    assert _compat.read_trial(reader, sid, best_id) == backend.get_trial(best_id)
    assert _compat.trial_counts(reader) == _compat.trial_counts(backend)
    reader.engine.dispose()
