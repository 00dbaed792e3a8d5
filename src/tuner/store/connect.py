"""Opening a trial store: any SQLAlchemy URL, SQLite by default, PostgreSQL for many workers.

Resolving the URL (argument, ``$TUNER_STORAGE``, default), refusing one whose driver is missing, opening
Optuna's RDB storage with heartbeats (tuner's :class:`~tuner.store.queue.QueueStorage`), or the bare SQL
engine for read-only commands (:func:`open_reader`), and turning store failures into one line that names
the (masked) URL and what to do.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tuner.errors import StorageError
from tuner.quiet import experimental

if TYPE_CHECKING:
    import optuna

    from tuner.store.sql import StoreReader

__all__ = [
    "DEFAULT_STORAGE",
    "resolve_storage_url",
    "mask_url",
    "open_storage",
    "open_reader",
    "load_existing_study",
    "check_driver",
    "sqlite_path",
    "store_errors",
    "heartbeat_settings",
    "store_patience",
]

T = TypeVar("T")

DEFAULT_STORAGE = "sqlite:///storage/tuner.db"
#: Seconds between trial heartbeats, and after how long without one a running trial counts as dead
#: (overridable with $TUNER_HEARTBEAT_INTERVAL and $TUNER_HEARTBEAT_GRACE).
HEARTBEAT_INTERVAL = 30
GRACE_PERIOD = 120
#: How long (seconds) a worker's store calls wait for a store that went away before the worker stops
#: (overridable with $TUNER_STORE_PATIENCE; 0: not at all). See :mod:`tuner.store.retry`.
STORE_PATIENCE = 300


def resolve_storage_url(url: str | None = None) -> str:
    """``url``, else ``$TUNER_STORAGE``, else the default SQLite file (relative to the working dir)."""
    return url or os.environ.get("TUNER_STORAGE") or DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and error messages)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def sqlite_path(url: str) -> Path | None:
    """The database file of an ``sqlite:///`` URL (None for other stores and in-memory SQLite), also of
    the URI form ``sqlite:///file:path?mode=ro&uri=true``."""
    match = re.match(r"sqlite:///(?!:memory:)(?:file:)?([^?]+)", url)
    return Path(match.group(1)) if match else None


def heartbeat_settings() -> tuple[int, int]:
    """``(interval, grace period)`` in seconds: the defaults, or ``$TUNER_HEARTBEAT_INTERVAL`` / ``_GRACE``."""
    values = []
    for name, default in (("TUNER_HEARTBEAT_INTERVAL", HEARTBEAT_INTERVAL), ("TUNER_HEARTBEAT_GRACE", GRACE_PERIOD)):
        raw = os.environ.get(name, "").strip()
        try:
            value = int(raw) if raw else default
        except ValueError:
            raise StorageError(f"${name} must be a whole number of seconds, got {raw!r}.") from None
        if value < 1:
            raise StorageError(f"${name} must be at least 1 second, got {value}.")
        values.append(value)
    interval, grace = values
    if grace <= interval:
        raise StorageError(
            f"the heartbeat grace period ({grace} s) must be longer than the heartbeat interval ({interval} s): "
            "set $TUNER_HEARTBEAT_GRACE to a few intervals."
        )
    return interval, grace


def store_patience() -> float:
    """Seconds a store call waits for a store that went away (:data:`STORE_PATIENCE`, or $TUNER_STORE_PATIENCE)."""
    raw = os.environ.get("TUNER_STORE_PATIENCE", "").strip()
    try:
        value = float(raw) if raw else float(STORE_PATIENCE)
    except ValueError:
        raise StorageError(f"$TUNER_STORE_PATIENCE must be a number of seconds, got {raw!r}.") from None
    if not 0 <= value < float("inf"):
        raise StorageError(f"$TUNER_STORE_PATIENCE must be 0 or more seconds, got {raw!r}.")
    return value


def open_storage(url: str | None = None, *, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage on ``url`` (created if needed), with heartbeats for running trials.

    Once open, its calls ride out an outage of the store for :func:`store_patience` seconds (a server
    restarting, a network blip: :mod:`tuner.store.retry`); opening it does not wait (a store that cannot be
    reached now is most often a wrong URL, and says so at once).

    A trial whose worker stops sending heartbeats for the grace period (:func:`heartbeat_settings`) is
    marked failed and re-queued, up to :data:`~tuner.store.queue.MAX_RETRY` times, by the next worker that
    starts a trial (Optuna's ``RetryHeartbeatStaleTrialCallback``): the retry keeps the trial's parameters, epoch
    records and checkpoint, and resumes after its last finished epoch.
    """
    import optuna
    import sqlalchemy.exc

    from tuner.store.queue import QueueStorage, retry_callback

    url = resolve_storage_url(url)
    check_driver(url)
    sqlite_file = sqlite_path(url)
    if sqlite_file is not None:
        try:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot create the folder of the SQLite store {sqlite_file}: {error}") from None
    engine_kwargs = _engine_kwargs(url)
    patience = store_patience()
    try:
        with experimental():  # heartbeats
            options: dict = {}
            if heartbeat:
                interval, grace = heartbeat_settings()
                options = {
                    "heartbeat_interval": interval,
                    "grace_period": grace,
                    "heartbeat_stale_trial_callback": retry_callback(),
                }
            options.update(engine_kwargs=engine_kwargs, patience=patience, label=mask_url(url))
            return _create_tables_once(lambda: QueueStorage(url, **options))
    except (
        sqlalchemy.exc.SQLAlchemyError,
        optuna.exceptions.StorageInternalError,
        ImportError,
        ValueError,
        OSError,
    ) as error:
        raise StorageError(
            f"cannot open the trial store {mask_url(url)}: {_first_line(error)}. Check the URL "
            "(sqlite:///path/to.db, postgresql://user:password@host:5432/db), that the server is "
            "running and reachable, and that the database exists and is writable."
        ) from None


def _engine_kwargs(url: str) -> dict:
    if sqlite_path(url) is not None:
        return {"connect_args": {"timeout": 60}}  # several local workers wait for the write lock
    kwargs: dict = {"pool_pre_ping": True}
    if url.startswith(("postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://")):
        # a server that does not answer (a network partition) fails a connection in 10 s, not the system's
        # minutes, so that an outage is retried (tuner.store.retry) instead of hanging a call
        kwargs["connect_args"] = {"connect_timeout": 10}
    return kwargs


def open_reader(url: str | None = None) -> StoreReader | None:
    """The store's SQL engine alone (:class:`tuner.store.sql.StoreReader`), for a read-only command's few
    queries; None where there is nothing to read yet (a SQLite file that does not exist). A caller falls back
    to :func:`open_storage` when a query fails: its errors are the ones users get."""
    from tuner.store.sql import StoreReader

    url = resolve_storage_url(url)
    check_driver(url)
    sqlite_file = sqlite_path(url)
    if sqlite_file is not None and not sqlite_file.is_file():
        return None
    return StoreReader(url, _engine_kwargs(url))


#: SQLAlchemy driver -> the package that provides it
_DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "mysqldb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysqlconnector": "mysql-connector-python",
    "oracledb": "oracledb",
    "pyodbc": "pyodbc",
}


def check_driver(url: str) -> None:
    """Refuse a URL whose database driver is not installed, naming the package that provides it.

    A plain ``postgresql://`` URL uses psycopg (3), which tuner installs (SQLAlchemy 2.1 picks it);
    ``postgresql+psycopg2://`` needs ``psycopg2-binary``.
    """
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        driver = parsed.get_driver_name()
        dialect = parsed.get_dialect()
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as error:
        raise StorageError(
            f"not a store URL: {mask_url(url)} ({_first_line(error)}). Use sqlite:///path/to.db or "
            "postgresql://user:password@host:5432/db."
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as error:
        package = _DRIVER_PACKAGES.get(driver, driver)
        module = getattr(error, "name", None) or driver
        plain = f" (or use the plain form {parsed.get_backend_name()}://..., whose driver tuner installs)"
        hint = plain if parsed.get_backend_name() == "postgresql" and driver != "psycopg" else ""
        raise StorageError(
            f"the store {mask_url(url)} needs the database driver '{driver}' (Python module '{module}'), which "
            f"is not installed: pip install '{package}'{hint}."
        ) from None


def load_existing_study(study_name: str, storage: str | None = None) -> optuna.Study:
    """``study_name`` from the store (``storage``, else ``$TUNER_STORAGE``, else the default SQLite file),
    opened for reading (no heartbeats). An unknown name is a :class:`~tuner.errors.ConfigError` naming the
    store (password masked) and listing the studies there."""
    import optuna

    from tuner.errors import ConfigError

    url = resolve_storage_url(storage)
    store = open_storage(url, heartbeat=False)
    try:
        return optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        from tuner.store.lock import is_old_lock_study
        from tuner.store.sql import study_ids

        names = [name for _, name in study_ids(store) if not is_old_lock_study(name)]
        raise ConfigError(
            f"no study '{study_name}' in {mask_url(url)}. Studies there: {', '.join(names) or 'none'}."
        ) from None


def _create_tables_once(open_store: Callable[[], T]) -> T:
    """``open_store()``, tried again when workers starting together on a new database race to create
    Optuna's tables (the slower ``CREATE TABLE`` fails: "already exists", or a duplicate key on PostgreSQL)."""
    import random
    import time

    import sqlalchemy.exc

    for attempt in range(5):
        try:
            return open_store()
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.ProgrammingError,
            sqlalchemy.exc.OperationalError,
        ) as error:
            raced = any(
                marker in str(error) for marker in ("already exists", "duplicate key", "UNIQUE constraint failed")
            )
            if not raced or attempt == 4:
                raise
            time.sleep(random.uniform(0.2, 1.0))  # the other worker's tables are there by then
    raise AssertionError("unreachable")


def _first_line(error: BaseException) -> str:
    cause = error.__cause__ if error.__cause__ is not None and "during the commit" in str(error) else error
    text = str(getattr(cause, "orig", None) or cause).strip()
    return mask_url(text.splitlines()[0]) if text else type(cause).__name__


_READ_ONLY = ("readonly database", "read-only", "read only", "permission denied", "insufficient privilege")


@contextlib.contextmanager
def store_errors(url: str, doing: str) -> Iterator[None]:
    """Turn a store failure while ``doing`` something into a :class:`StorageError` naming the (masked) URL.

    A read-only store (a SQLite file opened ``?mode=ro``, a PostgreSQL role without INSERT/UPDATE)
    and a server that went away each get their own advice. Trials already in the store are never
    touched by a failed write.
    """
    import optuna
    import sqlalchemy.exc

    try:
        yield
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
        detail = _first_line(error)
        if any(marker in detail.lower() for marker in _READ_ONLY):
            advice = (
                "The store is read-only for this user. `tuner report`, `tuner export`, `tuner studies` and "
                "optuna-dashboard only read it; to run trials, give a writable store (--storage URL / "
                "$TUNER_STORAGE), or on PostgreSQL a role with INSERT, UPDATE and DELETE on optuna's tables"
            )
        else:
            advice = "Check that the server is running and reachable, then run the same command again: it resumes"
        raise StorageError(f"the trial store {mask_url(url)} failed while {doing}: {detail}. {advice}.") from None
