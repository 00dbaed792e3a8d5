"""The trial store: any SQLAlchemy URL, SQLite by default, PostgreSQL for many workers."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from tuner.errors import StorageError

if TYPE_CHECKING:
    import optuna

__all__ = ["DEFAULT_STORAGE", "resolve_storage_url", "mask_url", "open_storage", "sqlite_path"]

DEFAULT_STORAGE = "sqlite:///storage/tuner.db"
#: Seconds between trial heartbeats, and after how long without one a running trial counts as dead.
HEARTBEAT_INTERVAL = 30
GRACE_PERIOD = 120


def resolve_storage_url(url: str | None = None) -> str:
    """``url``, else ``$TUNER_STORAGE``, else the default SQLite file (relative to the working dir)."""
    return url or os.environ.get("TUNER_STORAGE") or DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and error messages)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def sqlite_path(url: str) -> Path | None:
    """The database file of an ``sqlite:///`` URL (None for other stores and in-memory SQLite)."""
    match = re.match(r"sqlite:///(?!:memory:)(.+)", url)
    return Path(match.group(1)) if match else None


def open_storage(url: str | None = None, *, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage on ``url`` (created if needed), with heartbeats for running trials.

    A trial whose worker stops sending heartbeats for :data:`GRACE_PERIOD` seconds is marked failed
    and re-queued once (Optuna's ``RetryHeartbeatStaleTrialCallback``).
    """
    import warnings

    import optuna
    import sqlalchemy.exc
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    url = resolve_storage_url(url)
    engine_kwargs: dict = {}
    sqlite_file = sqlite_path(url)
    if sqlite_file is not None:
        try:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot create the folder of the SQLite store {sqlite_file}: {error}") from None
        engine_kwargs["connect_args"] = {"timeout": 60}  # several local workers wait for the write lock
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings():  # heartbeats are 'experimental' in Optuna, stable for years
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            options: dict = {}
            if heartbeat:
                options = {
                    "heartbeat_interval": HEARTBEAT_INTERVAL,
                    "grace_period": GRACE_PERIOD,
                    "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(
                        max_retry=1, inherit_intermediate_values=True
                    ),
                }
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **options)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, OSError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StorageError(
            f"cannot open the trial store {mask_url(url)}: {mask_url(detail)}. Check the URL "
            "(sqlite:///path/to.db, postgresql://user:password@host:5432/db), that the server is "
            "running and reachable, and that the database exists and is writable."
        ) from None
