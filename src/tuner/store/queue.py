"""An exact trial budget shared by any number of workers: the study's queue of waiting trials.

A study's budget is a number of trials. The first worker to reach a study enqueues them as waiting
trials (its warm-start configurations first, then empty "tickets" whose parameters the sampler
chooses when a worker takes them), and every worker then only takes trials from that queue: taking
one is a single row update under a lock in the database, so two workers never take the same trial and
none creates one beyond the budget. A trial whose worker died or was interrupted is re-queued as a
retry that replaces it (it does not count twice).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tuner.quiet import experimental
from tuner.store import records
from tuner.store.lock import study_lock
from tuner.store.queries import queries_of
from tuner.store.retry import RetryingStorage
from tuner.store.sql import read_trials

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from tuner.study import WarmStartEntry

__all__ = ["QueueStorage", "QueueEmpty", "planned_trials", "fill_queue", "requeue", "retry_callback", "MAX_RETRY"]

logger = logging.getLogger(__name__)

#: How many times a trial whose worker died (or was interrupted) is run again before it stays failed.
MAX_RETRY = 3


class QueueEmpty(Exception):
    """A worker asked for a trial and the study's queue had none left."""


class QueueStorage(RetryingStorage):
    """tuner's store: Optuna's RDB storage that rides out an outage (:class:`tuner.store.retry.RetryingStorage`),
    whose trials are read in bulk (:func:`tuner.store.sql.read_trials`, a fraction of the time of Optuna's ORM)
    and where, while :attr:`queue_only` is set, ``study.ask()`` only takes waiting trials: asking for a new one
    raises :class:`QueueEmpty` instead of creating it.

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


def retry_callback(max_retry: int | None = MAX_RETRY) -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Optuna's re-queueing of a dead trial: same parameters, its epoch records, reports and checkpoint."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with experimental():  # 'experimental' in Optuna since 2.8
        return RetryHeartbeatStaleTrialCallback(max_retry=max_retry, inherit_intermediate_values=True)


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
    records, reports and checkpoint). Returns the retry's number, or None past the retry limit."""
    before = {t.number for t in study.get_trials(deepcopy=False, states=_waiting())}
    retry_callback(MAX_RETRY)(study, trial)
    added = [t.number for t in study.get_trials(deepcopy=False, states=_waiting()) if t.number not in before]
    if not added:
        logger.warning("trial %d (%s) was retried %d times already: it stays failed", trial.number, why, MAX_RETRY)
        return None
    return added[0]


def _waiting() -> tuple[Any, ...]:
    import optuna

    return (optuna.trial.TrialState.WAITING,)
