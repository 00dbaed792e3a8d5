"""Writing the record layout (see :mod:`tuner.store.records`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tuner.quiet import experimental
from tuner.store import optuna_internals as internals

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
    EPOCHS,
    EPOCHS_RUN,
    EXTENSIONS,
    FAIL_REASON,
    MAX_EPOCHS,
    MODEL,
    PROBLEM,
    RESULT,
    RESUMED_FROM,
    RETRIES_NOT_COUNTED,
    SECONDS,
    SEED,
    STEPS,
    STUDY_KEYS,
    TEST,
    WARM_START,
    TrialAttrs,
)
from tuner.store.records._read import _table, _table_records

# -- writing ---------------------------------------------------------------------------------------------


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


def write_steps(trial: optuna.Trial, per_step: Mapping[str, Mapping[str, float]], result: Mapping[str, float]) -> None:
    """Record a stepwise trial: each evaluated item's values (by its id) and the combined metrics."""
    trial.set_user_attr(STEPS, {item: dict(values) for item, values in per_step.items()})
    trial.set_user_attr(RESULT, dict(result))


def write_test(study: optuna.Study, result: Mapping[str, Any], trial: int | None = None) -> None:
    """Record ``tuner evaluate``'s figures (the trial evaluated, on which split, its metrics and the baseline's):
    as the study's (``test``) for its own choice, under ``test/trial/N`` for a trial asked for by number."""
    study.set_user_attr(TEST if trial is None else f"{TEST}/trial/{trial}", dict(result))
