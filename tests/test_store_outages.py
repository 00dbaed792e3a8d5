"""A store that goes away mid-study (tuner.store.retry): workers wait for it, the budget stays exact, nothing
is trained twice, a trial another worker took over is stopped, and a store gone for good is one line.

The process tests run real ``tuner run`` workers (synthetic trials, 1 s of sleep per epoch so that a trial
spans the outage) on a PostgreSQL server of their own, restarted or stopped under them. Heartbeats are
shortened (1 s, stale after 3 s), so that every outage here is longer than the grace period. The acceptance
run's 60 s outage is opt-in: ``TUNER_TEST_LONG_OUTAGE=1``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import psycopg
import pytest
import sqlalchemy
from conftest import REPO, local_postgres
from test_workers import Workers, _study_file

from tuner.errors import StorageError
from tuner.quiet import experimental
from tuner.store.connect import open_storage
from tuner.store.queue import claim_retry
from tuner.store.records import CHECKPOINT, epochs_of
from tuner.store.retry import RETRIED_METHODS, RetryingStorage, StoreUnreachable, is_transient, unreachable_in

State = optuna.trial.TrialState
#: how a test server's URL reads in a message (password masked)
STORE = r"postgresql://tuner:\*\*\*@127\.0\.0\.1:\d+/\w+"


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    """A PostgreSQL server of this module's own: its tests restart and stop it."""
    with local_postgres() as local:
        yield local


@pytest.fixture
def url(server: Any) -> Iterator[str]:
    name = f"outage_{uuid.uuid4().hex[:12]}"
    yield server.new_database(name)
    if not (server.root / "data" / "postmaster.pid").exists():  # a test that failed while it was stopped
        server.start_server()
    server.drop_database(name)


# -- which errors are an outage ----------------------------------------------------------------------------


def _lost(message: str = "server closed the connection unexpectedly") -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError(message))


def test_a_lost_connection_is_transient_however_optuna_wraps_it():
    lost = _lost()
    assert is_transient(lost)
    try:  # Optuna's own wrapping: StorageInternalError from the SQLAlchemy error
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from lost
    except optuna.exceptions.StorageInternalError as wrapped:
        assert is_transient(wrapped)
        try:  # and its UnboundLocalError, raised in a `finally` while it handled that error
            raise UnboundLocalError("cannot access local variable 'updated_state'")
        except UnboundLocalError as masked:
            assert is_transient(masked)
    invalidated = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert is_transient(invalidated)
    assert is_transient(psycopg.errors.AdminShutdown("terminating connection due to administrator command"))


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bad value"),
        UnboundLocalError("a bug of its own"),
        _lost('connection failed: FATAL:  password authentication failed for user "tuner"'),
        _lost('connection failed: FATAL:  database "nope" does not exist'),
        sqlalchemy.exc.ProgrammingError("INSERT", {}, psycopg.errors.InsufficientPrivilege("permission denied")),
        sqlalchemy.exc.OperationalError("INSERT", {}, Exception("attempt to write a readonly database")),
        StoreUnreachable("gave up already"),
    ],
    ids=["value", "unbound", "password", "database", "privilege", "sqlite", "unreachable"],
)
def test_other_errors_are_not_retried(error):
    assert not is_transient(error)


def test_the_storage_retries_every_method_that_touches_the_database():
    """Each public method of Optuna's RDB storage is retried as it is, checked, or delegates to one that is: a
    new method in an Optuna upgrade fails here, by name."""
    checked = {"set_trial_state_values", "create_new_study", "delete_study", "record_heartbeat"}
    delegating = {"create_new_trial", "set_trial_param", "get_all_trials", "get_best_trial", "get_n_trials",
                  "get_trial_number_from_id", "get_trial_params"}  # fmt: skip
    untouched = {"remove_session", "upgrade", "get_current_version", "get_head_version", "get_all_versions",
                 "get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "get_failed_trial_callback",
                 "check_trial_is_updatable"}  # fmt: skip
    public = {name for name in dir(optuna.storages.RDBStorage) if not name.startswith("_")}
    assert public == set(RETRIED_METHODS) | checked | delegating | untouched
    for name in (*RETRIED_METHODS, *checked):
        assert name in vars(RetryingStorage), name


# -- one process, its storage ------------------------------------------------------------------------------


def test_calls_wait_for_a_restarting_server_and_log_one_line_each_way(server, url, caplog, monkeypatch):
    monkeypatch.setenv("TUNER_STORE_PATIENCE", "60")
    storage = open_storage(url, heartbeat=False)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    server.stop_server()
    stopped = time.monotonic()
    try:
        import threading

        threading.Timer(2.0, server.start_server).start()
        with caplog.at_level("WARNING", logger="tuner.store.retry"):
            trial.set_user_attr("written", "during the outage")  # waits for the server
            study.tell(trial, 1.0)
    finally:
        time.sleep(max(0.0, 2.5 - (time.monotonic() - stopped)))
    assert time.monotonic() - stopped >= 2.0
    assert study.trials[0].state == State.COMPLETE and study.trials[0].user_attrs["written"] == "during the outage"
    lines = [r.getMessage() for r in caplog.records if r.name == "tuner.store.retry"]
    assert len(lines) == 2 and "\n" not in "".join(lines), lines
    assert lines[0].startswith("lost the trial store postgresql://tuner:***@127.0.0.1:") and "retrying" in lines[0]
    assert re.fullmatch(rf"the trial store {STORE} is back after \d+\.\d s", lines[1])
    assert server.password not in "".join(lines)


def test_past_its_patience_a_call_raises_one_line_naming_the_store(server, url, monkeypatch):
    monkeypatch.setenv("TUNER_STORE_PATIENCE", "2")
    storage = open_storage(url, heartbeat=False)
    study = optuna.create_study(study_name="s", storage=storage)
    server.stop_server()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnreachable) as caught:
            study.set_user_attr("k", 1)
        assert 2 <= time.monotonic() - started < 10
    finally:
        server.start_server()
    message = str(caught.value)
    assert isinstance(caught.value, StorageError) and "\n" not in message and server.password not in message
    assert re.match(rf"the trial store {STORE} has been unreachable for 2 s ", message)
    assert "run the same command again" in message and "$TUNER_STORE_PATIENCE (now 2 s)" in message
    # Optuna's own error raised while it handled ours still leads to it
    try:
        try:
            raise caught.value
        except StoreUnreachable:
            raise UnboundLocalError("cannot access local variable 'updated_state'") from None
    except UnboundLocalError as masked:
        assert unreachable_in(masked) is caught.value


def _drop_after_commit(monkeypatch: pytest.MonkeyPatch, method: str) -> list[int]:
    """Make the next call of Optuna's ``RDBStorage.<method>`` commit, then lose its connection (the reply is
    lost): what a server that goes away at the wrong moment does. Returns the list of calls made."""
    original = getattr(optuna.storages.RDBStorage, method)
    calls: list[int] = []

    def flaky(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        result = original(self, *args, **kwargs)
        if len(calls) == 1:
            raise optuna.exceptions.StorageInternalError("during the commit") from _lost()
        return result

    monkeypatch.setattr(optuna.storages.RDBStorage, method, flaky)
    return calls


def test_a_trial_created_before_its_connection_dropped_is_not_created_twice(url, monkeypatch):
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat=False))
    calls = _drop_after_commit(monkeypatch, "_create_new_trial")
    study.enqueue_trial({"x": 0.5})
    assert len(calls) == 2 and len(study.trials) == 1 and study.trials[0].state == State.WAITING


def test_a_tell_that_committed_before_its_connection_dropped_reads_back_as_done(url, monkeypatch):
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat=False))
    trial = study.ask()
    calls = _drop_after_commit(monkeypatch, "set_trial_state_values")
    study.tell(trial, 0.25)
    assert len(calls) == 2 and [(t.state, t.value) for t in study.trials] == [(State.COMPLETE, 0.25)]


def test_a_trial_is_retried_once_however_many_workers_find_it_failed(url):
    storage = open_storage(url, heartbeat=False)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    study.tell(trial, state=State.FAIL)
    failed = study.trials[0]
    assert claim_retry(study, failed) and not claim_retry(study, failed)
    other = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat=False))
    assert not claim_retry(other, failed)  # another worker, another connection


# -- workers -----------------------------------------------------------------------------------------------

N_TRIALS, EPOCHS = 4, 4


def _synthetic(folder: Path, n_trials: int = N_TRIALS, max_epochs: int = EPOCHS) -> Path:
    return _study_file(
        folder,
        (
            f"name='w', objective='synthetic', search_space={str(REPO / 'search_spaces' / 'synthetic.yaml')!r}, "
            f"n_trials={n_trials}, max_epochs={max_epochs}, "
            "options={'n_train': 256, 'n_val': 64, 'sleep_per_epoch': 1.0}, "
            "pruner=__import__('optuna').pruners.NopPruner()"
        ),
    )


def _mid_trial(first: int = 0) -> Callable[[list[optuna.trial.FrozenTrial]], bool]:
    """Whether a trial numbered ``first`` or later runs and has checkpointed an epoch, with epochs left."""

    def running(trials: list[optuna.trial.FrozenTrial]) -> bool:
        return any(
            t.number >= first
            and t.state == State.RUNNING
            and (t.system_attrs.get(CHECKPOINT) or {}).get("epoch", 9) < 2
            for t in trials
        )

    return running


def _epochs_trained(log: str) -> list[tuple[int, int]]:
    return [(int(n), int(e)) for n, e in re.findall(r"trial (\d+) epoch (\d+)/\d+", log)]


@pytest.mark.parametrize(
    "stopped",
    [
        20,
        pytest.param(
            60,
            marks=pytest.mark.skipif(
                os.environ.get("TUNER_TEST_LONG_OUTAGE") != "1", reason="the acceptance run: TUNER_TEST_LONG_OUTAGE=1"
            ),
        ),
    ],
)
def test_two_workers_ride_out_restarts_and_a_stopped_server_mid_trial(server, url, tmp_path, stopped, capsys):
    """The server restarted (``pg_ctl restart -m fast``) during the first trials, until a worker was caught in a
    store call by one, then stopped for ``stopped`` seconds (longer than the heartbeats' grace period) during the
    next ones: both workers go on, no trial fails, the budget is exact, no epoch is trained twice."""
    pool = Workers(tmp_path, url)
    study_file = _synthetic(tmp_path)
    restarts: list[float] = []
    try:
        first, second = pool.start(study_file), pool.start(study_file)
        pool.wait_for(_mid_trial(), first)
        while len(restarts) < 10 and not any("lost the trial store" in pool.log(i) for i in (0, 1)):
            restarts.append(server.restart())
            time.sleep(0.3)
        pool.wait_for(_mid_trial(first=2), first)
        server.stop_server()
        time.sleep(stopped)
        server.start_server()
        codes = [pool.wait(first), pool.wait(second)]
    finally:
        pool.stop_all()
    logs = [pool.log(0), pool.log(1)]
    assert codes == [0, 0], logs
    trials = pool.trials()
    # the exact budget: no trial failed (no heartbeat went stale, however long the outage), none was retried
    assert [t.state for t in trials] == [State.COMPLETE] * N_TRIALS, [(t.number, t.state, t.user_attrs) for t in trials]
    for trial in trials:  # records continuous, every epoch once
        assert [e["epoch"] for e in epochs_of(trial)] == list(range(EPOCHS))
    trained = [e for log in logs for e in _epochs_trained(log)]
    assert sorted(trained) == sorted(set(trained)) and len(trained) == N_TRIALS * EPOCHS  # none trained twice
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == N_TRIALS
    for log in logs:  # one line when the store went, one when it came back; no traceback, no password
        assert "Traceback" not in log and server.password not in log
        assert log.count("lost the trial store") == log.count("is back after") >= 1
        assert max(float(s) for s in re.findall(r"is back after (\d+\.\d) s", log)) >= stopped - 2
    caught = sum(log.count("lost the trial store") for log in logs) - 2  # the stop's are 2
    assert caught >= 1, f"{len(restarts)} restarts caught no store call"
    with capsys.disabled():
        print(f"\n{len(restarts)} restart(s) of {sum(restarts):.1f} s caught {caught} store call(s); {stopped} s stop")


def test_past_its_patience_a_worker_stops_with_one_line_and_its_trial_stays_resumable(
    server, url, tmp_path, monkeypatch
):
    pool = Workers(tmp_path, url)
    pool.env["TUNER_STORE_PATIENCE"] = "4"
    study_file = _synthetic(tmp_path, n_trials=1, max_epochs=6)
    try:
        first = pool.start(study_file)
        pool.wait_for(_mid_trial(), first)
        server.stop_server()
        try:
            code = pool.wait(first, timeout=60)
        finally:
            server.start_server()
    finally:
        pool.stop_all()
    log = pool.log(0)
    assert code == 2 and "Traceback" not in log and server.password not in log
    error = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and re.match(rf"error: the trial store {STORE} has been unreachable for \d s ", error[0])
    # nothing was written to the trial: it is left running with its checkpoint, and the next worker to look, once
    # its heartbeat is older than the grace period, re-queues it to resume there (tests/test_workers.py)
    [left] = pool.trials()
    assert left.state == State.RUNNING and left.system_attrs[CHECKPOINT]["epoch"] >= 0
    monkeypatch.setenv("TUNER_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("TUNER_HEARTBEAT_GRACE", "3")
    time.sleep(3.5)
    study = optuna.load_study(study_name="w", storage=open_storage(url))
    with experimental():
        optuna.storages.fail_stale_trials(study)
    stopped, retry = study.get_trials()
    assert (stopped.state, retry.state) == (State.FAIL, State.WAITING)
    assert retry.system_attrs[CHECKPOINT] == left.system_attrs[CHECKPOINT]


def test_a_trial_taken_over_by_another_worker_is_stopped_and_retried_once(server, url, tmp_path):
    """The worker running the trial stops answering (SIGSTOP: as if it had lost the store) for longer than the grace
    period; the other, waiting, marks the trial failed, recording why, and runs its retry; the first, back, stops
    the trial without telling or re-queueing it: one retry, the budget exact, the retry's records continuous."""
    pool = Workers(tmp_path, url)
    study_file = _synthetic(tmp_path, n_trials=1, max_epochs=5)
    try:
        workers = [pool.start(study_file), pool.start(study_file)]
        pool.wait_for(_mid_trial(), workers[0])
        ran = 0 if "trial 0 epoch 1/" in pool.log(0) else 1
        running, waiting = workers[ran], workers[1 - ran]
        running.send_signal(signal.SIGSTOP)
        try:
            pool.wait_for(lambda trials: len(trials) == 2 and trials[1].state == State.RUNNING, waiting)
        finally:
            running.send_signal(signal.SIGCONT)
        codes = [pool.wait(running), pool.wait(waiting)]
    finally:
        pool.stop_all()
    assert codes == [0, 0], [pool.log(0), pool.log(1)]
    taken, retry = pool.trials()
    assert (taken.state, retry.state) == (State.FAIL, State.COMPLETE)
    reason = taken.user_attrs["fail_reason"]
    assert re.fullmatch(r"no heartbeat for \d+ s \(grace period 3 s\): its worker was killed or stopped, or lost "
                        r"the store; retried from its last finished epoch", reason), reason  # fmt: skip
    assert retry.user_attrs["resumed_from"]["trial"] == 0 and retry.user_attrs["resumed_from"]["why"] == reason
    assert [e["epoch"] for e in epochs_of(retry)] == list(range(5))
    log = pool.log(ran)
    assert log.count("trial 0 was marked failed by another worker") == 1 and "Traceback" not in log
    assert "re-queued" not in log and "trial 1 epoch" not in log
    assert "trial 0 marked failed: no heartbeat for" in pool.log(1 - ran)
