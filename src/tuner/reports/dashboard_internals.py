"""Every use of optuna-dashboard's private API, in one place.

tuner writes markdown notes beside a study and its trials, attaches its figures, and answers the study
page of a large study faster than optuna-dashboard does; for that it needs the layout of optuna-dashboard's
notes (their keys and chunks), the prefix under which it keeps plotly figures, its serializer, its cache of
study properties, and the trial object its note functions read. Each is a small function here with a test
in ``tests/test_dashboard_internals.py``, so an upgrade of optuna-dashboard that changes one fails there
first, by name. pyproject.toml bounds its version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuner.store import optuna_internals as internals
from tuner.store.queries import queries_of

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = [
    "PLOT_DATA_PREFIX",
    "read_note",
    "write_note",
    "delete_note",
    "dashboard_study_detail",
    "DashboardTrial",
    "first_note_attrs",
]

#: optuna-dashboard's system-attribute prefix for plotly graph objects (``dashboard:plot_data:<id>:<chunk>``)
PLOT_DATA_PREFIX = "dashboard:plot_data:"


def read_note(study: optuna.Study, trial_id: int | None = None) -> str:
    """The optuna-dashboard note of the study (``trial_id`` None) or of one of its trials, as
    ``optuna_dashboard.get_note`` reads it, without reading every other note and figure of the study."""
    from optuna_dashboard._note import get_note_from_system_attrs, note_str_key_prefix, note_ver_key

    attrs = queries_of(study).system_attrs([note_ver_key(trial_id)], note_str_key_prefix(trial_id))
    return get_note_from_system_attrs(attrs, trial_id)["body"]


def write_note(study: optuna.Study, trial_id: int | None, body: str) -> None:
    """Save ``body`` as the note of the study (``trial_id`` None) or of one of its trials, as
    ``optuna_dashboard.save_note`` does (a new version; the body in chunks; chunks left over from a longer
    note blanked), reading only that note's own rows."""
    from optuna_dashboard._note import note_str_key_prefix, note_ver_key, split_body

    ver_key, prefix = note_ver_key(trial_id), note_str_key_prefix(trial_id)
    current = queries_of(study).system_attrs([ver_key], prefix)
    internals.set_study_system_attr(study, ver_key, int(current.get(ver_key, 0)) + 1)
    chunks = split_body(body, trial_id)
    for key, value in chunks.items():
        internals.set_study_system_attr(study, key, value)
    for i in range(len(chunks), sum(1 for key in current if key.startswith(prefix))):
        internals.set_study_system_attr(study, f"{prefix}{i}", "")


def first_note_attrs(trial_id: int | None, body: str) -> dict[str, Any]:
    """The study system attributes that hold ``body`` as the first version of the note of a trial (or, with
    ``trial_id`` None, of the study), as ``optuna_dashboard.save_note`` writes them: for building large studies
    in one transaction (tests, benchmarks)."""
    from optuna_dashboard._note import note_ver_key, split_body

    return {note_ver_key(trial_id): 1, **split_body(body, trial_id)}


def delete_note(study: optuna.Study, trial_id: int | None) -> None:
    """Remove the optuna-dashboard note of the study (``trial_id`` None) or of one of its trials (its rows
    go; on a storage that is not an RDB store its chunks are blanked)."""
    from optuna_dashboard._note import note_str_key_prefix, note_ver_key

    queries_of(study).delete_system_attrs([note_ver_key(trial_id)], note_str_key_prefix(trial_id))


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
        return cls(study, internals.trial_id(trial))

    @property
    def storage(self) -> optuna.storages.BaseStorage:
        return internals.storage_of(self.study)
