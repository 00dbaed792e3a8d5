"""Reading a store with plain SQL: the trials of a study in bulk, and the few queries read-only commands ask.

Optuna's ORM builds an object per row; for the hundreds of thousands of small rows of a study of 10,000
trials that is most of the time a command spends. The functions here read Optuna's own tables (its schema
from :func:`tuner.store.optuna_internals.rdb_models`) with SQLAlchemy Core and return what Optuna's storage
returns (FrozenTrials, ids, directions, attributes). They take anything with an SQLAlchemy ``engine``: an
``RDBStorage``, or a :class:`StoreReader` (the engine alone, without the schema check that opening an
``RDBStorage`` costs). Queries about one study that must also work on a storage that is not SQL (a study in
memory) live in :mod:`tuner.store.queries`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tuner.store.optuna_internals import rdb_models

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = [
    "StoreReader",
    "read_trials",
    "read_trial",
    "study_ids",
    "study_id_of",
    "study_directions",
    "study_user_attrs",
    "trial_counts",
    "trial_system_attr",
    "ranked_trial",
    "trial_state",
    "heartbeat_ages",
]

#: trial ids bound into one ``IN (...)`` at most (SQLite takes 32766 variables, PostgreSQL 65535)
_MAX_IN = 20_000


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


def read_trials(
    storage: Any,
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

    models = rdb_models()
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


def study_ids(storage: Any) -> list[tuple[int, str]]:
    """``(study_id, study_name)`` of every study in the store, by id, without what
    ``storage.get_all_studies()`` also loads (every study's system attributes: dashboard notes, figures)."""
    import sqlalchemy as sa

    studies = rdb_models().StudyModel.__table__
    with storage.engine.connect() as connection:
        rows = connection.execute(sa.select(studies.c.study_id, studies.c.study_name).order_by(studies.c.study_id))
        return [(int(i), str(name)) for i, name in rows]


def trial_counts(storage: Any, study_id: int | None = None) -> dict[int, dict[str, int]]:
    """study_id -> trial state name -> number of trials, counted by the database (one ``GROUP BY``), for
    one study or every study of the store; a study without trials is absent."""
    import sqlalchemy as sa

    trials = rdb_models().TrialModel.__table__
    query = sa.select(trials.c.study_id, trials.c.state, sa.func.count()).group_by(trials.c.study_id, trials.c.state)
    if study_id is not None:
        query = query.where(trials.c.study_id == study_id)
    counts: dict[int, dict[str, int]] = {}
    with storage.engine.connect() as connection:
        for study, state, n in connection.execute(query):
            counts.setdefault(int(study), {})[state.name] = int(n)
    return counts


def trial_system_attr(storage: Any, study_id: int, key: str) -> dict[int, Any]:
    """trial number -> the value of the trial system attribute ``key``, for the trials of the study that have
    one (a few rows, read by the database's index, instead of every trial)."""
    import sqlalchemy as sa

    models = rdb_models()
    trials, attrs = models.TrialModel.__table__, models.TrialSystemAttributeModel.__table__
    query = (
        sa.select(trials.c.number, attrs.c.value_json)
        .join(attrs, attrs.c.trial_id == trials.c.trial_id)
        .where(trials.c.study_id == study_id, attrs.c.key == key)
    )
    with storage.engine.connect() as connection:
        return {int(number): json.loads(value) for number, value in connection.execute(query)}


def ranked_trial(storage: Any, study_id: int, maximize: bool, n: int = 0) -> tuple[int, int] | None:
    """``(number, trial_id)`` of the completed trial of rank ``n`` (0: the best; -inf, the finite values, +inf
    in Optuna's order, ties by number) of a study, in an RDB store (anything with its ``engine``)."""
    import sqlalchemy as sa
    from optuna.trial import TrialState

    models = rdb_models()
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

    studies = rdb_models().StudyModel.__table__
    with storage.engine.connect() as connection:
        found = connection.execute(sa.select(studies.c.study_id).where(studies.c.study_name == name)).first()
    return int(found[0]) if found is not None else None


def study_directions(storage: Any, study_id: int) -> list[Any]:
    """The study's ``StudyDirection`` per objective, in objective order."""
    import sqlalchemy as sa

    table = rdb_models().StudyDirectionModel.__table__
    query = sa.select(table.c.direction).where(table.c.study_id == study_id).order_by(table.c.objective)
    with storage.engine.connect() as connection:
        return [row[0] for row in connection.execute(query)]


def study_user_attrs(storage: Any, study_id: int) -> dict[str, Any]:
    """The study's user attributes."""
    import sqlalchemy as sa

    table = rdb_models().StudyUserAttributeModel.__table__
    query = sa.select(table.c.key, table.c.value_json).where(table.c.study_id == study_id)
    with storage.engine.connect() as connection:
        return {key: json.loads(value) for key, value in connection.execute(query)}


def read_trial(storage: Any, study_id: int, trial_id: int) -> FrozenTrial:
    """One trial of the study, as :func:`read_trials` reads it."""
    (trial,) = read_trials(storage, study_id, None, {trial_id}, 2**62)
    return trial


def trial_state(storage: Any, trial_id: int) -> Any:
    """The trial's ``TrialState`` now (None if there is no such trial): one small read, for a heartbeat."""
    import sqlalchemy as sa
    from optuna.trial import TrialState

    trials = rdb_models().TrialModel.__table__
    with storage.engine.connect() as connection:
        state = connection.execute(sa.select(trials.c.state).where(trials.c.trial_id == trial_id)).scalar()
    return None if state is None else _members(TrialState)[state]


def heartbeat_ages(storage: Any, trial_ids: Iterable[int]) -> dict[int, float]:
    """trial id -> seconds since its last heartbeat, by the database's clock (trials without one are absent)."""
    import datetime

    import sqlalchemy as sa

    def naive(moment: Any) -> datetime.datetime:  # as Optuna compares them; SQLite's driver gives text
        return (datetime.datetime.fromisoformat(moment) if isinstance(moment, str) else moment).replace(tzinfo=None)

    table = rdb_models().TrialHeartbeatModel.__table__
    wanted = sorted(set(trial_ids))
    if not wanted:
        return {}
    with storage.engine.connect() as connection:
        now = naive(connection.execute(sa.select(sa.func.now())).scalar())
        rows = connection.execute(sa.select(table.c.trial_id, table.c.heartbeat).where(table.c.trial_id.in_(wanted)))
        return {int(trial_id): (now - naive(beat)).total_seconds() for trial_id, beat in rows}


def silent_running_trials(storage: Any, study_id: int, older_than: float) -> list[int]:
    """The study's running trials that never recorded a heartbeat and started over ``older_than`` seconds ago (by
    this machine's clock, as Optuna stamps ``datetime_start``): their worker died between taking them and its
    first heartbeat, which Optuna's stale check (heartbeats only) would never see."""
    import datetime

    import sqlalchemy as sa

    models = rdb_models()
    trials, beats = models.TrialModel.__table__, models.TrialHeartbeatModel.__table__
    query = (
        sa.select(trials.c.trial_id, trials.c.datetime_start)
        .select_from(trials.outerjoin(beats, beats.c.trial_id == trials.c.trial_id))
        .where(trials.c.study_id == study_id, trials.c.state == "RUNNING", beats.c.trial_id.is_(None))
    )
    with storage.engine.connect() as connection:
        rows = connection.execute(query).fetchall()
    now = datetime.datetime.now()
    out = []
    for trial_id, started in rows:
        started = datetime.datetime.fromisoformat(started) if isinstance(started, str) else started
        if started is not None and (now - started.replace(tzinfo=None)).total_seconds() > older_than:
            out.append(int(trial_id))
    return out
