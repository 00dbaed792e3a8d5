"""Every use of Optuna's private API, in one place.

tuner needs a few things Optuna's public API does not offer: trial and study *system* attributes (Optuna 3+
has no public setter), the storage under a study and the ids of studies and trials, Optuna's RDB schema
(:func:`rdb_models`, what :mod:`tuner.store.sql` reads in bulk), the hooks where its RDB storage reads
trials, creates a trial, finds stale trials and makes the calls of its cache layer (:class:`HookedRDBStorage`:
what :mod:`tuner.store.retry` retries through an outage), its cache layer, the key under which an artifact is
listed, a trial's own validation, and the random state of its samplers. Each is a small function here with
a test in ``tests/test_optuna_internals.py``, so an upgrade of Optuna that changes one fails there first,
by name, instead of deep inside a study. pyproject.toml bounds Optuna's version.

(optuna-dashboard's private API has its own module: :mod:`tuner.reports.dashboard_internals`.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TypeVar

from optuna.storages import RDBStorage

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts._protocol import ArtifactStore as ArtifactStore
    from optuna.trial import FrozenTrial

__all__ = [
    "storage_of",
    "backend_of",
    "sql_backend_of",
    "cached",
    "study_id",
    "trial_id",
    "frozen_trial",
    "trial_system_attrs",
    "set_trial_system_attr",
    "study_system_attrs",
    "set_study_system_attr",
    "rdb_models",
    "validate_trial",
    "HookedRDBStorage",
    "RETRY_HISTORY",
    "STUDY_SYSTEM_ATTRS_TABLE",
    "artifact_meta_key",
    "list_artifact",
    "listed_artifacts",
    "reseeded_optuna_sampler",
    "study_with_trials",
    "ArtifactStore",
]

_T = TypeVar("_T")

#: Optuna's trial system-attribute prefix for artifact metadata (what optuna-dashboard lists under a trial)
_ARTIFACT_META_PREFIX = "artifacts:"
#: the trial system attribute where Optuna's RetryHeartbeatStaleTrialCallback lists the trials a retry retries
RETRY_HISTORY = "retry_history"
#: the table of study system attributes in Optuna's RDB schema
STUDY_SYSTEM_ATTRS_TABLE = "study_system_attributes"


# -- the storage under a study, and ids ------------------------------------------------------------------


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes (with Optuna's cache layer, if any)."""
    return study._storage


def backend_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage under Optuna's cache layer (an ``RDBStorage`` for tuner's stores)."""
    storage = storage_of(study)
    return getattr(storage, "_backend", storage)


def sql_backend_of(study: optuna.Study) -> RDBStorage | None:
    """The study's RDB storage (under Optuna's cache layer), None for any other storage (in memory, journal)."""
    backend = backend_of(study)
    return backend if isinstance(backend, RDBStorage) else None


def cached(storage: RDBStorage) -> optuna.storages.BaseStorage:
    """``storage`` behind Optuna's cache layer (``optuna.storages._CachedStorage``, what ``optuna.load_study``
    wraps an RDB storage in): finished trials are read once, later reads fetch only new and unfinished ones."""
    from optuna.storages import _CachedStorage

    return _CachedStorage(storage)


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage id of a live or finished trial (not its number)."""
    return trial._trial_id


def frozen_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> FrozenTrial:
    """The trial as stored now (a live ``optuna.Trial`` has no public way to its state and system attrs)."""
    return storage_of(study).get_trial(trial_id(trial))


def trial_system_attrs(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> dict[str, Any]:
    """The trial's system attributes as stored now (a live ``optuna.Trial`` has no public getter)."""
    return storage_of(study).get_trial_system_attrs(trial_id(trial))


def set_trial_system_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: Any) -> None:
    storage_of(study).set_trial_system_attr(trial_id(trial), key, value)


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    return storage_of(study).get_study_system_attrs(study_id(study))


def set_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    storage_of(study).set_study_system_attr(study_id(study), key, value)


# -- Optuna's RDB schema and storage hooks ----------------------------------------------------------------


def rdb_models() -> Any:
    """Optuna's RDB models (their ``__table__`` are the schema tuner reads and writes in bulk)."""
    from optuna.storages._rdb import models

    return models


def validate_trial(trial: FrozenTrial) -> None:
    """Check a finished trial as ``study.add_trial`` does before storing it."""
    trial._validate()


class HookedRDBStorage(RDBStorage):
    """Optuna's RDB storage with hooks on its private methods, for :class:`tuner.store.retry.RetryingStorage` and
    :class:`tuner.store.queue.QueueStorage`:

    * :meth:`read_trials` answers the trial reads of Optuna's cache layer and of ``get_all_trials``
      (``RDBStorage._get_trials``): same arguments, same FrozenTrials; the default is Optuna's own.
    * :meth:`allow_new_trial` is asked before a trial is created *without* a template: ``study.ask()`` first
      takes a waiting (enqueued) trial, and only when there is none does Optuna create a fresh one, through
      ``_create_new_trial`` (its cache layer) or ``create_new_trial`` (the public API); both are guarded.
      Trials created from a template (``enqueue_trial``, ``add_trial``, the heartbeat retry) are never refused.
    * :meth:`stale_trials` answers Optuna's question which running trials have no recent heartbeat
      (``RDBStorage._get_stale_trial_ids``, asked by ``optuna.storages.fail_stale_trials``), when
      :meth:`may_fail_stale_trials` allows it.
    * :meth:`call_store` runs every call of the private methods Optuna's cache layer uses (``_get_trials``,
      ``_create_new_trial``, ``_set_trial_param``, ``_get_best_trial_id``, ``_get_stale_trial_ids``); the
      default calls it. Creating a trial is not safe to repeat: on PostgreSQL each attempt notes its
      transaction, and an attempt after one whose connection dropped asks the server whether that one
      committed (``txid_status``), returning the trial it created instead of creating a second.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import threading

        self._creating = threading.local()  # this thread's trial creation: its last attempt's transaction
        super().__init__(*args, **kwargs)

    def read_trials(
        self, study_id: int, states: Any, included_trial_ids: set[int], trial_id_greater_than: int
    ) -> list[FrozenTrial]:
        """The study's trials, as ``RDBStorage._get_trials`` reads them (the default)."""
        return super()._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)

    def allow_new_trial(self) -> None:
        """Raise to refuse a trial without a template (the default allows it)."""

    def stale_trials(self, study_id: int) -> list[int]:
        """Ids of the study's running trials whose heartbeat is older than the grace period (Optuna's answer)."""
        return super()._get_stale_trial_ids(study_id)

    def call_store(self, method: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """Run one store call (the default: at once, as it is)."""
        return method(*args, **kwargs)

    def _get_trials(
        self, study_id: int, states: Any, included_trial_ids: set[int], trial_id_greater_than: int
    ) -> list[FrozenTrial]:
        return self.call_store(self.read_trials, study_id, states, included_trial_ids, trial_id_greater_than)

    def may_fail_stale_trials(self) -> bool:
        """Whether this worker may mark stale trials failed now (the default: always); when not, Optuna hears that
        there are none."""
        return True

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.call_store(self.stale_trials, study_id) if self.may_fail_stale_trials() else []

    def _set_trial_param(self, *args: Any, **kwargs: Any) -> None:
        self.call_store(super()._set_trial_param, *args, **kwargs)  # a repeat's duplicate row is ignored

    def _get_best_trial_id(self, *args: Any, **kwargs: Any) -> int:
        return self.call_store(super()._get_best_trial_id, *args, **kwargs)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None:
            self.allow_new_trial()
        return super().create_new_trial(study_id, template_trial)

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        if template_trial is None:
            self.allow_new_trial()
        self._creating.attempt = {}
        try:
            return self.call_store(super()._create_new_trial, study_id, template_trial)
        finally:
            self._creating.attempt = None

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_creating", None)  # thread-local
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        import threading

        super().__setstate__(state)
        self._creating = threading.local()

    def _get_prepared_new_trial(self, study_id: int, template_trial: FrozenTrial | None, session: Any) -> Any:
        import sqlalchemy as sa

        attempt = getattr(self._creating, "attempt", None)
        if attempt is None or self.engine.dialect.name != "postgresql":
            return super()._get_prepared_new_trial(study_id, template_trial, session)
        if attempt.get("trial_id") is not None and _committed(session, attempt["xid"]):  # committed, then lost
            return session.get(rdb_models().TrialModel, attempt["trial_id"])
        attempt.clear()
        attempt["xid"] = session.execute(sa.text("SELECT txid_current()")).scalar()
        trial = super()._get_prepared_new_trial(study_id, template_trial, session)
        attempt["trial_id"] = trial.trial_id
        return trial


def _committed(session: Any, xid: int) -> bool:
    """Whether PostgreSQL's transaction ``xid`` committed (waiting a little while it is still in progress: the
    server aborts a transaction whose client went away once it notices)."""
    import time

    import sqlalchemy as sa

    for _ in range(50):
        status = session.execute(sa.text("SELECT txid_status(:xid)"), {"xid": xid}).scalar()
        if status != "in progress":
            return bool(status == "committed")
        time.sleep(0.1)
    return False


# -- artifacts -------------------------------------------------------------------------------------------


def artifact_meta_key(artifact_id: str) -> str:
    """The trial system-attribute key under which Optuna lists an artifact's metadata."""
    return _ARTIFACT_META_PREFIX + artifact_id


def list_artifact(study: optuna.Study, trial: optuna.Trial, artifact_id: str, filename: str) -> None:
    """List ``artifact_id`` (already written to the artifact store) under ``trial``, as
    ``optuna.artifacts.upload_artifact`` would have, so that optuna-dashboard offers it for download.

    (``upload_artifact`` would copy the file again; tuner writes checkpoints to the store itself.)
    """
    import optuna

    meta = optuna.artifacts.ArtifactMeta(
        artifact_id=artifact_id, filename=filename, mimetype="application/octet-stream", encoding=None
    )
    set_trial_system_attr(study, trial, artifact_meta_key(artifact_id), json.dumps(asdict(meta)))


def listed_artifacts(system_attrs: dict[str, Any]) -> Iterable[str]:
    """The artifact ids listed in a trial's system attributes."""
    return [key[len(_ARTIFACT_META_PREFIX) :] for key in system_attrs if key.startswith(_ARTIFACT_META_PREFIX)]


# -- samplers ---------------------------------------------------------------------------------------------


def reseeded_optuna_sampler(sampler: optuna.samplers.BaseSampler, seed: int) -> optuna.samplers.BaseSampler:
    """A copy of ``sampler`` (any configuration) drawing from ``seed``: its random state, and that of the
    random sampler it falls back to (TPE's startup trials), rebuilt. Optuna's ``reseed_rng`` draws a seed
    from the operating system, so runs that need to repeat (a benchmark's seeds) use this."""
    import copy

    import optuna
    from optuna.samplers._lazy_random_state import LazyRandomState

    fresh: Any = copy.deepcopy(sampler)  # its private random state is replaced below
    if hasattr(fresh, "_rng"):
        fresh._rng = LazyRandomState(seed)
    if isinstance(getattr(fresh, "_random_sampler", None), optuna.samplers.RandomSampler):
        fresh._random_sampler = optuna.samplers.RandomSampler(seed=seed)
    return fresh


class _StudyWithTrials:
    """``study`` as a sampler sees it, with ``trials`` in the place of its finished trials."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        self._study = study
        self._trials = trials

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[FrozenTrial]:
        import copy

        chosen = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(chosen) if deepcopy else chosen

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self._get_trials()

    def __getattr__(self, name: str) -> Any:  # direction(s), storage, study name: the study's own
        return getattr(self._study, name)


def study_with_trials(study: optuna.Study, trials: list[FrozenTrial]) -> Any:
    """A view of ``study`` whose trials (``get_trials`` and Optuna's ``_get_trials``, which its samplers
    read) are ``trials``: a sampler can learn from trials seen differently (tuner.strategies.RungTPESampler)."""
    return _StudyWithTrials(study, trials)
