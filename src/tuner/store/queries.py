"""The questions tuner asks about one study, answered by the database where the study is in an SQL store.

:func:`queries_of` decides once per call site whether the study lives in an RDB store (every store tuner
opens) or elsewhere (a study in memory, as the replay benchmark and some tests make): :class:`SqlQueries`
answers with one SQL statement each (counts, ranks, a few rows read by the database's index), and
:class:`StorageQueries` answers the same from Optuna's storage API. A new query about a study goes here,
as a method of :class:`StudyQueries` with both answers, and gets a test in ``tests/test_store_sql.py``.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from tuner.quiet import experimental
from tuner.store import optuna_internals as internals
from tuner.store.sql import ranked_trial, trial_counts, trial_system_attr

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage

__all__ = ["StudyQueries", "SqlQueries", "StorageQueries", "queries_of"]

_T = TypeVar("_T")


class StudyQueries(abc.ABC):
    """What tuner asks about one study beyond Optuna's public API, without reading every trial.

    Every method answers what reading the study's trials and system attributes through Optuna would answer.
    """

    def __init__(self, study: optuna.Study) -> None:
        self.study = study

    @abc.abstractmethod
    def count_trials(self) -> dict[str, int]:
        """Trial state name -> number of the study's trials (a state without trials is absent)."""

    @abc.abstractmethod
    def retry_histories(self) -> dict[int, list[int]]:
        """Trial number -> the trials it retries (``RetryHeartbeatStaleTrialCallback.retry_history``), for the
        study's retries only."""

    @abc.abstractmethod
    def count_better(self, value: float, below: int | None = None) -> int:
        """How many completed trials (numbered below ``below``, if given) have a value strictly better than
        ``value`` in the study's direction: its rank among them, from 0 (ties share a rank)."""

    @abc.abstractmethod
    def nth_best_trial(self, n: int) -> tuple[int, int] | None:
        """``(number, trial_id)`` of the completed trial of rank ``n`` (0: the best), by value in the study's
        direction, ties by number; None when fewer than ``n + 1`` trials completed."""

    @abc.abstractmethod
    def system_attrs(self, keys: Iterable[str] = (), prefix: str | None = None) -> dict[str, Any]:
        """The study system attributes named ``keys`` or starting with ``prefix`` (not all of them: a study's
        system attributes hold every dashboard note and figure)."""

    @abc.abstractmethod
    def delete_system_attrs(self, keys: Iterable[str] = (), prefix: str | None = None) -> int:
        """Delete the study system attributes named ``keys`` or starting with ``prefix``; returns how many went.
        (Optuna's storage API cannot delete an attribute: where there is no SQL, they are blanked to ``""``,
        which optuna-dashboard skips.)"""

    @abc.abstractmethod
    def param_distributions(self, name: str) -> set[str]:
        """The distributions (Optuna's JSON text) stored with the values of parameter ``name`` in the study's trials."""

    @abc.abstractmethod
    def set_param_distribution(self, name: str, distribution: str) -> int:
        """Store ``distribution`` (Optuna's JSON text) with every value of parameter ``name`` in the study's trials,
        the values left as they are (an extended search space: see :mod:`tuner.identity`); returns how many. Call it
        before the study's trials are read: Optuna's cache of finished trials does not see it."""

    def delete_system_attrs_where(self, doomed: Callable[[str], bool]) -> int:
        """Delete the study system attributes whose key ``doomed`` accepts; returns how many went."""
        keys = [key for key in internals.study_system_attrs(self.study) if doomed(key)]
        return self.delete_system_attrs(keys) if keys else 0

    @property
    def maximize(self) -> bool:
        from optuna.study import StudyDirection

        return self.study.direction == StudyDirection.MAXIMIZE


class SqlQueries(StudyQueries):
    """The answers of the study's RDB store, one SQL statement each (each riding out an outage of tuner's
    store: :mod:`tuner.store.retry`)."""

    def __init__(self, study: optuna.Study, backend: RDBStorage) -> None:
        super().__init__(study)
        self.backend = backend
        self.study_id = internals.study_id(study)

    def _call(self, function: Callable[..., _T], *args: Any) -> _T:
        call = getattr(self.backend, "call_store", None)
        return call(function, *args) if call is not None else function(*args)

    def _execute(self, statement: Any, rows: bool = False, write: bool = False) -> Any:
        """``statement``'s rows (``rows``), or its scalar, or its row count (``write``: in a transaction)."""

        def run() -> Any:
            if write:
                with self.backend.engine.begin() as connection:
                    return int(connection.execute(statement).rowcount)
            with self.backend.engine.connect() as connection:
                result = connection.execute(statement)
                return result.all() if rows else result.scalar_one()

        return self._call(run)

    def count_trials(self) -> dict[str, int]:
        return self._call(trial_counts, self.backend, self.study_id).get(self.study_id, {})

    def retry_histories(self) -> dict[int, list[int]]:
        found = self._call(trial_system_attr, self.backend, self.study_id, internals.RETRY_HISTORY)
        return {n: list(h) for n, h in found.items() if h}

    def count_better(self, value: float, below: int | None = None) -> int:
        import sqlalchemy as sa
        from optuna.trial import TrialState

        models = internals.rdb_models()
        trials, values = models.TrialModel.__table__, models.TrialValueModel.__table__
        kinds = models.TrialValueModel.TrialValueType
        finite = values.c.value_type == kinds.FINITE
        if self.maximize:
            beyond = values.c.value_type == kinds.INF_POS
            condition = sa.or_(sa.and_(finite, values.c.value > value), beyond) if value != float("inf") else sa.false()
        else:
            beyond = values.c.value_type == kinds.INF_NEG
            condition = (
                sa.or_(sa.and_(finite, values.c.value < value), beyond) if value != float("-inf") else sa.false()
            )
        query = (
            sa.select(sa.func.count())
            .select_from(trials.join(values, values.c.trial_id == trials.c.trial_id))
            .where(
                trials.c.study_id == self.study_id,
                trials.c.state == TrialState.COMPLETE,
                values.c.objective == 0,
                condition,
                *([trials.c.number < below] if below is not None else []),
            )
        )
        return int(self._execute(query))

    def nth_best_trial(self, n: int) -> tuple[int, int] | None:
        return self._call(ranked_trial, self.backend, self.study_id, self.maximize, n)

    def _keyed(self, keys: Iterable[str], prefix: str | None) -> tuple[Any, Any]:
        """Optuna's table of study system attributes, and the condition selecting ``keys`` / ``prefix``."""
        import sqlalchemy as sa

        table = internals.rdb_models().StudySystemAttributeModel.__table__
        keys = list(keys)
        wanted = [table.c.key.in_(keys)] if keys else []
        if prefix is not None:
            wanted.append(table.c.key.startswith(prefix, autoescape=True))
        return table, sa.and_(table.c.study_id == self.study_id, sa.or_(*wanted) if wanted else sa.false())

    def system_attrs(self, keys: Iterable[str] = (), prefix: str | None = None) -> dict[str, Any]:
        import sqlalchemy as sa

        table, where = self._keyed(keys, prefix)
        rows = self._execute(sa.select(table.c.key, table.c.value_json).where(where), rows=True)
        return {key: json.loads(value) for key, value in rows}

    def delete_system_attrs(self, keys: Iterable[str] = (), prefix: str | None = None) -> int:
        import sqlalchemy as sa

        table, where = self._keyed(keys, prefix)
        return int(self._execute(sa.delete(table).where(where), write=True))

    def _param_rows(self, name: str) -> tuple[Any, Any]:
        """Optuna's table of trial parameters, and the condition selecting the study's values of ``name``."""
        import sqlalchemy as sa

        models = internals.rdb_models()
        params, trials = models.TrialParamModel.__table__, models.TrialModel.__table__
        study_trials = sa.select(trials.c.trial_id).where(trials.c.study_id == self.study_id)
        return params, sa.and_(params.c.param_name == name, params.c.trial_id.in_(study_trials))

    def param_distributions(self, name: str) -> set[str]:
        import sqlalchemy as sa

        params, where = self._param_rows(name)
        with self.backend.engine.connect() as connection:
            return set(connection.execute(sa.select(params.c.distribution_json).where(where).distinct()).scalars())

    def set_param_distribution(self, name: str, distribution: str) -> int:
        import sqlalchemy as sa

        params, where = self._param_rows(name)
        with self.backend.engine.begin() as connection:
            return int(
                connection.execute(sa.update(params).where(where).values(distribution_json=distribution)).rowcount
            )


class StorageQueries(StudyQueries):
    """The answers of Optuna's storage API, for a study that is not in an SQL store (it reads every trial)."""

    def count_trials(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.study.get_trials(deepcopy=False):
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        return counts

    def retry_histories(self) -> dict[int, list[int]]:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        with experimental():
            found = {t.number: RetryHeartbeatStaleTrialCallback.retry_history(t) for t in self.study.get_trials()}
        return {number: list(history) for number, history in found.items() if history}

    def _completed(self) -> list[optuna.trial.FrozenTrial]:
        from optuna.trial import TrialState

        return self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

    def count_better(self, value: float, below: int | None = None) -> int:
        from tuner.direction import is_better

        direction = "maximize" if self.maximize else "minimize"
        return sum(
            1
            for t in self._completed()
            if t.value is not None and is_better(t.value, value, direction) and (below is None or t.number < below)
        )

    def nth_best_trial(self, n: int) -> tuple[int, int] | None:
        sign = -1.0 if self.maximize else 1.0
        ranked = sorted(self._completed(), key=lambda t: (sign * float(t.value or 0.0), t.number))
        return (ranked[n].number, internals.trial_id(ranked[n])) if n < len(ranked) else None

    def system_attrs(self, keys: Iterable[str] = (), prefix: str | None = None) -> dict[str, Any]:
        keys = set(keys)
        every = internals.study_system_attrs(self.study)
        return {k: v for k, v in every.items() if k in keys or (prefix is not None and k.startswith(prefix))}

    def delete_system_attrs(self, keys: Iterable[str] = (), prefix: str | None = None) -> int:
        found = self.system_attrs(keys, prefix)
        for key in found:
            internals.set_study_system_attr(self.study, key, "")
        return len(found)

    def param_distributions(self, name: str) -> set[str]:
        from optuna.distributions import distribution_to_json

        trials = self.study.get_trials(deepcopy=False)
        return {distribution_to_json(t.distributions[name]) for t in trials if name in t.distributions}

    def set_param_distribution(self, name: str, distribution: str) -> int:
        from tuner.errors import ConfigError

        raise ConfigError(
            f"study '{self.study.study_name}' is not in an SQL store, where tuner can extend its search space: "
            "give the run another study name."
        )


def queries_of(study: optuna.Study) -> StudyQueries:
    """The queries about ``study``, answered by its SQL store where it has one."""
    backend = internals.sql_backend_of(study)
    return SqlQueries(study, backend) if backend is not None else StorageQueries(study)
