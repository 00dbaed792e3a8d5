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
import logging
import socket
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from optuna.storages import RDBStorage

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from tuner.study import WarmStartEntry

__all__ = ["QueueStorage", "QueueEmpty", "study_lock", "planned_trials", "fill_queue", "superseded_numbers"]

logger = logging.getLogger(__name__)


class QueueEmpty(Exception):
    """A worker asked for a trial and the study's queue had none left."""


class QueueStorage(RDBStorage):
    """Optuna's RDB storage where, while :attr:`queue_only` is set, ``study.ask()`` only takes waiting
    trials: asking for a new one raises :class:`QueueEmpty` instead of creating it.

    Trials created from a template (``enqueue_trial``, ``add_trial``, the heartbeat retry) are
    unaffected. Optuna's cache layer calls ``_create_new_trial``, its public API ``create_new_trial``:
    both are guarded.
    """

    queue_only: bool = False

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        self._check_queue(template_trial)
        return super().create_new_trial(study_id, template_trial)

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        self._check_queue(template_trial)
        return super()._create_new_trial(study_id, template_trial)

    def _check_queue(self, template_trial: FrozenTrial | None) -> None:
        if self.queue_only and template_trial is None:
            raise QueueEmpty("no waiting trial left in the study's queue")


def backend(study: optuna.Study) -> Any:
    """The study's storage under Optuna's cache layer."""
    storage = study._storage
    return getattr(storage, "_backend", storage)


#: a lock older than this is the leftover of a worker that died holding it
_LOCK_STALE_S = 60.0


@contextlib.contextmanager
def study_lock(study: optuna.Study, what: str, timeout: float = 2 * _LOCK_STALE_S) -> Iterator[None]:
    """Hold a lock named ``what`` on ``study`` across every worker and machine sharing the store.

    The lock is a study named ``<study>::lock:<what>``: creating a study with a taken name fails
    atomically in every SQL database Optuna supports, and deleting it releases the lock (it exists
    for milliseconds). A lock left by a worker that died is taken over after :data:`_LOCK_STALE_S`.
    """
    import optuna

    storage = study._storage
    name = f"{study.study_name}::lock:{what}"
    started = time.monotonic()
    while True:
        try:
            lock_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], name)
            storage.set_study_system_attr(lock_id, "holder", {"host": socket.gethostname(), "at": time.time()})
            break
        except optuna.exceptions.DuplicatedStudyError:
            if time.monotonic() - started > timeout:
                logger.warning("taking over the lock %s: its holder has not released it in %.0f s", name, timeout)
                with contextlib.suppress(KeyError):
                    storage.delete_study(storage.get_study_id_from_name(name))
                started = time.monotonic()
            time.sleep(0.1)
    try:
        yield
    finally:
        with contextlib.suppress(KeyError):
            storage.delete_study(lock_id)


def superseded_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of trials that a retry replaced (their worker died, or was interrupted)."""
    replaced: set[int] = set()
    for trial in trials:
        replaced.update(trial.system_attrs.get("retry_history", ()))
    return replaced


def planned_trials(study: optuna.Study) -> int:
    """Trials that count towards the budget: every trial but those a retry replaced."""
    trials = study.get_trials(deepcopy=False)
    return len(trials) - len(superseded_numbers(trials))


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
        entries = [] if "warm_start" in study.user_attrs else list(warm_start)
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
            study.enqueue_trial(dict(entry.params), user_attrs={"warm_start": entry.name})
        for _ in range(missing - len(entries)):
            study.enqueue_trial({})
        if warm_start and "warm_start" not in study.user_attrs:
            study.set_user_attr("warm_start", {"source": warm_start_source, "entries": [e.name for e in entries]})
            logger.info(
                "study '%s': enqueued %d warm-start configurations from %s",
                study.study_name,
                len(entries),
                warm_start_source,
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
