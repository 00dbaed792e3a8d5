"""Running a study: one Optuna study in the store, one Lightning fit per trial, every epoch recorded."""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner import identity
from tuner._version import __version__
from tuner.direction import is_better
from tuner.errors import ArtifactWriteError, ConfigError, TunerError
from tuner.objectives.base import Objective, StepwiseObjective, TrainedObjective, get_objective_class
from tuner.quiet import experimental, silence_library_loggers
from tuner.search_space import SearchSpace, TrialConfig
from tuner.store import optuna_internals, records
from tuner.store.connect import mask_url, open_storage, resolve_storage_url
from tuner.store.queries import queries_of
from tuner.store.resolver import StudyResolver
from tuner.study import StudySpec, load_warm_start
from tuner.text import describe, did_you_mean
from tuner.training.failures import TRIAL_FAILURES, TrialFailed, describe_failure, free_memory
from tuner.training.fit import check_precision, check_trainer_options, device_settings, fit, validate
from tuner.training.steps import evaluate_steps
from tuner.training.takeover import TrialTakenOver
from tuner.training.threads import share_cores

if TYPE_CHECKING:
    import optuna

    from tuner.training.checkpoint import EpochCheckpoint

__all__ = ["run_study", "prepare_objective", "pruning_value", "baseline_config"]

logger = logging.getLogger(__name__)


def prepare_objective(
    spec: StudySpec, workdir: str | Path = "storage", store: StudyResolver | None = None
) -> tuple[Objective, SearchSpace]:
    """The study's objective (data validated) and search space (validated), before the store is written.

    ``store``: where the objective looks up other studies it names (a pipeline's ``pretrained="study:NAME"``)."""
    check_trainer_options(spec.trainer, spec.where)
    objective_class = get_objective_class(spec.objective)
    trains_differently = spec.precision != "32-true" or spec.accumulate_grad_batches != 1
    if issubclass(objective_class, StepwiseObjective) and trains_differently:
        raise ConfigError(
            f"{spec.where}: objective '{spec.objective}' trains nothing (it tunes parameters), so precision="
            f"{spec.precision!r} and accumulate_grad_batches={spec.accumulate_grad_batches} would change nothing; "
            "remove them (and --precision, --accumulate-grad-batches)."
        )
    # the file (or inline dict) + the study's `fixed`
    space = spec.load_search_space(objective_class.params, common=objective_class.uses_common_params)
    load_warm_start(spec, space)  # warm-start entries are checked against the space before any work
    try:
        objective = objective_class(spec.data, spec.pretrained, spec.options, workdir=workdir)
    except ConfigError as error:  # its options: name the study (file) that gave them
        raise ConfigError(f"{spec.where}: {error}") from None
    objective.store = store
    objective.setup()
    try:
        objective.check_space(space)
    except ConfigError as error:
        raise ConfigError(f"{spec.where}: {error}") from None
    return objective, space


def pruning_value(spec: StudySpec, objective: Objective) -> str:
    """The per-epoch value a trial reports to the pruner: ``spec.prune_on``, else the objective's metric.

    It must be one of the objective's per-epoch values, and improve in the study's direction (the pruner
    compares intermediate values that way), so a loss cannot drive a study that maximizes.
    """
    key = spec.prune_on or objective.metric
    known = (objective.metric, *objective.components)
    if key not in known:
        raise ConfigError(
            f"{spec.where}: prune_on={key!r} is not a per-epoch value of objective '{objective.name}'"
            f"{did_you_mean(key, known)}. Its values: {', '.join(known)}."
        )
    if objective.direction == "maximize" and key.startswith("loss/"):
        raise ConfigError(
            f"{spec.where}: prune_on={key!r} is a loss (lower is better), but the study maximizes "
            f"{objective.metric} and the pruner compares intermediate values in the study's direction. "
            f"Prune on {objective.metric} (the default) or on a value that grows as the model improves."
        )
    return key


def baseline_config(objective: Objective, space: SearchSpace) -> TrialConfig:
    """The configuration a study's baseline is measured with: the starting model as it is (a trained
    objective), or the library's own default parameters (a stepwise one)."""
    if isinstance(objective, StepwiseObjective):
        return TrialConfig.from_params(objective.default_config())
    return space.config_from({})


def _default_sampler(seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def _default_pruner() -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep what is alive now (torch, Lightning, pyannote, the set-up objective) out of the garbage
    collector's full collections while trials run, and give it back after.

    The store's many small objects trigger full collections during a trial, and Optuna runs one after
    each; without this each walks the whole of the heavy libraries again (about 1 s per demo trial, 2-3%
    of it: benchmarks/overhead.py). Garbage first, so that nothing already unreachable is kept.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def run_study(
    spec: StudySpec,
    storage: str | None = None,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    workdir: str | Path = "storage",
    show_progress: bool = True,
    device: str | None = None,
    artifacts: str | Path | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    extend_space: bool = False,
) -> optuna.Study:
    """Create or resume ``spec`` in the store and run trials until the study's queue is empty.

    A study that exists already must be the same problem (:mod:`tuner.identity`: objective, data, checkpoint,
    options, epochs, search space, ...): another one is refused with a :class:`~tuner.errors.StudyChanged` naming
    each difference, before anything is written to the store; with ``extend_space`` a wider search space (a wider
    range, added choices, a fixed parameter now searched over values that hold it) is accepted and recorded.

    The budget is exact across every worker sharing the store: the first worker enqueues
    ``spec.n_trials`` trials (warm-start configurations first) and workers take them one at a time;
    with ``n_trials`` this call adds that many trials to the budget. A worker whose queue is empty
    waits while other workers still run trials, and retries any whose worker died (no heartbeat for
    the grace period). Each trial keeps its latest epoch as a checkpoint in the artifact folder
    (``artifacts``, see :func:`tuner.store.connect.resolve_artifact_dir`), so a retried or interrupted
    trial resumes after its last finished epoch. A trial that diverges (NaN loss) or runs out of
    memory is recorded as failed with its reason and the study goes on; on Ctrl-C the running trial
    is marked failed and re-queued, and ``KeyboardInterrupt`` propagates.

    ``callbacks`` are called after each of this worker's trials with the study and the finished trial,
    as those of :meth:`optuna.Study.optimize`; one that calls ``study.stop()`` ends this call after
    that trial (trials left in the queue stay there for a later run). A :class:`tuner.callbacks.StudyCallback`
    also hears when this call ends normally (``tuner run`` passes
    :class:`tuner.reports.publish.DashboardPublisher`: optuna-dashboard notes and figures).
    """
    import optuna

    from tuner.store.artifacts import open_artifact_store, resolve_artifact_dir
    from tuner.store.connect import store_errors
    from tuner.store.queue import fill_queue

    silence_library_loggers()
    url = resolve_storage_url(storage)
    objective, space = prepare_objective(spec, workdir, store=StudyResolver(url, resolve_artifact_dir(url, artifacts)))
    # tuner logs each epoch, trial and failure itself (after the objective's imports: importing
    # pyannote.audio sets Optuna's verbosity to WARNING)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    device_settings(device)  # an unknown or absent device fails before the store is touched
    check_precision(spec.precision, device, spec.where)  # so does a precision the device cannot train in
    prune_on = pruning_value(spec, objective)  # so does a misspelled prune_on
    with store_errors(url, f"opening study '{spec.name}'"):
        study = optuna.create_study(
            study_name=spec.name,
            storage=open_storage(url),
            sampler=spec.sampler or _default_sampler(spec.seed),
            pruner=spec.pruner or _default_pruner(),
            direction=objective.direction,
            load_if_exists=True,
        )
        space = _check_or_record_study(study, spec, objective, space, url, prune_on, extend_space)
        source = str(spec.warm_start) if isinstance(spec.warm_start, (str, Path)) else "inline"
        planned, added = fill_queue(
            study,
            None if n_trials else spec.n_trials,
            add=n_trials or 0,
            warm_start=load_warm_start(spec, space),
            warm_start_source=source,
        )
        if planned:
            # a resumed study or another worker: a sampler seeded as in the first run would propose the
            # same configurations again
            study.sampler.reseed_rng()
        if not records.StudyRecord.of(study).baseline:
            label = objective.baseline_label
            logger.info("evaluating the study's baseline (%s)", label)
            baseline = validate(
                objective, baseline_config(objective, space), spec.seed, spec.trainer, device, precision=spec.precision
            )
            records.write_baseline(study, baseline, label)
            logger.info("baseline (%s) %s=%.4f", label, objective.metric, baseline.get(objective.metric, float("nan")))
    artifact_store = open_artifact_store(resolve_artifact_dir(url, artifacts))

    waiting, running = _count(study, "WAITING"), _count(study, "RUNNING")
    finished = planned + added - waiting - running
    if not waiting and not running:
        logger.info(
            "study '%s' has run its budget of %d trials: nothing to run. Pass --n-trials N to add trials.",
            spec.name,
            planned + added,
        )
        _study_ended(study, callbacks)
        return study
    logger.info(
        "study '%s' in %s: %d of %d trials finished, %d waiting, %d running elsewhere (%s, %s on %s)",
        spec.name,
        mask_url(url),
        finished,
        planned + added,
        waiting,
        running,
        type(study.sampler).__name__,
        type(study.pruner).__name__,
        prune_on,
    )

    work_queue(
        study, spec, objective, space, prune_on, artifact_store,
        device=device, show_progress=show_progress, timeout=timeout, callbacks=callbacks, url=url,
    )  # fmt: skip
    _study_ended(study, callbacks)
    return study


def work_queue(
    study: optuna.Study,
    spec: StudySpec,
    objective: Objective,
    space: SearchSpace,
    prune_on: str,
    artifact_store: Any,
    *,
    device: str | None,
    show_progress: bool,
    timeout: float | None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]],
    url: str,
) -> None:
    """Run the trials waiting in ``study``'s queue as one worker until none is left (waiting while other
    workers run theirs, retrying those whose worker died) or ``timeout`` passes: the loop every study and its
    confirmation share."""
    from tuner.store.connect import store_errors
    from tuner.store.queue import QueueEmpty, QueueStorage
    from tuner.store.retry import unreachable_in
    from tuner.training.progress import StudyProgress

    worker = _Worker(study, spec, objective, space, prune_on, artifact_store, device, show_progress)
    deadline = None if timeout is None else time.monotonic() + timeout
    queue = optuna_internals.backend_of(study)
    assert isinstance(queue, QueueStorage)  # what open_storage opens
    queue.queue_only = True  # take only enqueued trials: the budget is exact
    with (
        StudyProgress(_count(study, "WAITING")) as display,
        _sigint_restored(),
        _frozen_heap(),
        store_errors(url, f"running study '{spec.name}'"),
    ):
        worker.display = display
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    study.optimize(
                        worker.run_trial,
                        timeout=left,
                        callbacks=[worker.after_trial, *callbacks],
                        catch=(TrialFailed,),
                        gc_after_trial=True,
                    )
                except QueueEmpty:
                    pass
                except Exception as error:
                    if unreachable_in(error) is None and worker.lost_to_another(error):
                        continue  # that trial is another worker's now: take the next one
                    raise
                else:
                    break  # the timeout
                if not _wait_for_other_workers(study, deadline):
                    break
        except BaseException as error:
            unreachable = unreachable_in(error)
            if unreachable is not None:  # nothing can be written: the trial's heartbeat stops, the next run retries it
                raise unreachable from None
            worker.requeue_interrupted(error)
            raise
        finally:
            queue.queue_only = False


def _study_ended(study: optuna.Study, callbacks: Sequence[Callable[..., None]]) -> None:
    """Tell the callbacks that hear it (:class:`tuner.callbacks.StudyCallback`) that this worker's run ended."""
    for callback in callbacks:
        on_study_end = getattr(callback, "on_study_end", None)
        if on_study_end is not None:
            on_study_end(study)


def _count(study: optuna.Study, state: str) -> int:
    """The study's trials in ``state``, counted by the database (a worker's wait loop asks every few seconds)."""
    return queries_of(study).count_trials().get(state, 0)


def _wait_for_other_workers(study: optuna.Study, deadline: float | None) -> bool:
    """With the queue empty: wait while other workers run trials, retrying any whose worker died.

    Returns True when a trial is waiting again (a retry), False when none runs any more (or the
    ``deadline`` passed).
    """
    import optuna

    from tuner.store.connect import heartbeat_settings

    interval, grace = heartbeat_settings()
    said = False
    while deadline is None or time.monotonic() < deadline:
        with experimental():
            optuna.storages.fail_stale_trials(study)  # re-queues the trials of dead workers
        if _count(study, "WAITING"):
            return True
        running = _count(study, "RUNNING")
        if not running:
            return False
        if not said:
            logger.info(
                "no trial left to start; waiting for %d trial(s) running on other workers (one whose worker "
                "stops sending heartbeats for %d s is retried here). Ctrl-C stops waiting.",
                running,
                grace,
            )
            said = True
        time.sleep(min(interval, 5))
    return False


@contextlib.contextmanager
def _sigint_restored() -> Iterator[None]:
    """Give Ctrl-C back to Python after a trial: Lightning ignores SIGINT once it has caught one."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGINT, handler)


class _Worker:
    """One worker's side of a study: runs the trials it takes, records them, and cleans up after them."""

    def __init__(
        self,
        study: optuna.Study,
        spec: StudySpec,
        objective: Objective,
        space: SearchSpace,
        prune_on: str,
        artifact_store: Any,
        device: str | None,
        show_progress: bool,
    ) -> None:
        self.study, self.spec, self.objective, self.space, self.prune_on = study, spec, objective, space, prune_on
        self.artifact_store, self.device, self.show_progress = artifact_store, device, show_progress
        self.display: Any = None
        self.current: optuna.Trial | None = None  # the trial this worker runs, until after_trial
        self.lost: int | None = None  # the trial another worker took over, until work_queue hears of it
        self.raised: BaseException | None = None  # what the running trial raised, if it did

    def run_trial(self, trial: optuna.Trial) -> float:
        """The Optuna objective function: one fine-tuning run (or stepwise evaluation) of the trial's
        configuration."""
        import optuna

        self.current, self.raised = trial, None
        share_cores(self.objective.workdir, self.spec.threads)  # workers come and go: the share, anew
        try:
            config = self.space.suggest(trial)
            seed = records.inherited_seed(trial)  # a retry keeps its trial's seed
            seed = self.spec.seed + trial.number if seed is None else seed
            stored = config.as_dict() if self.objective.uses_common_params else dict(config.extra)
            why_retried = records.start_trial(trial, stored, seed, self.spec.max_epochs)
            searched = describe(trial.params) or "no searched parameter"
            logger.info("trial %d starts: %s, seed %d", trial.number, searched, seed)
            if isinstance(self.objective, StepwiseObjective):
                return self._evaluate_trial(trial, config, seed, why_retried)
            return self._fit_trial(trial, config, seed, why_retried)
        except (TrialTakenOver, optuna.exceptions.UpdateFinishedTrialError):
            # another worker marked it failed (and re-queued it): a write to it, or its heartbeat, found it finished
            self._taken_over(trial)
            raise TrialTakenOver(f"trial {trial.number} was taken over by another worker") from None
        except BaseException as error:
            self.raised = error  # Optuna tells the trial failed, then raises this again
            raise

    def _taken_over(self, trial: optuna.Trial) -> None:
        self.current, self.lost = None, trial.number
        logger.warning(
            "trial %d was marked failed by another worker (no heartbeat of it reached the store for the grace "
            "period): stopped here, its retry resumes it after its last checkpoint",
            trial.number,
        )

    def lost_to_another(self, error: BaseException) -> bool:
        """Whether ``error``, out of ``study.optimize``, means that this worker's trial was taken over by another
        worker (Optuna then cannot tell it: "Cannot tell a FAIL trial"), so that the worker goes on with the next."""
        import optuna

        if self.lost is not None:
            self.lost = None
            return True
        trial = self.current
        if trial is None or error is self.raised:
            return False  # an error of the trial's own, which Optuna told
        if not isinstance(error, (ValueError, optuna.exceptions.UpdateFinishedTrialError)):
            return False
        if optuna_internals.frozen_trial(self.study, trial).state != optuna.trial.TrialState.FAIL:
            return False
        self._taken_over(trial)  # failed by another worker between this worker's last look and its tell
        self.lost = None
        return True

    def _fit_trial(self, trial: optuna.Trial, config: TrialConfig, seed: int, why_retried: str | None) -> float:
        import optuna

        from tuner.store.retry import RetryingStorage
        from tuner.training.checkpoint import EpochCheckpoint
        from tuner.training.progress import BatchProgress
        from tuner.training.takeover import TakeoverGuard

        spec, objective = self.spec, self.objective
        assert isinstance(objective, TrainedObjective)
        checkpoints = EpochCheckpoint(trial, self.artifact_store)
        try:
            resume_from = self._resume_path(trial, checkpoints, why_retried)
            started = time.perf_counter()
            progress: list[Any] = [BatchProgress(self.display, f"trial {trial.number}")] if self.show_progress else []
            backend, trial_id = optuna_internals.backend_of(self.study), optuna_internals.trial_id(trial)
            if isinstance(backend, RetryingStorage):  # its heartbeat notes a trial another worker took over
                progress += [TakeoverGuard(lambda: backend.taken_over(trial_id), f"trial {trial.number}")]
            with self._recording_failures(trial, "resume from its last finished epoch", cleanup=checkpoints.discard):
                result = fit(
                    objective,
                    config,
                    seed,
                    spec.max_epochs,
                    trial=trial,
                    trainer_options=spec.trainer,
                    callbacks=[checkpoints, *progress],
                    device=self.device,
                    resume_from=resume_from,
                    prune_on=self.prune_on,
                    precision=spec.precision,
                    accumulate_grad_batches=spec.accumulate_grad_batches,
                )
            seconds = time.perf_counter() - started
            records.finish_trial(trial, len(result.history), result.best_epoch, seconds, result.info)
            if result.pruned_at is not None:
                checkpoints.discard()
                raise optuna.TrialPruned(f"pruned after epoch {result.pruned_at + 1}")
            value = result.best(objective.metric)
            if records.is_confirmation_run(trial) or _is_best_so_far(self.study, value, objective.direction):
                # the best trial's checkpoint stays, for tuner train and the dashboard; every confirmation run's
                # stays, for tuner evaluate (each seed of the chosen configuration on the test split)
                checkpoints.keep()
            else:
                checkpoints.discard()
            return value
        finally:
            checkpoints.close()

    def _evaluate_trial(self, trial: optuna.Trial, config: TrialConfig, seed: int, why_retried: str | None) -> float:
        """A stepwise trial: every item of the development split (in a shuffled order), pruned between items."""
        import optuna

        objective = self.objective
        assert isinstance(objective, StepwiseObjective)
        origin = records.retried_from(self.study, trial)
        if origin is not None:
            records.write_resumed_from(trial, origin, None, why_retried)
        started = time.perf_counter()
        with self._recording_failures(trial, "run again"):
            result = evaluate_steps(objective, config, trial=trial, prune_on=self.prune_on, seed=seed)
        steps = objective.steps()
        records.write_steps(trial, {steps[i]: values for i, values in sorted(result.per_step.items())}, result.metrics)
        records.finish_trial(trial, 0, None, time.perf_counter() - started, {"items": len(result.per_step)})
        if result.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned after {len(result.per_step)} of {len(steps)} items")
        return result.metrics[objective.metric]

    @contextlib.contextmanager
    def _recording_failures(self, trial: optuna.Trial, on_retry: str, cleanup: Callable[[], None] | None = None):
        """Record why a trial fails: a failure of its own (diverged, out of memory) becomes :class:`TrialFailed`
        (the study goes on, after ``cleanup``); Ctrl-C and study-stopping errors propagate. Nothing is recorded
        for a trial another worker took over, nor in a store that cannot be reached."""
        import optuna

        from tuner.store.retry import StoreUnreachable

        try:
            yield
        except (TrialTakenOver, StoreUnreachable, optuna.exceptions.UpdateFinishedTrialError):
            raise
        except KeyboardInterrupt:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # taken over meanwhile
                records.fail_trial(trial, f"interrupted (Ctrl-C); re-queued to {on_retry}")
            raise
        except TRIAL_FAILURES as error:
            if isinstance(error, TunerError):  # stops the study; a full artifact folder is not the trial's fault
                records.fail_trial(trial, str(error), counts=not isinstance(error, ArtifactWriteError))
                raise
            reason = describe_failure(error)
            logger.debug("trial %d failed", trial.number, exc_info=True)
            records.fail_trial(trial, reason)
            if cleanup is not None:
                cleanup()
            free_memory()
            raise TrialFailed(reason) from error
        except Exception as error:
            records.fail_trial(trial, describe_failure(error))
            raise

    def _resume_path(self, trial: optuna.Trial, checkpoints: EpochCheckpoint, why: str | None) -> Path | None:
        """For a retry: the checkpoint it resumes from (None to start over), recorded as its ``resumed_from``
        with ``why`` the trial it retries stopped. None for a new trial."""
        origin = records.retried_from(self.study, trial)
        if origin is None:
            return None
        resume_from = checkpoints.resume_path()
        epoch = checkpoints.record["epoch"] if resume_from is not None else None  # type: ignore[index]
        records.write_resumed_from(trial, origin, epoch, why, discarded=checkpoints.discarded)
        if epoch is None:
            without = "its checkpoint discarded" if checkpoints.discarded else "no checkpoint to resume"
            logger.info("trial %d retries trial %s from its start (%s)", trial.number, origin, without)
        else:
            logger.info("trial %d resumes trial %s after epoch %d", trial.number, origin, epoch + 1)
        return resume_from

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        import optuna

        self.current = None
        metric = self.objective.metric
        value = "" if trial.value is None else f" {metric}={trial.value:.4f}"
        if self.display is not None:
            self.display.trial_finished(f"last: #{trial.number} {trial.state.name.lower()}{value}")
        if trial.state == optuna.trial.TrialState.COMPLETE:
            best = study.best_trial  # one look-up by the database
            logger.info(
                "trial %d complete:%s (best so far: %.4f, trial %d)", trial.number, value, best.value, best.number
            )
        elif trial.state == optuna.trial.TrialState.FAIL:
            reason = records.TrialRecord.of(trial, records.StudyRecord.of(study)).fail_summary
            logger.warning("trial %d failed: %s", trial.number, reason or "see the log above")
        # Optuna has just collected this trial's garbage: what survived (the study's trials in Optuna's cache
        # among it) joins the frozen heap, so that later collections do not walk a study of 10,000 trials
        gc.freeze()

    def requeue_interrupted(self, error: BaseException) -> None:
        """After an interrupt or a study-stopping error in a trial: queue a retry that resumes it."""
        trial, self.current = self.current, None
        if trial is None:
            return
        try:
            self._requeue(trial, error)
        except Exception as failure:
            logger.warning(
                "could not re-queue trial %d (%s: %s); its heartbeat has stopped, so the next worker retries it "
                "after the grace period",
                trial.number,
                type(failure).__name__,
                failure,
            )

    def _requeue(self, trial: optuna.Trial, error: BaseException) -> None:
        import optuna

        from tuner.store.queue import requeue

        frozen = optuna_internals.frozen_trial(self.study, trial)
        if frozen.state != optuna.trial.TrialState.FAIL:
            return  # still running (its heartbeat stops; another worker retries it after the grace period)
        why = "interrupted" if isinstance(error, KeyboardInterrupt) else type(error).__name__
        retry = requeue(self.study, frozen, why)
        if retry is not None:
            record = records.checkpoint_of(self.study, trial)
            after = f"after epoch {record['epoch'] + 1}" if record else "from its start (no epoch had finished)"
            logger.warning(
                "trial %d %s: marked failed and re-queued as trial %d, which resumes %s when the study runs again.",
                frozen.number,
                why,
                retry,
                after,
            )


def _is_best_so_far(study: optuna.Study, value: float, direction: str) -> bool:
    if math.isnan(value):
        return False
    try:
        best = study.best_value
    except ValueError:  # no completed trial yet
        return True
    return is_better(value, best, direction, or_equal=True)


def _check_or_record_study(
    study: optuna.Study,
    spec: StudySpec,
    objective: Objective,
    space: SearchSpace,
    url: str,
    prune_on: str,
    extend_space: bool,
) -> SearchSpace:
    """Record what the study is on first use; on a later one refuse another problem before anything is written
    (:mod:`tuner.identity`), or extend its search space where ``extend_space`` allows. Returns the space trials
    are asked from (the run's, with its choices in the study's order)."""
    if records.StudyRecord.of(study).recorded:
        reopening = identity.reopen(study, spec, objective, space, prune_on, url, extend_space=extend_space)
        identity.record(study, reopening)
        records.name_metric(study, objective.metric)
        return reopening.space
    records.name_metric(study, objective.metric)
    records.write_study(
        study,
        {
            **objective.describe(),
            "metric": objective.metric,
            "direction": objective.direction,
            "components": list(objective.components),
            "prune_on": prune_on,
            "max_epochs": spec.max_epochs,
            "n_trials": spec.n_trials,
            "trainer": dict(spec.trainer),
            "precision": spec.precision,
            "accumulate_grad_batches": spec.accumulate_grad_batches,
            "seed": spec.seed,
            "search_space": space.to_dict(),
            "search_space_file": "inline" if isinstance(spec.search_space, Mapping) else str(spec.search_space),
            "tuner_version": __version__,
            "description": spec.description,
            "problem": identity.fingerprint(spec, objective, space, prune_on),
        },
    )
    return space
