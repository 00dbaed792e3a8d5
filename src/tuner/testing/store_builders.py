"""Building large studies fast, for tests and benchmarks: finished trials and study attributes written in
bulk, straight into Optuna's tables, while nothing else writes to the study (never for workers)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tuner.store import optuna_internals as internals

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = ["insert_trials", "insert_study_system_attrs"]


def _utc(moment: Any) -> Any:
    import datetime

    if moment is None:
        return None
    return moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def insert_study_system_attrs(study: optuna.Study, attrs: Mapping[str, Any]) -> None:
    """Add study system attributes that do not exist yet, in one transaction (``set_study_system_attr``
    takes one per key): for building large studies (tests, benchmarks)."""
    import sqlalchemy as sa

    backend = internals.sql_backend_of(study)
    if backend is None:
        for key, value in attrs.items():
            internals.set_study_system_attr(study, key, value)
        return
    table = internals.rdb_models().StudySystemAttributeModel.__table__
    rows = [{"study_id": internals.study_id(study), "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
    if rows:
        with backend.engine.begin() as connection:
            connection.execute(sa.insert(table), rows)


def insert_trials(study: optuna.Study, trials: Iterable[FrozenTrial]) -> int:
    """Add finished ``trials`` to ``study`` in one transaction, numbered after its existing trials; returns
    how many. What ``study.add_trials`` stores (values, parameters, attributes, intermediate values, start
    and end times), about 50x faster: it is for building large studies (tests, benchmarks) while nothing else
    writes to the study, not for workers. Trials are validated as ``add_trial`` validates them.
    """
    import sqlalchemy as sa

    models = internals.rdb_models()
    backend = internals.sql_backend_of(study)
    if backend is None:
        kind = type(internals.backend_of(study)).__name__
        raise TypeError(f"insert_trials needs an SQL store (RDBStorage), not {kind}")
    table = {name: getattr(models, name).__table__ for name in _TRIAL_MODELS}
    value_type, step_type = models.TrialValueModel, models.TrialIntermediateValueModel
    count = 0
    with backend.engine.begin() as connection:
        trials_table = table["TrialModel"]
        number = connection.execute(
            sa.select(sa.func.count())
            .select_from(trials_table)
            .where(trials_table.c.study_id == internals.study_id(study))
        ).scalar_one()
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in _TRIAL_MODELS if name != "TrialModel"}
        for trial in trials:
            internals.validate_trial(trial)
            inserted = connection.execute(
                sa.insert(trials_table).values(
                    number=number,
                    study_id=internals.study_id(study),
                    state=trial.state,
                    datetime_start=_utc(trial.datetime_start),
                    datetime_complete=_utc(trial.datetime_complete),
                )
            ).inserted_primary_key
            assert inserted is not None
            trial_id = inserted[0]
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
