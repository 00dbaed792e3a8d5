"""Riding out a store outage: a worker's store calls wait for a database that went away, for a bounded time.

A database server that restarts (``pg_ctl restart``, a failover, a network blip) drops every connection.
Every call a worker makes to the store (ask, tell, reports and pruning, records, heartbeats, the queue, the
lock) goes through :class:`RetryingStorage`, tuner's Optuna RDB storage, which tries it again while the
error is a lost connection (:func:`is_transient`), backing off from 0.5 s to 5 s, until the store has been
unreachable for the patience (``$TUNER_STORE_PATIENCE``, 300 s by default:
:func:`tuner.store.connect.store_patience`). Past it the call raises :class:`StoreUnreachable`: one line that
names the store and what to do. Any other error (a bad value, a permission, a constraint) is not retried.

Each process logs one warning when an outage starts and one line when it ends, however many calls and threads
waited. Calls that are not safe to repeat are checked instead: a trial whose creation may have committed
before the connection dropped is found by the token it was created with (not created twice), a state change
that may have committed is read back, and a trial taken from the queue whose claim is in doubt gets one
heartbeat, so that it is retried after the grace period instead of staying RUNNING for ever.

The heartbeat (Optuna's thread calls :meth:`RetryingStorage.record_heartbeat`) never raises: through an
outage it retries for up to one interval, then again at the next beat, and it notes a trial that another
worker marked failed meanwhile (:meth:`RetryingStorage.taken_over`), so that the runner stops it. After an
outage a worker does not mark other workers' trials stale for one grace period: their heartbeats could not
reach the store either, and are given the time to.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tuner.errors import StorageError
from tuner.store.optuna_internals import HookedRDBStorage
from tuner.store.sql import trial_state

if TYPE_CHECKING:
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

__all__ = [
    "RetryingStorage",
    "StoreUnreachable",
    "is_transient",
    "unreachable_in",
    "DEFAULT_PATIENCE",
    "RETRIED_METHODS",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: How long (seconds) a worker waits for a store that went away before it stops.
DEFAULT_PATIENCE = 300.0
FIRST_DELAY = 0.5
MAX_DELAY = 5.0
#: Connection failures that waiting does not cure: retrying them would only delay the error.
_NOT_TRANSIENT = (
    "password authentication failed",
    "does not exist",
    "permission denied",
    "no pg_hba.conf entry",
    "read-only",
    "readonly",
)


class StoreUnreachable(StorageError):
    """The store has been unreachable for longer than the worker's patience: the worker stops."""


# -- which errors are an outage ----------------------------------------------------------------------------


def _links(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what lies behind it: its cause, the DBAPI error SQLAlchemy wraps, and (Optuna's
    ``UnboundLocalError`` raised while it handled a store error) the error being handled."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        link = todo.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        wrapped = getattr(link, "orig", None)  # a SQLAlchemy error's DBAPI error
        todo += [link.__cause__, wrapped if isinstance(wrapped, BaseException) else None]
        if isinstance(link, UnboundLocalError):
            todo.append(link.__context__)


def _is_driver_connection_error(error: BaseException) -> bool:
    """A psycopg (3 or 2) ``OperationalError`` or ``InterfaceError``: the connection failed or was lost."""
    module = type(error).__module__.split(".")[0]
    if module not in ("psycopg", "psycopg2"):
        return False
    return any(kind.__name__ in ("OperationalError", "InterfaceError") for kind in type(error).__mro__)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps: Optuna's ``StorageInternalError``, its ``UnboundLocalError``) is a
    lost or refused connection to the store, which waiting may cure: a SQLAlchemy error flagged as a
    disconnect, or a psycopg ``OperationalError`` / ``InterfaceError`` (a server shutting down, restarting,
    refusing connections). A wrong password, a missing database or a permission is not."""
    import sqlalchemy.exc

    if isinstance(error, StoreUnreachable):
        return False
    for link in _links(error):
        if isinstance(link, StoreUnreachable):
            return False
        if isinstance(link, sqlalchemy.exc.DBAPIError) and link.connection_invalidated:
            return True
        if _is_driver_connection_error(link):
            return not any(marker in str(link).lower() for marker in _NOT_TRANSIENT)
    return False


def unreachable_in(error: BaseException) -> StoreUnreachable | None:
    """The :class:`StoreUnreachable` behind ``error`` (through causes and handled errors), if any: Optuna
    raises its own errors while it handles one."""
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        link = todo.pop()
        if id(link) in seen:
            continue
        seen.add(id(link))
        if isinstance(link, StoreUnreachable):
            return link
        todo += [x for x in (link.__cause__, link.__context__) if x is not None]
    return None


def _first_line(error: BaseException) -> str:
    """What went wrong, in a few words: the driver's own (``Connection refused``, ``server closed the connection
    unexpectedly``, ``terminating connection due to administrator command``) where it is behind ``error``."""
    for link in _links(error):
        if _is_driver_connection_error(link):
            lines = str(link).strip().splitlines()
            return lines[0].rpartition(": ")[2].strip() if lines else type(link).__name__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


# -- one outage, as a process sees it ----------------------------------------------------------------------


class _Outage:
    """When a store (by its masked URL) stopped answering, as seen by every thread of this process: one
    warning when it starts, one line when it ends."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._lock = threading.Lock()
        self.started: float | None = None  # time.monotonic() of the first failure, None while the store answers
        self.ended: float | None = None  # when the last outage ended

    def failed(self, error: BaseException, patience: float) -> float:
        """Note a failed call; returns when the outage started."""
        with self._lock:
            if self.started is None:
                self.started = time.monotonic()
                logger.warning(
                    "lost the trial store %s (%s): retrying for up to %.0f s",
                    self.label,
                    _first_line(error),
                    patience,
                )
            return self.started

    def answered(self) -> None:
        """Note a call that succeeded (ends the outage, if there was one)."""
        if self.started is None:  # the common case, without the lock
            return
        with self._lock:
            if self.started is None:
                return
            lasted, self.started = time.monotonic() - self.started, None
            self.ended = time.monotonic()
        logger.warning("the trial store %s is back after %.1f s", self.label, lasted)

    def ended_within(self, seconds: float) -> bool:
        """Whether the store is unreachable now, or came back less than ``seconds`` ago."""
        ended = self.ended
        return self.started is not None or (ended is not None and time.monotonic() - ended < seconds)


_OUTAGES: dict[str, _Outage] = {}
_OUTAGES_LOCK = threading.Lock()


def _outage_of(label: str) -> _Outage:
    with _OUTAGES_LOCK:
        return _OUTAGES.setdefault(label, _Outage(label))


# -- the storage -------------------------------------------------------------------------------------------


class RetryingStorage(HookedRDBStorage):
    """Optuna's RDB storage whose calls ride out a store outage (see the module docstring).

    ``patience``: seconds a call waits for the store before it raises :class:`StoreUnreachable` (0: never
    waits); ``label``: how the store is named in messages (its URL, password masked).
    """

    def __init__(
        self, url: str, *args: Any, patience: float = DEFAULT_PATIENCE, label: str = "", **kwargs: Any
    ) -> None:
        self.patience = float(patience)
        self.label = label or "(the trial store)"
        self._taken_over: set[int] = set()
        super().__init__(url, *args, **kwargs)

    # -- the retry loop
    def call_store(self, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``method(*args, **kwargs)``, tried again while the store is unreachable (for the patience)."""
        outage = _outage_of(self.label)
        delay = FIRST_DELAY
        while True:
            try:
                result = method(*args, **kwargs)
            except Exception as error:
                if not is_transient(error):
                    raise
                started = outage.failed(error, self.patience)
                left = started + self.patience - time.monotonic()
                if left <= 0:
                    raise self.unreachable(error, time.monotonic() - started) from None
                time.sleep(min(left, delay * random.uniform(0.8, 1.2)))
                delay = min(MAX_DELAY, delay * 2)
                continue
            outage.answered()
            return result

    def unreachable(self, error: BaseException, waited: float) -> StoreUnreachable:
        return StoreUnreachable(
            f"the trial store {self.label} has been unreachable for {waited:.0f} s ({_first_line(error)}), so this "
            "worker stops. Check that the database server is running and reachable from this machine, then run "
            "the same command again: a trial left running is retried from its last finished epoch once its "
            "heartbeat is older than the grace period. $TUNER_STORE_PATIENCE (now "
            f"{self.patience:.0f} s) sets how long a worker waits for the store."
        )

    def _retried_once(self, method: Callable[..., T], settle: Callable[[BaseException], T]) -> T:
        """``method()`` through :meth:`call_store`; when an attempt after a lost connection fails,
        ``settle(error)`` decides (the first attempt may have committed): it returns the result, or raises."""
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            try:
                return method()
            except Exception as error:
                if attempts == 1 or is_transient(error):
                    raise
                return settle(error)

        return self.call_store(attempt)

    # -- writes that are not safe to repeat, checked
    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        """Optuna's state change, whose retry is checked: a change that committed before the connection
        dropped reads back as done; a trial taken from the queue (RUNNING) whose claim is in doubt gets a
        heartbeat, so that it cannot stay RUNNING unseen (the grace period then retries it)."""
        import optuna

        tried = 0

        def attempt() -> bool:
            nonlocal tried
            tried += 1
            try:
                return super(RetryingStorage, self).set_trial_state_values(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if tried > 1 and self._holds(trial_id, state, values):
                    return True
                raise

        changed = self.call_store(attempt)
        if not changed and tried > 1 and state.name == "RUNNING" and self.heartbeat_interval is not None:
            self.call_store(super().record_heartbeat, trial_id)
        return changed

    def _holds(self, trial_id: int, state: TrialState, values: Sequence[float] | None) -> bool:
        stored = super().get_trial(trial_id)
        if stored.state != state:
            return False
        return values is None or list(stored.values or []) == [float(v) for v in values]

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        import optuna

        def settle(error: BaseException) -> int:
            if isinstance(error, optuna.exceptions.DuplicatedStudyError) and study_name is not None:
                return super(RetryingStorage, self).get_study_id_from_name(study_name)  # created by the first try
            raise error

        return self._retried_once(lambda: super(RetryingStorage, self).create_new_study(directions, study_name), settle)

    def delete_study(self, study_id: int) -> None:
        def settle(error: BaseException) -> None:
            if not isinstance(error, KeyError):  # gone: deleted by the first try
                raise error

        self._retried_once(lambda: super(RetryingStorage, self).delete_study(study_id), settle)

    # -- the heartbeat
    def record_heartbeat(self, trial_id: int) -> None:
        """Beat for ``trial_id``, as Optuna's heartbeat thread asks every interval; never raises, so the thread
        lives through an outage (retrying for up to one interval, then at the next beat). A trial found finished
        while it beats was marked failed by another worker: :meth:`taken_over` says so."""
        outage = _outage_of(self.label)
        deadline = time.monotonic() + float(self.heartbeat_interval or 0)
        delay = FIRST_DELAY
        while True:
            try:
                super().record_heartbeat(trial_id)
                state = trial_state(self, trial_id)
            except Exception as error:
                if not is_transient(error):
                    logger.warning("trial heartbeat failed (%s); trying again at the next beat", _first_line(error))
                    return
                outage.failed(error, self.patience)
                if time.monotonic() + delay > deadline:
                    return
                time.sleep(delay)
                delay = min(MAX_DELAY, delay * 2)
                continue
            outage.answered()
            if state is not None and state.is_finished():
                self._taken_over.add(trial_id)
            return

    def taken_over(self, trial_id: int) -> bool:
        """Whether a heartbeat found ``trial_id`` finished while its worker still ran it (another worker marked
        it failed: no heartbeat reached the store for the grace period)."""
        return trial_id in self._taken_over

    def may_fail_stale_trials(self) -> bool:
        """Not while the store is unreachable, nor for one grace period after it came back: the running trials'
        own heartbeats could not reach it either, and are on their way."""
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        return not _outage_of(self.label).ended_within(grace)


#: Optuna's storage methods retried as they are: reads, and writes that are upserts (repeating one after a
#: commit changes nothing). The others are checked (above, and the private entry points in
#: :class:`tuner.store.optuna_internals.HookedRDBStorage`), delegate to these, or do not touch the database.
RETRIED_METHODS = (
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "get_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
)


def _retried(name: str) -> Callable[..., Any]:
    def method(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return self.call_store(getattr(super(RetryingStorage, self), name), *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Optuna's ``{name}``, retried while the store is unreachable."
    return method


for _name in RETRIED_METHODS:
    setattr(RetryingStorage, _name, _retried(_name))
