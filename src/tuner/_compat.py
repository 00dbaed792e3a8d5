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
from collections.abc import Callable, Iterable, Iterator, Mapping
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
    "cached",
    "study_id",
    "trial_id",
    "frozen_trial",
    "trial_system_attrs",
    "set_trial_system_attr",
    "study_system_attrs",
    "set_study_system_attr",
    "BulkTrialReads",
    "read_trials",
    "study_ids",
    "trial_counts",
    "count_trials",
    "retry_histories",
    "trial_system_attr",
    "count_better",
    "nth_best_trial",
    "ranked_trial",
    "StoreReader",
    "study_id_of",
    "study_directions",
    "study_user_attrs",
    "read_trial",
    "delete_note",
    "insert_study_system_attrs",
    "insert_trials",
    "GuardedTrialCreation",
    "StudyAttrRow",
    "delete_study_system_attrs",
    "artifact_meta_key",
    "list_artifact",
    "DashboardTrial",
    "read_note",
    "write_note",
    "dashboard_study_detail",
    "PLOT_DATA_PREFIX",
    "experimental",
    "reseeded_optuna_sampler",
    "study_with_trials",
]

#: optuna-dashboard's system-attribute prefix for plotly graph objects (``dashboard:plot_data:<id>:<chunk>``)
PLOT_DATA_PREFIX = "dashboard:plot_data:"
#: Optuna's trial system-attribute prefix for artifact metadata (what optuna-dashboard lists under a trial)
_ARTIFACT_META_PREFIX = "artifacts:"
#: the trial system attribute where Optuna's RetryHeartbeatStaleTrialCallback lists the trials a retry retries
_RETRY_HISTORY = "retry_history"
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


# -- trials in bulk --------------------------------------------------------------------------------------

#: trial ids bound into one ``IN (...)`` at most (SQLite takes 32766 variables, PostgreSQL 65535)
_MAX_IN = 20_000


def _tables() -> Any:
    """Optuna's RDB models (their ``__table__`` are the schema tuner reads and writes in bulk)."""
    from optuna.storages._rdb import models

    return models


def _local(moment: Any) -> Any:
    """A stored (naive UTC) datetime as Optuna's FrozenTrial holds it (naive local time); SQLite's driver gives
    the stored text."""
    import datetime

    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.datetime.fromisoformat(moment)
    return moment.replace(tzinfo=datetime.timezone.utc).astimezone().replace(tzinfo=None)


def _members(kind: Any) -> dict[Any, Any]:
    """An enum's members by themselves and by name: Optuna stores its enums (trial states, value kinds) by
    name, which is what the database driver returns without SQLAlchemy's type processing."""
    return {**{m: m for m in kind}, **{m.name: m for m in kind}}


def _fetch(connection: Any, query: Any) -> list[tuple[Any, ...]]:
    """The rows of a Core ``query``, fetched by the database driver itself on SQLite and PostgreSQL: for the
    hundreds of thousands of small rows of a large study, SQLAlchemy's per-row processing is most of the
    read. Only tuner's own numbers and Optuna's enum names are bound, so they are rendered into the SQL;
    enums come back as names and SQLite's datetimes as text (see :func:`_members`, :func:`_local`)."""
    if connection.dialect.name not in ("sqlite", "postgresql"):
        return [tuple(row) for row in connection.execute(query)]
    sql = str(query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _utc(moment: Any) -> Any:
    import datetime

    if moment is None:
        return None
    return moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def read_trials(
    storage: RDBStorage | StoreReader,
    study_id: int,
    states: Iterable[Any] | None = None,
    included_trial_ids: Iterable[int] = (),
    trial_id_greater_than: int = -1,
) -> list[FrozenTrial]:
    """The study's trials as ``RDBStorage._get_trials`` returns them (same arguments, same FrozenTrials, in
    trial-id order), read with six plain SQL queries (the trials, then their values, parameters, user and
    system attributes and intermediate values) instead of Optuna's ORM objects: about 8x faster, which is
    what a process pays on its first read of a study of 10,000 trials.

    With ``trial_id_greater_than`` > -1 only trials above it and those of ``included_trial_ids`` (at or
    below it) are read, as Optuna's cache layer asks for new and unfinished trials. A study that does not
    exist raises ``KeyError``, as Optuna does.
    """
    import sqlalchemy as sa
    from optuna import distributions

    models = _tables()
    trials = models.TrialModel.__table__
    where = [trials.c.study_id == study_id]
    if states is not None:
        where.append(trials.c.state.in_(list(states)))
    keep: Callable[[int], bool] | None = None
    if trial_id_greater_than > -1:
        included = sorted(i for i in included_trial_ids if i <= trial_id_greater_than)
        if not included:
            where.append(trials.c.trial_id > trial_id_greater_than)
        elif len(included) <= _MAX_IN:
            where.append(sa.or_(trials.c.trial_id.in_(included), trials.c.trial_id > trial_id_greater_than))
        else:  # too many to bind: read from the lowest one and filter here
            where.append(trials.c.trial_id >= included[0])
            wanted = set(included)
            keep = lambda i: i in wanted or i > trial_id_greater_than  # noqa: E731
    chosen = sa.select(trials.c.trial_id).where(*where)

    def children(table: Any, *columns: str) -> list[tuple[Any, ...]]:
        primary = next(iter(table.primary_key.columns))
        query = sa.select(table.c.trial_id, *(table.c[c] for c in columns)).where(table.c.trial_id.in_(chosen))
        return _fetch(connection, query.order_by(primary))

    with storage.engine.connect() as connection:
        study = models.StudyModel.__table__
        if connection.execute(sa.select(study.c.study_id).where(study.c.study_id == study_id)).first() is None:
            raise KeyError(f"No study with study_id {study_id} exists.")
        rows = _fetch(
            connection,
            sa.select(
                trials.c.trial_id, trials.c.number, trials.c.state, trials.c.datetime_start, trials.c.datetime_complete
            )
            .where(*where)
            .order_by(trials.c.trial_id),
        )
        if keep is not None:
            rows = [row for row in rows if keep(row[0])]
        parts: dict[int, dict[str, Any]] = {
            row[0]: {"values": {}, "params": {}, "dists": {}, "user": {}, "system": {}, "steps": {}} for row in rows
        }

        value_type = models.TrialValueModel
        value_kind = _members(value_type.TrialValueType)
        for trial_id, objective, value, kind in children(
            models.TrialValueModel.__table__, "objective", "value", "value_type"
        ):
            if trial_id in parts:
                parts[trial_id]["values"][objective] = value_type.stored_repr_to_value(value, value_kind[kind])
        known: dict[str, Any] = {}
        for trial_id, name, value, dist_json in children(
            models.TrialParamModel.__table__, "param_name", "param_value", "distribution_json"
        ):
            if trial_id in parts:
                dist = known.get(dist_json)
                if dist is None:
                    dist = known[dist_json] = distributions.json_to_distribution(dist_json)
                parts[trial_id]["params"][name] = dist.to_external_repr(value)
                parts[trial_id]["dists"][name] = dist
        decoded: dict[str, Any] = {}  # short JSON texts that decode to an immutable value, decoded once
        for table, slot in ((models.TrialUserAttributeModel, "user"), (models.TrialSystemAttributeModel, "system")):
            for trial_id, key, value_json in children(table.__table__, "key", "value_json"):
                if trial_id not in parts:
                    continue
                if len(value_json) > 24:
                    parts[trial_id][slot][key] = json.loads(value_json)
                    continue
                value = decoded.get(value_json, decoded)
                if value is decoded:
                    value = json.loads(value_json)
                    if value is None or isinstance(value, (str, int, float, bool)):
                        decoded[value_json] = value
                    else:  # a list or a dict: each trial gets its own
                        parts[trial_id][slot][key] = value
                        continue
                parts[trial_id][slot][key] = value
        step_type = models.TrialIntermediateValueModel
        step_kind = _members(step_type.TrialIntermediateValueType)
        for trial_id, step, value, kind in children(
            models.TrialIntermediateValueModel.__table__, "step", "intermediate_value", "intermediate_value_type"
        ):
            if trial_id in parts:
                parts[trial_id]["steps"][step] = step_type.stored_repr_to_intermediate_value(value, step_kind[kind])

    from optuna.trial import FrozenTrial, TrialState

    states = _members(TrialState)
    out = []
    for trial_id, number, state, start, complete in rows:
        part = parts[trial_id]
        values = part["values"]
        out.append(
            FrozenTrial(
                number=number,
                state=states[state],
                value=None,
                values=[values[k] for k in sorted(values)] if values else None,
                datetime_start=_local(start),
                datetime_complete=_local(complete),
                params=part["params"],
                distributions=part["dists"],
                user_attrs=part["user"],
                system_attrs=part["system"],
                intermediate_values=part["steps"],
                trial_id=trial_id,
            )
        )
    return out


def study_ids(storage: RDBStorage | StoreReader) -> list[tuple[int, str]]:
    """``(study_id, study_name)`` of every study in the store, by id, without what
    ``storage.get_all_studies()`` also loads (every study's system attributes: dashboard notes, figures)."""
    import sqlalchemy as sa

    studies = _tables().StudyModel.__table__
    with storage.engine.connect() as connection:
        rows = connection.execute(sa.select(studies.c.study_id, studies.c.study_name).order_by(studies.c.study_id))
        return [(int(i), str(name)) for i, name in rows]


def trial_counts(storage: RDBStorage | StoreReader, study_id: int | None = None) -> dict[int, dict[str, int]]:
    """study_id -> trial state name -> number of trials, counted by the database (one ``GROUP BY``), for
    one study or every study of the store; a study without trials is absent."""
    import sqlalchemy as sa

    trials = _tables().TrialModel.__table__
    query = sa.select(trials.c.study_id, trials.c.state, sa.func.count()).group_by(trials.c.study_id, trials.c.state)
    if study_id is not None:
        query = query.where(trials.c.study_id == study_id)
    counts: dict[int, dict[str, int]] = {}
    with storage.engine.connect() as connection:
        for study, state, n in connection.execute(query):
            counts.setdefault(int(study), {})[state.name] = int(n)
    return counts


def count_trials(study: optuna.Study) -> dict[str, int]:
    """Trial state name -> number of the study's trials, counted by the database (:func:`trial_counts`)."""
    backend = backend_of(study)
    if not isinstance(backend, RDBStorage):
        counts: dict[str, int] = {}
        for trial in study.get_trials(deepcopy=False):
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        return counts
    return trial_counts(backend, study_id(study)).get(study_id(study), {})


def retry_histories(study: optuna.Study) -> dict[int, list[int]]:
    """trial number -> the trials it retries (``RetryHeartbeatStaleTrialCallback.retry_history``, the
    system attribute Optuna's retry writes), for the study's retries only: read by the database."""
    backend = backend_of(study)
    if not isinstance(backend, RDBStorage):
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        with experimental():
            found = {t.number: RetryHeartbeatStaleTrialCallback.retry_history(t) for t in study.get_trials()}
        return {number: list(history) for number, history in found.items() if history}
    return {n: list(h) for n, h in trial_system_attr(backend, study_id(study), _RETRY_HISTORY).items() if h}


def trial_system_attr(storage: RDBStorage | StoreReader, study_id: int, key: str) -> dict[int, Any]:
    """trial number -> the value of the trial system attribute ``key``, for the trials of the study that have
    one (a few rows, read by the database's index, instead of every trial)."""
    import sqlalchemy as sa

    models = _tables()
    trials, attrs = models.TrialModel.__table__, models.TrialSystemAttributeModel.__table__
    query = (
        sa.select(trials.c.number, attrs.c.value_json)
        .join(attrs, attrs.c.trial_id == trials.c.trial_id)
        .where(trials.c.study_id == study_id, attrs.c.key == key)
    )
    with storage.engine.connect() as connection:
        return {int(number): json.loads(value) for number, value in connection.execute(query)}


def count_better(study: optuna.Study, value: float, below: int | None = None) -> int:
    """How many completed trials of ``study`` (numbered below ``below``, if given) have a value strictly
    better than ``value``: its rank among them, from 0 (ties share a rank). Counted by the database."""
    import sqlalchemy as sa
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    backend = backend_of(study)
    if not isinstance(backend, RDBStorage):
        better = (lambda v: v > value) if study.direction == StudyDirection.MAXIMIZE else (lambda v: v < value)
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return sum(1 for t in done if better(t.value) and (below is None or t.number < below))
    models = _tables()
    trials, values = models.TrialModel.__table__, models.TrialValueModel.__table__
    finite = values.c.value_type == models.TrialValueModel.TrialValueType.FINITE
    if study.direction == StudyDirection.MAXIMIZE:
        beyond = values.c.value_type == models.TrialValueModel.TrialValueType.INF_POS
        condition = sa.or_(sa.and_(finite, values.c.value > value), beyond) if value != float("inf") else sa.false()
    else:
        beyond = values.c.value_type == models.TrialValueModel.TrialValueType.INF_NEG
        condition = sa.or_(sa.and_(finite, values.c.value < value), beyond) if value != float("-inf") else sa.false()
    query = (
        sa.select(sa.func.count())
        .select_from(trials.join(values, values.c.trial_id == trials.c.trial_id))
        .where(
            trials.c.study_id == study_id(study),
            trials.c.state == TrialState.COMPLETE,
            values.c.objective == 0,
            condition,
            *([trials.c.number < below] if below is not None else []),
        )
    )
    with backend.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def nth_best_trial(study: optuna.Study, n: int) -> tuple[int, int] | None:
    """``(number, trial_id)`` of the study's completed trial of rank ``n`` (0: the best), by value in the
    study's direction, ties by number; None when fewer than ``n + 1`` trials completed. Found by the database."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    maximize = study.direction == StudyDirection.MAXIMIZE
    backend = backend_of(study)
    if not isinstance(backend, RDBStorage):
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ranked = sorted(done, key=lambda t: (-t.value if maximize else t.value, t.number))  # type: ignore[operator]
        return (ranked[n].number, trial_id(ranked[n])) if n < len(ranked) else None
    return ranked_trial(backend, study_id(study), maximize, n)


def ranked_trial(storage: Any, study_id: int, maximize: bool, n: int = 0) -> tuple[int, int] | None:
    """``(number, trial_id)`` of the completed trial of rank ``n`` (0: the best; -inf, the finite values, +inf
    in Optuna's order, ties by number) of a study, in an RDB store (anything with its ``engine``)."""
    import sqlalchemy as sa
    from optuna.trial import TrialState

    models = _tables()
    trials, values = models.TrialModel.__table__, models.TrialValueModel.__table__
    kinds = models.TrialValueModel.TrialValueType
    rank = sa.case((values.c.value_type == kinds.INF_NEG, 0), (values.c.value_type == kinds.FINITE, 1), else_=2)
    order = [rank.desc(), values.c.value.desc()] if maximize else [rank, values.c.value]
    query = (
        sa.select(trials.c.number, trials.c.trial_id)
        .select_from(trials.join(values, values.c.trial_id == trials.c.trial_id))
        .where(trials.c.study_id == study_id, trials.c.state == TrialState.COMPLETE, values.c.objective == 0)
        .order_by(*order, trials.c.number)
        .offset(n)
        .limit(1)
    )
    with storage.engine.connect() as connection:
        row = connection.execute(query).first()
    return (int(row[0]), int(row[1])) if row is not None else None


class StoreReader:
    """A store's SQL engine without Optuna's ``RDBStorage`` around it, for the read-only commands' few
    queries (:func:`study_id_of`, :func:`study_directions`, :func:`study_user_attrs`, :func:`trial_counts`,
    :func:`ranked_trial`, :func:`read_trials`): opening an ``RDBStorage`` imports alembic and checks the
    schema's version, 0.4 s of every `tuner studies` and `tuner export`. It checks nothing, so its users fall
    back to an ``RDBStorage`` when a query fails (a store without Optuna's tables, or of another schema)."""

    def __init__(self, url: str, engine_kwargs: Mapping[str, Any] | None = None) -> None:
        import sqlalchemy as sa

        self.url = url
        self.engine = sa.create_engine(url, **dict(engine_kwargs or {}))


def study_id_of(storage: Any, name: str) -> int | None:
    """The id of the study named ``name``, None if there is none."""
    import sqlalchemy as sa

    studies = _tables().StudyModel.__table__
    with storage.engine.connect() as connection:
        found = connection.execute(sa.select(studies.c.study_id).where(studies.c.study_name == name)).first()
    return int(found[0]) if found is not None else None


def study_directions(storage: Any, study_id: int) -> list[Any]:
    """The study's ``StudyDirection`` per objective, in objective order."""
    import sqlalchemy as sa

    table = _tables().StudyDirectionModel.__table__
    query = sa.select(table.c.direction).where(table.c.study_id == study_id).order_by(table.c.objective)
    with storage.engine.connect() as connection:
        return [row[0] for row in connection.execute(query)]


def study_user_attrs(storage: Any, study_id: int) -> dict[str, Any]:
    """The study's user attributes."""
    import sqlalchemy as sa

    table = _tables().StudyUserAttributeModel.__table__
    query = sa.select(table.c.key, table.c.value_json).where(table.c.study_id == study_id)
    with storage.engine.connect() as connection:
        return {key: json.loads(value) for key, value in connection.execute(query)}


def read_trial(storage: Any, study_id: int, trial_id: int) -> FrozenTrial:
    """One trial of the study, as :func:`read_trials` reads it."""
    (trial,) = read_trials(storage, study_id, None, {trial_id}, 2**62)
    return trial


def insert_study_system_attrs(study: optuna.Study, attrs: Mapping[str, Any]) -> None:
    """Add study system attributes that do not exist yet, in one transaction (``set_study_system_attr``
    takes one per key): for building large studies (tests, benchmarks)."""
    import sqlalchemy as sa

    backend = backend_of(study)
    if not isinstance(backend, RDBStorage):
        for key, value in attrs.items():
            set_study_system_attr(study, key, value)
        return
    table = _tables().StudySystemAttributeModel.__table__
    rows = [{"study_id": study_id(study), "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
    if rows:
        with backend.engine.begin() as connection:
            connection.execute(sa.insert(table), rows)


class BulkTrialReads(RDBStorage):
    """Optuna's RDB storage whose trial reads go through :func:`read_trials` (``get_all_trials`` and the
    ``_get_trials`` that Optuna's cache layer calls): same results, a fraction of the time."""

    def _get_trials(
        self,
        study_id: int,
        states: Any,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        return read_trials(self, study_id, states, included_trial_ids, trial_id_greater_than)


def insert_trials(study: optuna.Study, trials: Iterable[FrozenTrial]) -> int:
    """Add finished ``trials`` to ``study`` in one transaction, numbered after its existing trials; returns
    how many. What ``study.add_trials`` stores (values, parameters, attributes, intermediate values, start
    and end times), about 50x faster: it is for building large studies (tests, benchmarks) while nothing else
    writes to the study, not for workers. Trials are validated as ``add_trial`` validates them.
    """
    import sqlalchemy as sa

    models = _tables()
    backend = backend_of(study)
    if not isinstance(backend, RDBStorage):
        raise TypeError(f"insert_trials needs an SQL store (RDBStorage), not {type(backend).__name__}")
    table = {name: getattr(models, name).__table__ for name in _TRIAL_MODELS}
    value_type, step_type = models.TrialValueModel, models.TrialIntermediateValueModel
    count = 0
    with backend.engine.begin() as connection:
        trials_table = table["TrialModel"]
        number = connection.execute(
            sa.select(sa.func.count()).select_from(trials_table).where(trials_table.c.study_id == study_id(study))
        ).scalar_one()
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in _TRIAL_MODELS if name != "TrialModel"}
        for trial in trials:
            trial._validate()
            trial_id = connection.execute(
                sa.insert(trials_table).values(
                    number=number,
                    study_id=study_id(study),
                    state=trial.state,
                    datetime_start=_utc(trial.datetime_start),
                    datetime_complete=_utc(trial.datetime_complete),
                )
            ).inserted_primary_key[0]
            number += 1
            count += 1
            for objective, value in enumerate(trial.values or ()):
                stored, kind = value_type.value_to_stored_repr(value)
                rows["TrialValueModel"].append(
                    {"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind}
                )
            for name, value in trial.params.items():
                distribution = trial.distributions[name]
                rows["TrialParamModel"].append(
                    {
                        "trial_id": trial_id,
                        "param_name": name,
                        "param_value": distribution.to_internal_repr(value),
                        "distribution_json": _distribution_json(distribution),
                    }
                )
            for key, value in trial.user_attrs.items():
                rows["TrialUserAttributeModel"].append(
                    {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                )
            for key, value in trial.system_attrs.items():
                rows["TrialSystemAttributeModel"].append(
                    {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                )
            for step, value in trial.intermediate_values.items():
                stored, kind = step_type.intermediate_value_to_stored_repr(value)
                rows["TrialIntermediateValueModel"].append(
                    {"trial_id": trial_id, "step": step, "intermediate_value": stored, "intermediate_value_type": kind}
                )
        for name, values in rows.items():
            if values:
                connection.execute(sa.insert(table[name]), values)
    return count


_TRIAL_MODELS = (
    "TrialModel",
    "TrialValueModel",
    "TrialParamModel",
    "TrialUserAttributeModel",
    "TrialSystemAttributeModel",
    "TrialIntermediateValueModel",
)


def _distribution_json(distribution: Any) -> str:
    from optuna.distributions import distribution_to_json

    return distribution_to_json(distribution)


# -- taking only enqueued trials -------------------------------------------------------------------------


class GuardedTrialCreation(BulkTrialReads):
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


def _study_attr_rows(study: optuna.Study, keys: Iterable[str] = (), prefix: str | None = None) -> dict[str, Any]:
    """The study system attributes named ``keys`` or starting with ``prefix``, read by the database's index
    (``storage.get_study_system_attrs`` reads every one: all the notes and figures of the study)."""
    import sqlalchemy as sa

    backend = backend_of(study)
    keys = list(keys)
    if not isinstance(backend, RDBStorage):
        every = study_system_attrs(study)
        return {k: v for k, v in every.items() if k in keys or (prefix is not None and k.startswith(prefix))}
    table = _tables().StudySystemAttributeModel.__table__
    wanted = [table.c.key.in_(keys)] if keys else []
    if prefix is not None:
        wanted.append(table.c.key.startswith(prefix, autoescape=True))
    query = sa.select(table.c.key, table.c.value_json).where(table.c.study_id == study_id(study), sa.or_(*wanted))
    with backend.engine.connect() as connection:
        rows = connection.execute(query).all()
    return {key: json.loads(value) for key, value in rows}


def read_note(study: optuna.Study, trial_id: int | None = None) -> str:
    """The optuna-dashboard note of the study (``trial_id`` None) or of one of its trials, as
    ``optuna_dashboard.get_note`` reads it, without reading every other note and figure of the study."""
    from optuna_dashboard._note import get_note_from_system_attrs, note_str_key_prefix, note_ver_key

    attrs = _study_attr_rows(study, [note_ver_key(trial_id)], note_str_key_prefix(trial_id))
    return get_note_from_system_attrs(attrs, trial_id)["body"]


def write_note(study: optuna.Study, trial_id: int | None, body: str) -> None:
    """Save ``body`` as the note of the study (``trial_id`` None) or of one of its trials, as
    ``optuna_dashboard.save_note`` does (a new version; the body in chunks; chunks left over from a longer
    note blanked), reading only that note's own rows."""
    from optuna_dashboard._note import note_str_key_prefix, note_ver_key, split_body

    ver_key, prefix = note_ver_key(trial_id), note_str_key_prefix(trial_id)
    current = _study_attr_rows(study, [ver_key], prefix)
    set_study_system_attr(study, ver_key, int(current.get(ver_key, 0)) + 1)
    chunks = split_body(body, trial_id)
    for key, value in chunks.items():
        set_study_system_attr(study, key, value)
    for i in range(len(chunks), sum(1 for key in current if key.startswith(prefix))):
        set_study_system_attr(study, f"{prefix}{i}", "")


def delete_note(study: optuna.Study, trial_id: int | None) -> None:
    """Remove the optuna-dashboard note of the study (``trial_id`` None) or of one of its trials (its rows
    go; on a storage that is not an RDB store its chunks are blanked)."""
    import sqlalchemy as sa
    from optuna_dashboard._note import note_str_key_prefix, note_ver_key

    ver_key, prefix = note_ver_key(trial_id), note_str_key_prefix(trial_id)
    backend = backend_of(study)
    if not isinstance(backend, RDBStorage):
        for key in _study_attr_rows(study, [], prefix):
            set_study_system_attr(study, key, "")
        return
    table = _tables().StudySystemAttributeModel.__table__
    with backend.engine.begin() as connection:
        connection.execute(
            sa.delete(table).where(
                table.c.study_id == study_id(study),
                sa.or_(table.c.key == ver_key, table.c.key.startswith(prefix, autoescape=True)),
            )
        )


def dashboard_study_detail(
    app: Any, storage: optuna.storages.BaseStorage, study_id: int, after: int = 0
) -> dict[str, Any] | None:
    """What optuna-dashboard's ``GET /api/studies/<study_id>?after=<after>`` answers (the study page's first
    request and its refreshes), for a study of one objective that is not a preferential one; None for any
    other (let the ``app`` answer). The same JSON, built 2x faster for a large study:

    - the search spaces and the union of the user attributes come from optuna-dashboard's own
      ``_CachedExtraStudyProperty``, fed each distinct set of distributions (and of user-attribute keys)
      once instead of once per trial (it answers the same: unions and intersections of the same sets), and
      built again on each request as it does (its cursor never passes a finished study's last trial);
    - each trial is serialized as ``serialize_frozen_trial`` does, with its parameters' entries shared
      between trials that have the same value, and the study's notes and dashboard artifacts looked up by
      trial instead of by a scan of every study system attribute for every trial;
    - everything else is ``serialize_study_detail`` itself.

    Only categorical choices within a search space may come in another order (optuna-dashboard orders them
    by a set).
    """
    from optuna.trial import TrialState
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects
    from optuna_dashboard._inmemory_cache import _CachedExtraStudyProperty
    from optuna_dashboard._serializer import serialize_study_detail
    from optuna_dashboard._storage import get_study, get_trials
    from optuna_dashboard.preferential._study import _SYSTEM_ATTR_PREFERENTIAL_STUDY

    study = get_study(storage, study_id)
    if study is None or len(study.directions) != 1:
        return None
    system_attrs = study.system_attrs
    if system_attrs.get(_SYSTEM_ATTR_PREFERENTIAL_STUDY, False):
        return None
    trials = get_trials(app._inmemory_cache, storage, study_id)
    best = [storage.get_best_trial(study_id)] if any(t.state == TrialState.COMPLETE for t in trials) else []
    extra = _CachedExtraStudyProperty()
    seen_spaces: set[Any] = set()
    seen_attrs: set[Any] = set()
    for trial in reversed(trials):  # its order
        attrs = tuple((k, not isinstance(v, bool) and isinstance(v, (int, float))) for k, v in trial.user_attrs.items())
        if attrs not in seen_attrs:
            seen_attrs.add(attrs)
            extra._update_user_attrs(trial)
        if trial.state != TrialState.FAIL:
            if trial.intermediate_values:
                extra.has_intermediate_values = True
            space = tuple(trial.distributions.items())
            if space not in seen_spaces:
                seen_spaces.add(space)
                extra._update_search_space(trial)
    body = serialize_study_detail(
        study,
        [],
        [],
        extra.intersection_search_space,
        extra.union_search_space,
        extra.union_user_attrs,
        extra.has_intermediate_values,
        get_plotly_graph_objects(system_attrs),
        [],
    )
    serialize = _DashboardTrials(study_id, system_attrs)
    body["trials"] = [serialize(t) for t in trials[after:]]
    body["best_trials"] = [serialize(t) for t in best]
    return body


class _DashboardTrials:
    """``optuna_dashboard._serializer.serialize_frozen_trial`` for the trials of one study (see
    :func:`dashboard_study_detail`)."""

    def __init__(self, study_id: int, system_attrs: dict[str, Any]) -> None:
        from optuna_dashboard._note import note_ver_key
        from optuna_dashboard.artifact._backend import DASHBOARD_ARTIFACTS_ATTR_PREFIX

        self.study_id = study_id
        self.system_attrs = system_attrs
        self.note_ver_key = note_ver_key
        self.entries: dict[Any, dict[str, Any]] = {}
        self.kept: list[Any] = []  # the distributions whose ids key the entries
        self.artifacts: dict[str, dict[str, Any]] = {}  # trial id -> its study-level artifact attributes
        for key, value in system_attrs.items():
            if key.startswith(DASHBOARD_ARTIFACTS_ATTR_PREFIX):
                owner = key[len(DASHBOARD_ARTIFACTS_ATTR_PREFIX) :].split(":", 1)[0]
                self.artifacts.setdefault(owner, {})[key] = value

    def __call__(self, trial: FrozenTrial) -> dict[str, Any]:
        import math

        from optuna_dashboard._note import get_note_from_system_attrs
        from optuna_dashboard._serializer import CONSTRAINTS_KEY, serialize_attrs, serialize_distribution
        from optuna_dashboard.artifact._backend import list_trial_artifacts

        params = []
        for name, value in trial.params.items():
            distribution = trial.distributions.get(name)
            if distribution is None:
                continue
            key = (name, id(distribution), type(value), value)
            entry = self.entries.get(key)
            if entry is None:
                self.kept.append(distribution)
                entry = self.entries[key] = {
                    "name": name,
                    "param_internal_value": distribution.to_internal_repr(value),
                    "param_external_value": str(value),
                    "param_external_pytyp": str(type(value)),
                    "distribution": serialize_distribution(distribution),
                }
            params.append(entry)
        own = trial.system_attrs
        fixed = own.get("fixed_params", {})
        trial_id = trial._trial_id
        noted = self.note_ver_key(trial_id) in self.system_attrs
        out: dict[str, Any] = {
            "trial_id": trial_id,
            "study_id": self.study_id,
            "number": trial.number,
            "state": trial.state.name.capitalize(),
            "params": params,
            "fixed_params": [{"name": n, "param_external_value": str(fixed.get(n, None))} for n in fixed],
            "user_attrs": serialize_attrs(trial.user_attrs),
            "note": get_note_from_system_attrs(self.system_attrs, trial_id) if noted else {"version": 0, "body": ""},
            "artifacts": list_trial_artifacts(self.artifacts.get(str(trial_id), {}), own, trial),
            "constraints": own.get(CONSTRAINTS_KEY, []),
        }

        def shown(value: float) -> Any:
            if math.isnan(value):
                return "nan"
            return "inf" if value == math.inf else "-inf" if value == -math.inf else value

        steps = [{"step": step, "value": shown(v)} for step, v in trial.intermediate_values.items()]
        out["intermediate_values"] = sorted(steps, key=lambda v: v["step"])
        if trial.values is not None:
            out["values"] = [shown(v) for v in trial.values]
        if trial.datetime_start is not None:
            out["datetime_start"] = trial.datetime_start.isoformat()
        if trial.datetime_complete is not None:
            out["datetime_complete"] = trial.datetime_complete.isoformat()
        return out


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


# -- samplers ---------------------------------------------------------------------------------------------


def reseeded_optuna_sampler(sampler: optuna.samplers.BaseSampler, seed: int) -> optuna.samplers.BaseSampler:
    """A copy of ``sampler`` (any configuration) drawing from ``seed``: its random state, and that of the
    random sampler it falls back to (TPE's startup trials), rebuilt. Optuna's ``reseed_rng`` draws a seed
    from the operating system, so runs that need to repeat (a benchmark's seeds) use this."""
    import copy

    import optuna
    from optuna.samplers._lazy_random_state import LazyRandomState

    fresh = copy.deepcopy(sampler)
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
    read) are ``trials``: a sampler can learn from trials seen differently (tuner.samplers.RungTPESampler)."""
    return _StudyWithTrials(study, trials)
