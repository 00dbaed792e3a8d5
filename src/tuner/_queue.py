"""An exact trial budget shared by any number of workers: the study's queue of waiting trials.

A study's budget is a number of trials. The first worker to reach a study enqueues them as waiting
trials (its warm-start configurations first, then empty "tickets" whose parameters the sampler
chooses when a worker takes them), and every worker then only takes trials from that queue: taking
one is a single row update under a lock in the database, so two workers never take the same trial and
none creates one beyond the budget. A trial whose worker died or was interrupted is re-queued as a
retry that replaces it (it does not count twice).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tuner import records
from tuner._compat import GuardedTrialCreation, StudyAttrRow

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from tuner.study import WarmStartEntry

__all__ = ["QueueStorage", "QueueEmpty", "study_lock", "planned_trials", "fill_queue", "requeue", "LOCK_STALE_S"]

logger = logging.getLogger(__name__)


class QueueEmpty(Exception):
    """A worker asked for a trial and the study's queue had none left."""


class QueueStorage(GuardedTrialCreation):
    """Optuna's RDB storage where, while :attr:`queue_only` is set, ``study.ask()`` only takes waiting
    trials: asking for a new one raises :class:`QueueEmpty` instead of creating it.

    Trials created from a template (``enqueue_trial``, ``add_trial``, the heartbeat retry) are unaffected.
    """

    queue_only: bool = False

    def _allow_new_trial(self) -> None:
        if self.queue_only:
            raise QueueEmpty("no waiting trial left in the study's queue")


#: A lock whose holder has not refreshed it for this long (seconds, on the waiter's own clock) was left
#: by a worker that died holding it, and is taken over. A live holder refreshes it every sixth of that.
LOCK_STALE_S = 60.0


@contextlib.contextmanager
def study_lock(study: optuna.Study, what: str, stale_after: float | None = None) -> Iterator[None]:
    """Hold a lock named ``what`` on ``study`` across every worker and machine sharing the store.

    The lock is one row of the study's system attributes (``tuner:lock:<what>``) holding its holder's
    host, process, a token and a count. Creating the row is atomic (a unique key), so one worker gets
    it; the others wait. The holder refreshes the row (a new count) every ``stale_after / 6`` seconds
    from a thread, and deletes it when done. A waiter takes the lock over only when the row has not
    changed for ``stale_after`` seconds: its holder died (measured on the waiter's own clock, so the
    clocks of different machines need not agree). Taking over deletes the row only if it still holds
    what the waiter saw, so two waiters that time out together cannot both win, nor remove a lock
    that a third took in the meantime. ``stale_after`` defaults to :data:`LOCK_STALE_S`.
    """
    stale_after = LOCK_STALE_S if stale_after is None else stale_after
    row = StudyAttrRow(study, f"tuner:lock:{what}")
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "beat": 0}
    mine = json.dumps(holder)
    seen: str | None = None
    seen_since = 0.0
    while not row.insert(mine):
        current = row.read()
        now = time.monotonic()
        if current is None:
            continue  # released in the meantime: try again at once
        if current != seen:
            seen, seen_since = current, now
        elif now - seen_since >= stale_after:
            if row.delete(current):
                logger.warning(
                    "study '%s': took over the lock '%s' of %s, which has not been refreshed for %.0f s "
                    "(its worker died holding it)", study.study_name, what, _who(current), now - seen_since,
                )  # fmt: skip
            seen = None
            continue
        time.sleep(0.05)
    stop = threading.Event()
    state = {"value": mine}

    def refresh() -> None:
        while not stop.wait(stale_after / 6):
            holder["beat"] += 1
            value = json.dumps(holder)
            if not row.replace(state["value"], value):
                logger.warning("study '%s': the lock '%s' was taken over while held", study.study_name, what)
                return
            state["value"] = value

    refresher = threading.Thread(target=refresh, name=f"tuner-lock-{what}", daemon=True)
    refresher.start()
    try:
        yield
    finally:
        stop.set()
        refresher.join()
        row.delete(state["value"])


def _who(value: str) -> str:
    try:
        holder: Any = json.loads(value)
        return f"{holder['host']} (pid {holder['pid']})"
    except (ValueError, KeyError, TypeError):
        return "an unknown holder"


def planned_trials(study: optuna.Study) -> int:
    """Trials that count towards the budget: every trial but those a retry replaced (counted by the database,
    without reading the study's trials)."""
    from tuner import _compat

    replaced = set().union(*_compat.retry_histories(study).values())
    return sum(_compat.count_trials(study).values()) - len(replaced)


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
    from tuner.storage import MAX_RETRY, retry_callback

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
