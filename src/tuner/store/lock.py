"""A lock on a study shared by every worker and machine using the store: one row of Optuna's table of study
system attributes, used as an atomic register."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from tuner.store import optuna_internals as internals

if TYPE_CHECKING:
    import optuna

__all__ = ["study_lock", "StudyAttrRow", "LOCK_STALE_S", "is_old_lock_study"]

logger = logging.getLogger(__name__)

#: Stores written before the lock was a study attribute hold one study per lock, named ``STUDY::lock:WHAT``;
#: listings skip them (nothing else needs them, and they are harmless to keep).
_OLD_LOCK_STUDY = "::lock:"


def is_old_lock_study(name: str) -> bool:
    """Whether the study ``name`` is a lock of an older tuner (one study per lock), not a study of trials."""
    return _OLD_LOCK_STUDY in name


class StudyAttrRow:
    """One row of Optuna's ``study_system_attributes`` table, used as an atomic register.

    Every operation is one SQL statement, so it is atomic in every database Optuna supports: the table's
    unique constraint on ``(study_id, key)`` makes :meth:`insert` fail for all but one of several
    workers, and :meth:`replace` / :meth:`delete` act only while the row still holds the value the caller
    read (compare-and-swap). ``optuna.Study.set_system_attr`` reads then writes, so it cannot do this.
    Values are JSON text, as Optuna stores them (the row reads back through the storage API too).

    Through tuner's store each operation rides out an outage (:mod:`tuner.store.retry`); one tried again after
    a lost connection is checked, since the first try may have committed: an insert or a replace that finds the
    row holding its own value, a delete that finds the row gone, succeeded.
    """

    def __init__(self, study: optuna.Study, key: str) -> None:
        backend = internals.sql_backend_of(study)
        if backend is None:
            kind = type(internals.backend_of(study)).__name__
            raise TypeError(f"a study lock needs an SQL store (RDBStorage), not {kind}")
        import sqlalchemy as sa

        self._engine = backend.engine
        self._backend = backend
        self._study_id = internals.study_id(study)
        self._key = key
        self._table = sa.table(
            internals.STUDY_SYSTEM_ATTRS_TABLE, sa.column("study_id"), sa.column("key"), sa.column("value_json")
        )

    def _holding(self, value: str | None = None) -> Any:
        """The SQL condition selecting this row (holding ``value``, if given)."""
        table = self._table
        here = (table.c.study_id == self._study_id) & (table.c.key == self._key)
        return here if value is None else here & (table.c.value_json == value)

    def _checked(self, statement: Callable[[], bool], done: Callable[[], bool]) -> bool:
        """``statement()`` through the store's retries; an attempt after a lost connection that fails (False)
        asks ``done()`` whether the first attempt had committed."""
        attempts = 0

        def attempt() -> bool:
            nonlocal attempts
            attempts += 1
            return statement() or (attempts > 1 and done())

        call = getattr(self._backend, "call_store", None)
        return call(attempt) if call is not None else attempt()

    def insert(self, value: str) -> bool:
        """Create the row holding ``value``; False if it exists already."""
        import sqlalchemy as sa

        def statement() -> bool:
            try:
                with self._engine.begin() as connection:
                    connection.execute(
                        sa.insert(self._table).values(study_id=self._study_id, key=self._key, value_json=value)
                    )
            except sa.exc.IntegrityError:
                return False
            return True

        return self._checked(statement, lambda: self._read() == value)

    def read(self) -> str | None:
        """The row's value now, None if there is no row."""
        call = getattr(self._backend, "call_store", None)
        return call(self._read) if call is not None else self._read()

    def _read(self) -> str | None:
        import sqlalchemy as sa

        with self._engine.connect() as connection:
            return connection.execute(sa.select(self._table.c.value_json).where(self._holding())).scalar_one_or_none()

    def replace(self, expected: str, value: str) -> bool:
        """Set the row to ``value`` if it still holds ``expected``."""
        import sqlalchemy as sa

        def statement() -> bool:
            with self._engine.begin() as connection:
                result = connection.execute(
                    sa.update(self._table).where(self._holding(expected)).values(value_json=value)
                )
            return bool(result.rowcount == 1)

        return self._checked(statement, lambda: self._read() == value)

    def delete(self, expected: str) -> bool:
        """Delete the row if it still holds ``expected``."""
        import sqlalchemy as sa

        def statement() -> bool:
            with self._engine.begin() as connection:
                result = connection.execute(sa.delete(self._table).where(self._holding(expected)))
            return bool(result.rowcount == 1)

        return self._checked(statement, lambda: self._read() != expected)


#: A lock whose holder has not refreshed it for this long (seconds, on the waiter's own clock) was left
#: by a worker that died holding it, and is taken over. A live holder refreshes it every sixth of that.
LOCK_STALE_S = 60.0


@contextlib.contextmanager
def study_lock(study: optuna.Study, what: str, stale_after: float | None = None) -> Iterator[None]:
    """Hold a lock named ``what`` on ``study`` across every worker and machine sharing the store.

    The lock is one row of the study's system attributes (``tuner:lock:<what>``) holding its holder's
    host, process, a token and a count. Creating the row is atomic (a unique key), so one worker gets
    it; the others wait. The holder refreshes the row (a new count) every ``stale_after / 6`` seconds
    from a thread, and deletes it when done. A waiter takes the lock over only when the row has not
    changed for ``stale_after`` seconds: its holder died (measured on the waiter's own clock, so the
    clocks of different machines need not agree, and only while the store answers the waiter: after an outage
    it watches the row again from the start). Taking over deletes the row only if it still holds
    what the waiter saw, so two waiters that time out together cannot both win, nor remove a lock
    that a third took in the meantime. ``stale_after`` defaults to :data:`LOCK_STALE_S`.
    """
    stale_after = LOCK_STALE_S if stale_after is None else stale_after
    row = StudyAttrRow(study, f"tuner:lock:{what}")
    holder: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "beat": 0}
    mine = json.dumps(holder)
    seen: str | None = None
    seen_since = looked = time.monotonic()
    while not row.insert(mine):
        current = row.read()
        now = time.monotonic()
        if now - looked > stale_after / 3:
            seen = None  # the store did not answer for a while: the holder could not refresh either; watch again
        looked = now
        if current is None:
            continue  # released in the meantime: try again at once
        if current != seen:
            seen, seen_since = current, now
        elif now - seen_since >= stale_after:
            if row.delete(current):
                logger.warning(
                    "study '%s': took over the lock '%s' of %s, which has not been refreshed for %.0f s "
                    "(its worker died holding it)", study.study_name, what, _who(current), now - seen_since,
                )  # fmt: skip
            seen = None
            continue
        time.sleep(0.05)
    stop = threading.Event()
    state = {"value": mine}

    def refresh() -> None:
        while not stop.wait(stale_after / 6):
            holder["beat"] += 1
            value = json.dumps(holder)
            try:
                replaced = row.replace(state["value"], value)
            except Exception as error:  # past the store's patience: the worker stops at its own next call
                logger.warning("study '%s': could not refresh the lock '%s' (%s)", study.study_name, what, error)
                return
            if not replaced:
                logger.warning("study '%s': the lock '%s' was taken over while held", study.study_name, what)
                return
            state["value"] = value

    refresher = threading.Thread(target=refresh, name=f"tuner-lock-{what}", daemon=True)
    refresher.start()
    try:
        yield
    finally:
        stop.set()
        refresher.join()
        row.delete(state["value"])


def _who(value: str) -> str:
    try:
        holder: Any = json.loads(value)
        return f"{holder['host']} (pid {holder['pid']})"
    except (ValueError, KeyError, TypeError):
        return "an unknown holder"
