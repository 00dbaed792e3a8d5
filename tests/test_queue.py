"""The exact trial budget: the queue every worker takes trials from, filled once under a store-wide lock."""

from __future__ import annotations

import json
import threading
import time

import optuna
import pytest
from test_warm_start import WARM, _entries, _spec

import tuner.store.lock
from tuner.store.connect import open_storage
from tuner.store.lock import StudyAttrRow, study_lock
from tuner.store.queue import QueueEmpty, fill_queue, planned_trials, requeue

Waiting = optuna.trial.TrialState.WAITING


def _together(n: int, url: str, work) -> None:
    """Run ``work(study)`` in ``n`` threads, each with its own store connection, released at once."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            study = optuna.load_study(study_name="ws", storage=open_storage(url, heartbeat=False))
            barrier.wait()
            work(study)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def test_workers_starting_together_enqueue_the_budget_once(storage_url):
    """Four workers reach a new study at the same moment: one enqueues warm start + tickets, exactly."""
    optuna.create_study(study_name="ws", storage=storage_url)
    entries = _entries(_spec(WARM))
    seen: list[tuple[int, int]] = []
    _together(4, storage_url, lambda study: seen.append(fill_queue(study, 5, warm_start=entries)))
    study = optuna.load_study(study_name="ws", storage=storage_url)
    assert [t.state for t in study.trials] == [Waiting] * 5
    assert [t.user_attrs.get("warm_start") for t in study.trials] == [e.name for e in entries] + [None] * 3
    assert sorted(seen) == [(0, 5), (5, 0), (5, 0), (5, 0)]  # exactly one worker saw the new study
    # a worker arriving later, or a re-run, finds the budget planned
    assert fill_queue(study, 5, warm_start=entries) == (5, 0)
    # a larger budget tops the queue up; warm-start entries are not enqueued twice
    assert fill_queue(study, 7, warm_start=entries) == (5, 2) and len(study.trials) == 7
    # --n-trials adds
    assert fill_queue(study, None, add=3) == (7, 3) and planned_trials(study) == 10


def test_the_budget_leaves_out_warm_start_entries_beyond_it(storage_url, caplog):
    study = optuna.create_study(study_name="ws", storage=storage_url)
    entries = _entries(_spec(WARM))
    fill_queue(study, 1, warm_start=entries)
    assert len(study.trials) == 1 and study.trials[0].user_attrs["warm_start"] == entries[0].name
    assert "room for 1 of the 2 warm-start configurations" in caplog.text


def test_asking_beyond_the_queue_raises_instead_of_creating_a_trial(storage_url):
    storage = open_storage(storage_url, heartbeat=False)
    study = optuna.create_study(study_name="ws", storage=storage)
    fill_queue(study, 1)
    storage.queue_only = True
    study.tell(study.ask(), 1.0)  # the ticket
    with pytest.raises(QueueEmpty):
        study.ask()
    assert len(study.trials) == 1


def test_a_retry_replaces_its_trial_in_the_budget(storage_url):
    study = optuna.create_study(study_name="ws", storage=storage_url)
    fill_queue(study, 2)
    trial = study.ask()
    trial.report(0.5, step=0)
    trial.set_user_attr("epoch/000", {"DER": 0.5})
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    retry = requeue(study, study.trials[trial.number], "interrupted")
    assert retry == 2 and planned_trials(study) == 2  # trial 0 is replaced by trial 2
    copy = study.trials[retry]
    assert copy.state == Waiting and copy.system_attrs["failed_trial"] == 0
    assert copy.user_attrs["epoch/000"] == {"DER": 0.5} and copy.intermediate_values == {0: 0.5}
    assert fill_queue(study, 2) == (2, 0)


_DEAD_HOLDER = json.dumps({"host": "gone", "pid": 1, "token": "dead", "beat": 7})


def test_a_lock_left_by_a_dead_worker_is_taken_over(storage_url, caplog):
    study = optuna.create_study(study_name="ws", storage=storage_url)
    row = StudyAttrRow(study, "tuner:lock:queue")
    assert row.insert(_DEAD_HOLDER)  # its holder died holding it: it is never refreshed
    started = time.monotonic()
    with study_lock(study, "queue", stale_after=0.5):
        assert row.read() != _DEAD_HOLDER  # this worker's own record now
    assert time.monotonic() - started >= 0.5  # only once the record had not changed for stale_after
    assert "took over the lock 'queue' of gone (pid 1)" in caplog.text
    assert row.read() is None  # released
    assert optuna.get_all_study_names(storage_url) == ["ws"]  # no study of its own in the store


def test_several_waiters_on_a_stale_lock_enqueue_the_budget_exactly_once(storage_url, monkeypatch, caplog):
    """Six workers wait on a dead worker's lock and time out together: one takes it over and fills the
    queue; the others find the budget planned."""
    monkeypatch.setattr(tuner.store.lock, "LOCK_STALE_S", 0.6)
    study = optuna.create_study(study_name="ws", storage=storage_url)
    assert StudyAttrRow(study, "tuner:lock:queue").insert(_DEAD_HOLDER)
    seen: list[tuple[int, int]] = []
    _together(6, storage_url, lambda study: seen.append(fill_queue(study, 5)))
    assert sorted(seen) == [(0, 5)] + [(5, 0)] * 5
    assert planned_trials(study) == 5 and len(study.get_trials()) == 5
    assert caplog.text.count("took over the lock") == 1


def test_a_live_holder_keeps_its_lock_past_the_stale_period(storage_url, caplog):
    """A holder busy for 4x the stale period refreshes its lock: a waiter gets it only after release."""
    study = optuna.create_study(study_name="ws", storage=storage_url)
    held, released, acquired = threading.Event(), [], []

    def holder() -> None:
        with study_lock(study, "queue", stale_after=0.3):
            held.set()
            time.sleep(1.2)
            released.append(time.monotonic())

    def waiter() -> None:
        held.wait()
        other = optuna.load_study(study_name="ws", storage=open_storage(storage_url, heartbeat=False))
        with study_lock(other, "queue", stale_after=0.3):
            acquired.append(time.monotonic())

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert acquired[0] >= released[0]
    assert "took over" not in caplog.text and "taken over" not in caplog.text


def test_workers_opening_a_new_database_together_all_get_the_store(storage_url):
    """Workers started together on an empty database race to create Optuna's tables: all must succeed."""
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            open_storage(storage_url, heartbeat=False)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def test_an_old_stores_lock_studies_are_not_listed(storage_url):
    """Stores of an older tuner hold one study per lock (``STUDY::lock:WHAT``): `tuner studies` and the "no such
    study" message list the studies of trials only (nothing else reads those studies; they stay harmless)."""
    from click.testing import CliRunner

    from tuner.cli import cli
    from tuner.errors import ConfigError
    from tuner.store.connect import load_existing_study

    storage = open_storage(storage_url, heartbeat=False)
    optuna.create_study(study_name="s", storage=storage)
    optuna.create_study(study_name="s::lock:queue", storage=storage)  # as an older tuner left it
    with pytest.raises(ConfigError) as error:
        load_existing_study("nope", storage_url)
    assert "Studies there: s." in str(error.value)
    listed = CliRunner().invoke(cli, ["studies", "--storage", storage_url])
    assert listed.exit_code == 0, listed.output
    assert "\ns " in listed.output and "::lock:" not in listed.output  # the study 's', first in its row


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_retried(storage_url, monkeypatch):
    """Optuna's stale check sees only trials with a heartbeat: a worker killed between taking a trial and its
    first heartbeat left it RUNNING for ever, and the next worker waited for it without end."""
    import datetime

    monkeypatch.setenv("TUNER_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("TUNER_HEARTBEAT_GRACE", "2")
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="silent", storage=storage)
    study.enqueue_trial({"x": 1.0})
    trial_id = storage.create_new_trial(study._study_id, template_trial=optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING, params={}, distributions={},
    ))  # fmt: skip  # taken by a worker that died at once: no heartbeat, started 10 s ago
    started = datetime.datetime.now() - datetime.timedelta(seconds=10)
    import sqlalchemy as sa

    from tuner.store.optuna_internals import rdb_models

    trials = rdb_models().TrialModel.__table__
    with storage.engine.begin() as connection:
        connection.execute(sa.update(trials).where(trials.c.trial_id == trial_id).values(datetime_start=started))
    optuna.storages.fail_stale_trials(study)
    states = {t._trial_id: t.state for t in study.get_trials(deepcopy=False)}
    assert states[trial_id] == optuna.trial.TrialState.FAIL
    failed = next(t for t in study.get_trials(deepcopy=False) if t._trial_id == trial_id)
    assert "no heartbeat for over 2 s" in failed.user_attrs["fail_reason"]
    assert sum(s == optuna.trial.TrialState.WAITING for s in states.values()) == 2  # the enqueued one and its retry
