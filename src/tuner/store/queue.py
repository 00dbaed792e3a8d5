"""An exact trial budget shared by any number of workers: the study's queue of waiting trials.

A study's budget is a number of trials. The first worker to reach a study enqueues them as waiting
trials (its warm-start configurations first, then empty "tickets" whose parameters the sampler
chooses when a worker takes them), and every worker then only takes trials from that queue: taking
one is a single row update under a lock in the database, so two workers never take the same trial and
none creates one beyond the budget. A trial whose worker died or was interrupted is re-queued as a
retry that replaces it (it does not count twice), once: whichever workers find it failed, only the first
to claim its retry (one row of the study's system attributes, created atomically) queues one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tuner.quiet import experimental
from tuner.store import optuna_internals as internals
from tuner.store import records
from tuner.store.lock import StudyAttrRow, study_lock
from tuner.store.queries import queries_of
from tuner.store.retry import RetryingStorage
from tuner.store.sql import heartbeat_ages, read_trials, silent_running_trials

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from tuner.study import WarmStartEntry

__all__ = [
    "QueueStorage",
    "QueueEmpty",
    "planned_trials",
    "fill_queue",
    "requeue",
    "retry_callback",
    "RetryOnce",
    "claim_retry",
    "MAX_RETRY",
]

logger = logging.getLogger(__name__)

#: How many times a trial whose worker died (or was interrupted) is run again before it stays failed.
MAX_RETRY = 3


class QueueEmpty(Exception):
    """A worker asked for a trial and the study's queue had none left."""


class QueueStorage(RetryingStorage):
    """tuner's store: Optuna's RDB storage that rides out an outage (:class:`tuner.store.retry.RetryingStorage`),
    whose trials are read in bulk (:func:`tuner.store.sql.read_trials`, a fraction of the time of Optuna's ORM)
    and where, while :attr:`queue_only` is set, ``study.ask()`` only takes waiting trials: asking for a new one
    raises :class:`QueueEmpty` instead of creating it. A running trial found without a heartbeat gets its
    ``fail_reason`` (:func:`tuner.store.records.stale_reason`) before Optuna marks it failed.

    Trials created from a template (``enqueue_trial``, ``add_trial``, the heartbeat retry) are unaffected.
    """

    queue_only: bool = False

    def read_trials(
        self, study_id: int, states: Any, included_trial_ids: set[int], trial_id_greater_than: int
    ) -> list[FrozenTrial]:
        return read_trials(self, study_id, states, included_trial_ids, trial_id_greater_than)

    def allow_new_trial(self) -> None:
        if self.queue_only:
            raise QueueEmpty("no waiting trial left in the study's queue")

    def stale_trials(self, study_id: int) -> list[int]:
        import optuna

        grace = float(self.grace_period or 2 * (self.heartbeat_interval or 0))
        # Optuna sees only trials with a heartbeat: one whose worker died before its first stays RUNNING for ever
        found = [*super().stale_trials(study_id), *silent_running_trials(self, study_id, grace)]
        if not found:
            return found
        ages = heartbeat_ages(self, found)
        failing = []
        for trial_id in found:
            try:
                records.fail_stale_trial(self, trial_id, records.stale_reason(ages.get(trial_id), grace))
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # it finished meanwhile
            failing.append(trial_id)
        return failing


class RetryOnce:
    """Optuna's re-queueing of a dead trial (same parameters, its epoch records, reports and checkpoint), done
    at most once per trial: the worker that claims the trial's retry first (:func:`claim_retry`) queues it."""

    def __init__(self, max_retry: int | None = MAX_RETRY) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if claim_retry(study, trial):
            self.queue(study, trial)
            reason = records.TrialRecord.of(trial, records.StudyRecord.of(study)).fail_summary
            logger.warning("trial %d marked failed: %s", trial.number, reason or "no heartbeat")

    def queue(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Queue the retry (the caller holds its claim); the failures of ``trial`` that were not its own (a full
        artifact folder: :func:`tuner.store.records.retries_not_counted`) do not count against the limit."""
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        limit = None if self.max_retry is None else self.max_retry + records.retries_not_counted(trial)
        with experimental():  # 'experimental' in Optuna since 2.8
            RetryHeartbeatStaleTrialCallback(max_retry=limit, inherit_intermediate_values=True)(study, trial)


def retry_callback(max_retry: int | None = MAX_RETRY) -> RetryOnce:
    """What re-queues a trial found without a heartbeat (Optuna's ``heartbeat_stale_trial_callback``)."""
    return RetryOnce(max_retry)


def claim_retry(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Whether this worker may queue the retry of the failed ``trial``: True for the first worker to ask, by
    creating the study's system attribute ``tuner:retry:N`` (atomic), False for every later one."""
    if internals.sql_backend_of(study) is None:
        return True  # one process: nobody else retries it
    claim = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex})
    return StudyAttrRow(study, f"{RETRY_CLAIM}{trial.number}").insert(claim)


#: the prefix of the study system attributes that claim a trial's retry (:func:`claim_retry`)
RETRY_CLAIM = "tuner:retry:"


def planned_trials(study: optuna.Study) -> int:
    """Trials that count towards the budget: every trial but those a retry replaced (counted by the database,
    without reading the study's trials)."""
    queries = queries_of(study)
    replaced = set().union(*queries.retry_histories().values())
    return sum(queries.count_trials().values()) - len(replaced)


def fill_queue(
    study: optuna.Study,
    target: int | None,
    add: int = 0,
    warm_start: Sequence[WarmStartEntry] = (),
    warm_start_source: str = "inline",
) -> tuple[int, int]:
    """Enqueue trials until the study plans ``target`` (or, with ``add``, ``add`` more than it does now).

    Runs under :func:`study_lock`, so workers starting together enqueue the budget exactly once.
    The warm-start configurations come first, once per study. Returns ``(trials planned before,
    trials enqueued)``: one worker of those starting a new study together sees 0 planned.
    """
    with study_lock(study, "queue"):
        planned = planned_trials(study)
        wanted = planned + add if target is None else target
        done_before = records.StudyRecord.of(study).warm_start is not None
        entries = [] if done_before else list(warm_start)
        missing = max(0, wanted - planned)
        if entries and len(entries) > missing:
            logger.warning(
                "study '%s': the budget leaves room for %d of the %d warm-start configurations; the rest are "
                "not run (raise n_trials to run them all)",
                study.study_name,
                missing,
                len(entries),
            )
            entries = entries[:missing]
        for entry in entries:
            study.enqueue_trial(dict(entry.params), user_attrs=records.warm_start_attrs(entry.name))
        for _ in range(missing - len(entries)):
            study.enqueue_trial({})
        if warm_start and not done_before:
            records.write_warm_start(study, warm_start_source, [e.name for e in entries])
            logger.info(
                "study '%s': enqueued %d warm-start configuration%s from %s",
                study.study_name,
                len(entries),
                "" if len(entries) == 1 else "s",
                "the study file" if warm_start_source == "inline" else warm_start_source,
            )
        return planned, missing


def requeue(study: optuna.Study, trial: FrozenTrial, why: str) -> int | None:
    """Queue a retry of the finished-as-failed ``trial`` that replaces it (same parameters, its epoch
    records, reports and checkpoint). Returns the retry's number, or None past the retry limit or when
    another worker has queued its retry already."""
    if not claim_retry(study, trial):
        logger.warning("trial %d (%s) was re-queued already by another worker", trial.number, why)
        return None
    before = {t.number for t in study.get_trials(deepcopy=False, states=_waiting())}
    RetryOnce(MAX_RETRY).queue(study, trial)
    added = [t.number for t in study.get_trials(deepcopy=False, states=_waiting()) if t.number not in before]
    if not added:
        logger.warning("trial %d (%s) was retried %d times already: it stays failed", trial.number, why, MAX_RETRY)
        return None
    return added[0]


def _waiting() -> tuple[Any, ...]:
    import optuna

    return (optuna.trial.TrialState.WAITING,)
