"""The trial store: everything tuner keeps, in Optuna's own tables and an artifact folder.

- :mod:`~tuner.store.connect`: opening a store URL (SQLite, PostgreSQL, any SQLAlchemy URL), store errors
- :mod:`~tuner.store.records`: the record layout, the one writer and reader of what tuner stores
- :mod:`~tuner.store.queue`: the exact trial budget shared by every worker, retries of dead trials
- :mod:`~tuner.store.retry`: a worker's store calls riding out an outage of the database
- :mod:`~tuner.store.lock`: a lock on a study across workers and machines
- :mod:`~tuner.store.sql`, :mod:`~tuner.store.queries`: reads in bulk and the questions asked of a study
- :mod:`~tuner.store.artifacts`, :mod:`~tuner.store.resolver`: checkpoints, and ``study:NAME``
- :mod:`~tuner.store.optuna_internals`: every use of Optuna's private API

Only the light URL helpers are imported here (``tuner --help`` stays instant); import the others from
their modules.
"""

from tuner.store.connect import (
    DEFAULT_STORAGE,
    load_existing_study,
    mask_url,
    open_reader,
    open_storage,
    resolve_storage_url,
    store_errors,
)

__all__ = [
    "DEFAULT_STORAGE",
    "resolve_storage_url",
    "mask_url",
    "open_storage",
    "open_reader",
    "load_existing_study",
    "store_errors",
]
