"""Every use of Optuna's and optuna-dashboard's private API, in one place.

tuner needs a few things their public APIs do not offer: trial and study *system* attributes (Optuna
3+ has no public setter), the storage under a study, the hook where Optuna creates a trial (so that a
worker only takes enqueued trials), the table optuna-dashboard keeps its figures in (the storage API
cannot delete an attribute), the key under which an artifact is listed, and the trial object
optuna-dashboard's note functions read. Each is a small function here with a test in
``tests/test_compat.py``, so an upgrade of either library that changes them fails there first, with the
name of what changed, instead of deep inside a study. pyproject.toml bounds both libraries' versions.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from optuna.storages import RDBStorage

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts._protocol import ArtifactStore as ArtifactStore
    from optuna.trial import FrozenTrial

__all__ = [
    "storage_of",
    "backend_of",
    "study_id",
    "trial_id",
    "frozen_trial",
    "trial_system_attrs",
    "set_trial_system_attr",
    "study_system_attrs",
    "set_study_system_attr",
    "GuardedTrialCreation",
    "StudyAttrRow",
    "delete_study_system_attrs",
    "artifact_meta_key",
    "list_artifact",
    "DashboardTrial",
    "PLOT_DATA_PREFIX",
    "experimental",
]

#: optuna-dashboard's system-attribute prefix for plotly graph objects (``dashboard:plot_data:<id>:<chunk>``)
PLOT_DATA_PREFIX = "dashboard:plot_data:"
#: Optuna's trial system-attribute prefix for artifact metadata (what optuna-dashboard lists under a trial)
_ARTIFACT_META_PREFIX = "artifacts:"
#: the table of study system attributes in Optuna's RDB schema
_STUDY_SYSTEM_ATTRS_TABLE = "study_system_attributes"


@contextmanager
def experimental() -> Iterator[None]:
    """Silence Optuna's ``ExperimentalWarning`` (heartbeats, retries: experimental for years, and stable)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


# -- the storage under a study, and ids ------------------------------------------------------------------


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes (with Optuna's cache layer, if any)."""
    return study._storage


def backend_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage under Optuna's cache layer (an ``RDBStorage`` for tuner's stores)."""
    storage = storage_of(study)
    return getattr(storage, "_backend", storage)


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage id of a live or finished trial (not its number)."""
    return trial._trial_id


# -- system attributes -----------------------------------------------------------------------------------


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


def delete_study_system_attrs(study: optuna.Study, keep: Callable[[str], bool]) -> int:
    """Delete the study's system attributes whose key ``keep`` rejects; returns how many went.

    Optuna's storage API cannot delete an attribute, so on an RDB store this deletes the rows of
    Optuna's ``study_system_attributes`` table; on any other storage it blanks them to ``""``
    (optuna-dashboard then skips such a figure).
    """
    backend = backend_of(study)
    doomed = [key for key in study_system_attrs(study) if not keep(key)]
    if not doomed:
        return 0
    if isinstance(backend, RDBStorage):
        import sqlalchemy as sa

        table = sa.table(_STUDY_SYSTEM_ATTRS_TABLE, sa.column("study_id"), sa.column("key"))
        with backend.engine.begin() as connection:
            connection.execute(sa.delete(table).where(table.c.study_id == study_id(study), table.c.key.in_(doomed)))
        return len(doomed)
    for key in doomed:
        set_study_system_attr(study, key, "")
    return len(doomed)


# -- taking only enqueued trials -------------------------------------------------------------------------


class GuardedTrialCreation(RDBStorage):
    """Optuna's RDB storage that asks :meth:`_allow_new_trial` before creating a trial *without* a template.

    ``study.ask()`` first takes a waiting (enqueued) trial; only when there is none does Optuna create a
    fresh one, through ``_create_new_trial`` (its cache layer) or ``create_new_trial`` (the public API).
    Both are guarded here; trials created from a template (``enqueue_trial``, ``add_trial``, the
    heartbeat retry) are never refused.
    """

    def _allow_new_trial(self) -> None:
        """Raise to refuse a trial without a template (the default allows it)."""

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None:
            self._allow_new_trial()
        return super().create_new_trial(study_id, template_trial)

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        if template_trial is None:
            self._allow_new_trial()
        return super()._create_new_trial(study_id, template_trial)


# -- a lock row ------------------------------------------------------------------------------------------


class StudyAttrRow:
    """One row of Optuna's ``study_system_attributes`` table, used as an atomic register.

    Every operation is one SQL statement, so it is atomic in every database Optuna supports: the table's
    unique constraint on ``(study_id, key)`` makes :meth:`insert` fail for all but one of several
    workers, and :meth:`replace` / :meth:`delete` act only while the row still holds the value the caller
    read (compare-and-swap). ``optuna.Study.set_system_attr`` reads then writes, so it cannot do this.
    Values are JSON text, as Optuna stores them (the row reads back through the storage API too).
    """

    def __init__(self, study: optuna.Study, key: str) -> None:
        backend = backend_of(study)
        if not isinstance(backend, RDBStorage):
            raise TypeError(f"a study lock needs an SQL store (RDBStorage), not {type(backend).__name__}")
        import sqlalchemy as sa

        self._engine = backend.engine
        self._study_id = study_id(study)
        self._key = key
        self._table = sa.table(
            _STUDY_SYSTEM_ATTRS_TABLE, sa.column("study_id"), sa.column("key"), sa.column("value_json")
        )

    def _holding(self, value: str | None = None) -> Any:
        """The SQL condition selecting this row (holding ``value``, if given)."""
        table = self._table
        here = (table.c.study_id == self._study_id) & (table.c.key == self._key)
        return here if value is None else here & (table.c.value_json == value)

    def insert(self, value: str) -> bool:
        """Create the row holding ``value``; False if it exists already."""
        import sqlalchemy as sa

        try:
            with self._engine.begin() as connection:
                connection.execute(
                    sa.insert(self._table).values(study_id=self._study_id, key=self._key, value_json=value)
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def read(self) -> str | None:
        """The row's value now, None if there is no row."""
        import sqlalchemy as sa

        with self._engine.connect() as connection:
            return connection.execute(sa.select(self._table.c.value_json).where(self._holding())).scalar_one_or_none()

    def replace(self, expected: str, value: str) -> bool:
        """Set the row to ``value`` if it still holds ``expected``."""
        import sqlalchemy as sa

        with self._engine.begin() as connection:
            result = connection.execute(sa.update(self._table).where(self._holding(expected)).values(value_json=value))
        return result.rowcount == 1

    def delete(self, expected: str) -> bool:
        """Delete the row if it still holds ``expected``."""
        import sqlalchemy as sa

        with self._engine.begin() as connection:
            result = connection.execute(sa.delete(self._table).where(self._holding(expected)))
        return result.rowcount == 1


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


# -- optuna-dashboard ------------------------------------------------------------------------------------


@dataclass
class DashboardTrial:
    """What optuna-dashboard's ``save_note`` / ``get_note`` read from an ``optuna.Trial``: its study,
    storage and ``_trial_id``.

    A finished trial is a ``FrozenTrial``; building an ``optuna.Trial`` for it would run the sampler's
    ``before_trial`` hook, so the note functions get this instead.
    """

    study: optuna.Study
    _trial_id: int

    @classmethod
    def of(cls, study: optuna.Study, trial: FrozenTrial) -> DashboardTrial:
        return cls(study, trial_id(trial))

    @property
    def storage(self) -> optuna.storages.BaseStorage:
        return storage_of(self.study)
