"""Each use of Optuna's private API (tuner.store.optuna_internals) and of its RDB schema (tuner.store.sql,
tuner.store.queries), checked against the installed version on every store backend: an upgrade that
changes one fails here first, by name."""

from __future__ import annotations

import io
import json
import warnings

import optuna
import pytest

from tuner.quiet import experimental
from tuner.store import optuna_internals as internals
from tuner.store import sql
from tuner.store.connect import open_storage
from tuner.store.lock import StudyAttrRow
from tuner.store.queries import queries_of
from tuner.store.queue import QueueStorage
from tuner.testing.store_builders import insert_trials


@pytest.fixture
def study(storage_url: str) -> optuna.Study:
    return optuna.create_study(study_name="c", storage=open_storage(storage_url, heartbeat=False))


def test_the_storage_under_a_study_and_its_ids(study):
    backend = internals.backend_of(study)
    assert isinstance(backend, optuna.storages.RDBStorage)
    assert internals.storage_of(study).get_study_id_from_name("c") == internals.study_id(study)
    trial = study.ask()
    assert internals.trial_id(trial) == backend.get_trial_id_from_study_id_trial_number(
        internals.study_id(study), trial.number
    )
    frozen = internals.frozen_trial(study, trial)
    assert frozen.number == trial.number and frozen.state == optuna.trial.TrialState.RUNNING
    assert internals.trial_id(frozen) == internals.trial_id(trial)


def test_trial_and_study_system_attributes_round_trip(study):
    trial = study.ask()
    internals.set_trial_system_attr(study, trial, "tuner:x", {"a": [1, 2]})
    assert internals.trial_system_attrs(study, trial)["tuner:x"] == {"a": [1, 2]}
    study.tell(trial, 1.0)
    assert study.trials[0].system_attrs["tuner:x"] == {"a": [1, 2]}  # what FrozenTrial readers see
    internals.set_study_system_attr(study, "tuner:y", [3])
    assert internals.study_system_attrs(study)["tuner:y"] == [3]


def test_study_system_attributes_are_deleted_by_key(study):
    for key in ("dashboard:plot_data:a:0", "dashboard:plot_data:a:1", "dashboard:plot_data:b:0", "keep"):
        internals.set_study_system_attr(study, key, "x")
    removed = queries_of(study).delete_system_attrs_where(lambda key: key.startswith("dashboard:plot_data:a:"))
    assert removed == 2
    assert sorted(internals.study_system_attrs(study)) == ["dashboard:plot_data:b:0", "keep"]


def test_guarded_trial_creation_refuses_only_trials_without_a_template(storage_url):
    class Refusing(internals.HookedRDBStorage):
        def allow_new_trial(self) -> None:
            raise LookupError("no new trials")

    study = optuna.create_study(study_name="g", storage=Refusing(storage_url))
    study.enqueue_trial({"x": 0.5})
    trial = study.ask()  # the enqueued one: created from a template
    assert trial.suggest_float("x", 0, 1) == 0.5
    with pytest.raises(LookupError, match="no new trials"):
        study.ask()  # through Optuna's cache layer (_create_new_trial)
    with pytest.raises(LookupError, match="no new trials"):
        internals.storage_of(study).create_new_trial(internals.study_id(study))  # the public storage API
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))  # a template: allowed
    assert len(study.trials) == 2


def test_a_study_attribute_row_is_an_atomic_register(study):
    row = StudyAttrRow(study, "tuner:lock:x")
    first, second = json.dumps({"who": 1}), json.dumps({"who": 2})
    assert row.read() is None and row.insert(first) and not row.insert(second)
    assert row.read() == first
    assert internals.study_system_attrs(study)["tuner:lock:x"] == {"who": 1}  # Optuna reads the same row
    assert not row.replace(second, first) and row.replace(first, second) and row.read() == second
    assert not row.delete(first) and row.delete(second) and row.read() is None


def test_an_artifact_written_by_tuner_is_listed_under_its_trial(study, tmp_path):
    store = optuna.artifacts.FileSystemArtifactStore(tmp_path)
    trial = study.ask()
    store.write("ckpt-1", io.BytesIO(b"checkpoint"))
    internals.list_artifact(study, trial, "ckpt-1", "trial0-epoch1.ckpt")
    study.tell(trial, 1.0)
    [meta] = optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=internals.storage_of(study))
    assert (meta.artifact_id, meta.filename) == ("ckpt-1", "trial0-epoch1.ckpt")
    assert list(internals.listed_artifacts(study.trials[0].system_attrs)) == ["ckpt-1"]


def test_experimental_silences_optunas_experimental_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with experimental():
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
    first, again = draws(internals.reseeded_optuna_sampler(base, 3)), draws(internals.reseeded_optuna_sampler(base, 3))
    assert first == again and first != draws(internals.reseeded_optuna_sampler(base, 4))


# ----------------------------------------------------------------------------------- trials in bulk


def assorted_trials(study: optuna.Study) -> None:
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
    assorted_trials(study)
    backend = internals.backend_of(study)
    sid = internals.study_id(study)
    orm = optuna.storages.RDBStorage._get_trials  # Optuna's own implementation, bypassing tuner's
    ids = [t._trial_id for t in backend.get_all_trials(sid)]
    cases = [
        (None, set(), -1),
        ((optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING), set(), -1),
        (None, set(), ids[2]),
        (None, {ids[0], ids[3]}, ids[4]),
    ]
    for states, included, above in cases:
        ours = sql.read_trials(backend, sid, states, included, above)
        theirs = orm(backend, sid, states, included, above)
        assert [t.number for t in ours] == [t.number for t in theirs] and ours, (states, included, above)
        assert _same(ours) == _same(theirs)
    assert isinstance(backend, QueueStorage)  # tuner's stores read this way
    assert _same(backend.get_all_trials(sid)) == _same(orm(backend, sid, None, set(), -1))
    with pytest.raises(KeyError):
        sql.read_trials(backend, sid + 1000)


def test_trials_inserted_in_bulk_are_stored_as_add_trials_stores_them(storage_url):
    storage = open_storage(storage_url, heartbeat=False)
    source = optuna.create_study(study_name="source", storage=storage)
    assorted_trials(source)
    finished = [t for t in source.get_trials() if t.state.is_finished()]
    added = optuna.create_study(study_name="added", storage=storage)
    added.add_trials(finished)
    inserted = optuna.create_study(study_name="inserted", storage=storage)
    inserted.add_trial(finished[0])  # numbered after the trials a study already has
    assert insert_trials(inserted, finished) == len(finished)
    orm = optuna.storages.RDBStorage._get_trials
    backend = internals.backend_of(added)

    def stored(study: optuna.Study, skip: int = 0) -> list[str]:
        trials = orm(backend, internals.study_id(study), None, set(), -1)[skip:]
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
    backend = internals.backend_of(study)
    sid = internals.study_id(study)
    assert queries_of(study).count_trials() == {"COMPLETE": 5, "PRUNED": 1, "WAITING": 2}
    assert sql.trial_counts(backend) == {sid: {"COMPLETE": 5, "PRUNED": 1, "WAITING": 2}}
    assert (sid, "c") in sql.study_ids(backend)
    assert [queries_of(study).count_better(v) for v in (float("-inf"), 1.0, 2.0, 2.5, 3.0, float("inf"))] == [
        0, 1, 2, 4, 4, 5
    ]  # fmt: skip
    assert queries_of(study).count_better(2.5, below=3) == 2  # trials 0-2 only: 1.0 and 2.0 beat it
    ranked = [queries_of(study).nth_best_trial(n) for n in range(6)]
    assert [r[0] if r else None for r in ranked] == [3, 1, 2, 4, 0, None]  # ties by number
    assert all(r is None or r[1] == internals.trial_id(study.trials[r[0]]) for r in ranked)
    with experimental():
        expected = {t.number: optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(t) for t in study.trials}
    assert queries_of(study).retry_histories() == {n: h for n, h in expected.items() if h} == {7: [1, 5]}
    assert sql.trial_system_attr(backend, sid, "failed_trial") == {7: 1}


def test_optunas_cache_layer_wraps_a_store():
    cached = internals.cached(open_storage("sqlite:///:memory:", heartbeat=False))
    assert isinstance(cached, optuna.storages._CachedStorage)
    study = optuna.create_study(storage=cached)
    study.tell(study.ask(), 1.0)
    assert len(study.trials) == 1


def test_a_store_reader_reads_what_optunas_storage_reads(study):
    for value in (2.0, 1.0, 3.0):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"u": value}))
    study.set_user_attr("metric", "DER")
    backend = internals.backend_of(study)
    reader = sql.StoreReader(backend.url)
    sid = internals.study_id(study)
    assert sql.study_id_of(reader, "c") == sid and sql.study_id_of(reader, "nope") is None
    assert sql.study_directions(reader, sid) == backend.get_study_directions(sid)
    assert sql.study_user_attrs(reader, sid) == backend.get_study_user_attrs(sid)
    number, best_id = sql.ranked_trial(reader, sid, maximize=False)
    assert (number, best_id) == (study.best_trial.number, study.best_trial._trial_id)
    assert sql.read_trial(reader, sid, best_id) == backend.get_trial(best_id)
    assert sql.trial_counts(reader) == sql.trial_counts(backend)
    reader.engine.dispose()
