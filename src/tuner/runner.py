"""Running a study: one Optuna study in the store, one Lightning fit per trial, every epoch recorded."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner import _compat, records
from tuner.errors import ConfigError, TunerError
from tuner.objectives.base import Objective, StepwiseObjective, TrainedObjective, get_objective_class
from tuner.search_space import SearchSpace, TrialConfig
from tuner.storage import mask_url, open_storage, resolve_storage_url
from tuner.study import StudySpec, load_warm_start

if TYPE_CHECKING:
    import lightning.pytorch as pl
    import optuna

    from tuner.training.checkpoint import EpochCheckpoint

__all__ = [
    "run_study",
    "fit",
    "FitResult",
    "validate",
    "evaluate_steps",
    "StepsResult",
    "baseline_config",
    "prepare_objective",
    "device_settings",
    "describe_failure",
    "TrialFailed",
]

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    """The outcome of one fine-tuning run (a trial, or a ``tuner train``)."""

    history: dict[int, dict[str, float]]
    best_epoch: int | None
    pruned_at: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def best(self, metric: str) -> float:
        if self.best_epoch is None:
            return float("nan")
        return self.history[self.best_epoch][metric]


#: library warnings that say nothing actionable about a tuner run
_QUIET = (
    r".*but have no logger configured.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*Your `IterableDataset` has `__len__` defined.*",
    r".*target_rate is required by Identity.*",
    r".*does not have many workers which may be a bottleneck.*",
    r".*The number of training batches \(\d+\) is smaller than the logging interval.*",
    r".*`torch.nn.utils.weight_norm` is deprecated.*",  # s3prl's WavLM
    r".*Support for mismatched key_padding_mask and attn_mask is deprecated.*",  # s3prl's WavLM
    r".*when using `ckpt_path`, callbacks used to create the checkpoint need to be provided.*",  # tuner evaluate
)


def _silence_library_loggers() -> None:
    """Lightning's "GPU available: False" and tips, s3prl's configs: noise in a study log (shown with -vv)."""
    if not logger.isEnabledFor(logging.DEBUG):
        for name in ("lightning.pytorch", "s3prl"):
            logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    _silence_library_loggers()
    with warnings.catch_warnings():
        for pattern in _QUIET:
            warnings.filterwarnings("ignore", message=pattern)
        yield


def prepare_objective(
    spec: StudySpec, workdir: str | Path = "storage", store: tuple[str, Path] | None = None
) -> tuple[Objective, SearchSpace]:
    """The study's objective (data validated) and search space (validated), before the store is written.

    ``store``: the store URL and artifact folder, where the objective looks up other studies it names
    (a pipeline's ``pretrained="study:NAME"``)."""
    _check_trainer_options(spec)
    objective_class = get_objective_class(spec.objective)
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


def _check_trainer_options(spec: StudySpec) -> None:
    """A misspelled ``trainer`` argument is an error before any trial, not a TypeError in the first one."""
    import inspect

    import lightning.pytorch as pl

    from tuner.search_space import _did_you_mean

    known = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    for key in spec.trainer:
        if key not in known:
            raise ConfigError(
                f"{spec.where}: trainer option '{key}'{_did_you_mean(key, known)} is not an argument of "
                "lightning.Trainer (https://lightning.ai/docs/pytorch/stable/common/trainer.html#trainer-class-api)."
            )


def fit(
    objective: Objective,
    config: TrialConfig,
    seed: int,
    max_epochs: int,
    *,
    trial: optuna.Trial | None = None,
    trainer_options: Mapping[str, Any] | None = None,
    callbacks: list[pl.Callback] | None = None,
    device: str | None = None,
    resume_from: str | Path | None = None,
    prune_on: str | None = None,
) -> FitResult:
    """Train ``objective`` with ``config`` for up to ``max_epochs``, reporting to ``trial`` if given.

    ``device``: see :func:`device_settings`. ``resume_from``: a Lightning checkpoint of this same run
    (model, optimizer, schedule, epoch and records) to continue after its epoch. A NaN or infinite
    loss raises :class:`~tuner.training.divergence.TrialDiverged`; Ctrl-C raises ``KeyboardInterrupt``
    once Lightning has shut the run down. ``prune_on``: the per-epoch value reported to ``trial`` (default:
    the objective's metric; see :func:`pruning_value`).
    """
    import lightning.pytorch as pl

    from tuner.training.divergence import DivergenceGuard
    from tuner.training.reporting import TrialReporter

    accelerator, devices = device_settings(device)
    inputs = objective.build(config, seed)
    _attach_optimization(inputs.module, objective, config, max_epochs)
    reporter = TrialReporter(objective, trial, prune_on=prune_on)
    with _quiet_libraries():
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[reporter, DivergenceGuard(), *(callbacks or [])],
            **{**inputs.trainer_options, **dict(trainer_options or {})},
        )
        try:
            trainer.fit(
                inputs.module,
                datamodule=inputs.datamodule,
                train_dataloaders=inputs.train_dataloaders,
                val_dataloaders=inputs.val_dataloaders,
                ckpt_path=str(resume_from) if resume_from is not None else None,
                # tuner's own epoch checkpoint from the study's artifact folder (pyannote's hold its task
                # specifications, which torch's weights-only loader refuses): trusted like the store itself
                weights_only=False if resume_from is not None else None,
            )
        except SystemExit:
            if trainer.interrupted:  # Lightning answers Ctrl-C with a graceful shutdown, then sys.exit(1)
                raise KeyboardInterrupt from None
            raise
    info = dict(inputs.info)
    info["trainable_parameters"] = sum(p.numel() for p in inputs.module.parameters() if p.requires_grad)
    info["parameters"] = sum(p.numel() for p in inputs.module.parameters())
    info["device"] = str(trainer.strategy.root_device)
    return FitResult(reporter.history, reporter.best_epoch, reporter.pruned_at, info)


def pruning_value(spec: StudySpec, objective: Objective) -> str:
    """The per-epoch value a trial reports to the pruner: ``spec.prune_on``, else the objective's metric.

    It must be one of the objective's per-epoch values, and improve in the study's direction (the pruner
    compares intermediate values that way), so a loss cannot drive a study that maximizes.
    """
    from tuner.search_space import _did_you_mean

    key = spec.prune_on or objective.metric
    known = (objective.metric, *objective.components)
    if key not in known:
        raise ConfigError(
            f"{spec.where}: prune_on={key!r} is not a per-epoch value of objective '{objective.name}'"
            f"{_did_you_mean(key, known)}. Its values: {', '.join(known)}."
        )
    if objective.direction == "maximize" and key.startswith("loss/"):
        raise ConfigError(
            f"{spec.where}: prune_on={key!r} is a loss (lower is better), but the study maximizes "
            f"{objective.metric} and the pruner compares intermediate values in the study's direction. "
            f"Prune on {objective.metric} (the default) or on a value that grows as the model improves."
        )
    return key


def validate(
    objective: Objective,
    config: TrialConfig,
    seed: int,
    trainer_options: Mapping[str, Any],
    device: str | None = None,
    checkpoint: str | Path | None = None,
) -> dict[str, float]:
    """The validation metrics of ``config``: for a trained objective, of the model as ``checkpoint`` (a trial's
    Lightning checkpoint) left it, else before any training (a study's baseline); for a stepwise one, of the
    configuration on every item of its split."""
    if isinstance(objective, StepwiseObjective):
        return evaluate_steps(objective, config).metrics
    import lightning.pytorch as pl

    assert isinstance(objective, TrainedObjective)
    accelerator, devices = device_settings(device)
    inputs = objective.build(config, seed)
    options = {k: v for k, v in trainer_options.items() if k.startswith("limit_val")}
    with _quiet_libraries():
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=devices,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            **options,
        )
        results = trainer.validate(
            inputs.module,
            datamodule=inputs.datamodule,
            dataloaders=inputs.val_dataloaders,
            ckpt_path=str(checkpoint) if checkpoint is not None else None,
            # tuner's own trial checkpoint (pyannote's hold its task specifications): trusted like the store
            weights_only=False if checkpoint is not None else None,
            verbose=False,
        )
    return objective.epoch_metrics(results[0] if results else {})


@dataclass
class StepsResult:
    """The outcome of a stepwise trial: each evaluated item's values, the combined metrics, where it was pruned."""

    per_step: dict[int, dict[str, float]]
    metrics: dict[str, float]
    pruned_at: int | None = None


def evaluate_steps(
    objective: StepwiseObjective,
    config: TrialConfig,
    *,
    trial: optuna.Trial | None = None,
    prune_on: str | None = None,
    split: str = "development",
    seed: int = 0,
) -> StepsResult:
    """Evaluate ``config`` item by item (in an order shuffled by ``seed``), reporting each item's ``prune_on``
    value (default: the metric) to ``trial`` at its step and stopping where the pruner says so."""
    import random

    steps = objective.steps(split)
    order = list(range(len(steps)))
    random.Random(seed).shuffle(order)  # a pruner comparing items should not see them always in one order
    reported = prune_on or objective.metric
    per_step: dict[int, dict[str, float]] = {}
    for done, index in enumerate(order, start=1):
        started = time.perf_counter()
        values = objective.evaluate_step(config, index, split)
        values["seconds"] = round(time.perf_counter() - started, 3)
        per_step[index] = values
        logger.info(
            "%s item %d/%d (%s): %s=%.4f (%.1fs)", f"trial {trial.number}" if trial is not None else "run", done,
            len(order), steps[index], objective.metric, values[objective.metric], values["seconds"],
        )  # fmt: skip
        if trial is None:
            continue
        trial.report(values[reported], step=index)
        if done < len(order) and trial.should_prune():
            return StepsResult(per_step, objective.combine(list(per_step.values())), pruned_at=index)
    return StepsResult(per_step, objective.combine(list(per_step.values())))


def baseline_config(objective: Objective, space: SearchSpace) -> TrialConfig:
    """The configuration a study's baseline is measured with: the starting model as it is (a trained
    objective), or the library's own default parameters (a stepwise one)."""
    if isinstance(objective, StepwiseObjective):
        return TrialConfig.from_params(objective.default_config())
    return space.config_from({})


def device_settings(device: str | None) -> tuple[str, Any]:
    """Lightning's ``(accelerator, devices)`` for ``device``: None/"auto" (a GPU if there is one, else the
    CPU), "cpu", "cuda" (the first visible GPU) or a GPU index "N" / "cuda:N". One trial runs on one device;
    run one worker per GPU to use several (``--device N``, or ``CUDA_VISIBLE_DEVICES=N``)."""
    import re

    if device is None or device == "auto":
        return "auto", 1
    if device == "cpu":
        return "cpu", 1
    match = re.fullmatch(r"(?:cuda|gpu)(?::(\d+))?|(\d+)", device.strip())
    if match is None:
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda, or a GPU index such as 0 or cuda:1.")
    import torch

    index = int(match.group(1) or match.group(2) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        visible = f"{count} visible GPU(s)" if count else "no visible GPU (torch.cuda.device_count() is 0)"
        raise ConfigError(
            f"device {device!r} asks for GPU {index}, but this machine has {visible}. "
            "Check nvidia-smi and CUDA_VISIBLE_DEVICES (GPUs are renumbered from 0 inside it), or use --device cpu."
        )
    return "gpu", [index]


def _attach_optimization(
    module: pl.LightningModule, objective: Objective, config: TrialConfig, max_epochs: int
) -> None:
    """Make ``module`` train with the trial's optimizer, schedule and unfrozen layers.

    Freezing happens inside ``configure_optimizers`` because that is the first hook where every
    objective's model is complete (pyannote builds its classifier in ``setup``), and the optimizer must
    see only the parameters that train.
    """
    from tuner.training.freeze import apply_unfrozen_layers
    from tuner.training.optim import build_optimizer, build_scheduler

    def configure_optimizers() -> Any:
        try:
            apply_unfrozen_layers(module, objective.layers(module), config.unfrozen_layers)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        optimizer = build_optimizer(module.parameters(), config)
        scheduler = build_scheduler(optimizer, config, max_epochs)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    module.configure_optimizers = configure_optimizers  # type: ignore[method-assign]


def _default_sampler(seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def _default_pruner() -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


#: what fails one trial, not the study: recorded as the trial's ``fail_reason``, then the next trial runs
_TRIAL_FAILURES: tuple[type[BaseException], ...] = (RuntimeError, MemoryError, FloatingPointError)


class TrialFailed(Exception):
    """A trial failed for a reason of its own (diverged, out of memory, ...); the study goes on."""


def describe_failure(error: BaseException) -> str:
    """One line saying why a trial failed and what to do about it."""
    from tuner.training.divergence import TrialDiverged

    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, TrialDiverged):
        return text
    if _is_out_of_memory(error):
        return (
            f"out of memory ({text}). Lower batch_size in the search space (or the objective's crop/segment "
            "length), unfreeze fewer layers, or run one trial per GPU (one worker per device: --device N)."
        )
    return f"{type(error).__name__}: {text}"


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    message = str(error).lower()
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or any(
        marker in message for marker in ("out of memory", "can't allocate memory", "cannot allocate memory")
    )


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


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
) -> optuna.Study:
    """Create or resume ``spec`` in the store and run trials until the study's queue is empty.

    The budget is exact across every worker sharing the store: the first worker enqueues
    ``spec.n_trials`` trials (warm-start configurations first) and workers take them one at a time;
    with ``n_trials`` this call adds that many trials to the budget. A worker whose queue is empty
    waits while other workers still run trials, and retries any whose worker died (no heartbeat for
    the grace period). Each trial keeps its latest epoch as a checkpoint in the artifact folder
    (``artifacts``, see :func:`tuner.storage.resolve_artifact_dir`), so a retried or interrupted
    trial resumes after its last finished epoch. A trial that diverges (NaN loss) or runs out of
    memory is recorded as failed with its reason and the study goes on; on Ctrl-C the running trial
    is marked failed and re-queued, and ``KeyboardInterrupt`` propagates.

    ``callbacks`` are called after each of this worker's trials with the study and the finished trial,
    as those of :meth:`optuna.Study.optimize`; one that calls ``study.stop()`` ends this call after
    that trial (trials left in the queue stay there for a later run).
    """
    import optuna

    from tuner._queue import QueueEmpty, fill_queue
    from tuner.dashboard import publish_study
    from tuner.storage import open_artifact_store, resolve_artifact_dir, store_errors
    from tuner.training.progress import StudyProgress

    _silence_library_loggers()
    url = resolve_storage_url(storage)
    objective, space = prepare_objective(spec, workdir, store=(url, resolve_artifact_dir(url, artifacts)))
    # tuner logs each epoch, trial and failure itself (after the objective's imports: importing
    # pyannote.audio sets Optuna's verbosity to WARNING)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    device_settings(device)  # an unknown or absent device fails before the store is touched
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
        _check_or_record_study(study, spec, objective, space, url, prune_on)
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
            baseline = validate(objective, baseline_config(objective, space), spec.seed, spec.trainer, device)
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
        publish_study(study)  # optuna-dashboard: report figures and study note
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

    worker = _Worker(study, spec, objective, space, prune_on, artifact_store, device, show_progress)
    deadline = None if timeout is None else time.monotonic() + timeout
    queue = _compat.backend_of(study)
    queue.queue_only = True  # take only enqueued trials: the budget is exact
    with (
        StudyProgress(waiting) as display,
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
                else:
                    break  # the timeout
                if not _wait_for_other_workers(study, deadline):
                    break
        except BaseException as error:
            worker.requeue_interrupted(error)
            raise
        finally:
            queue.queue_only = False
    publish_study(study)  # optuna-dashboard: report figures and study note; never raises
    return study


def _count(study: optuna.Study, state: str) -> int:
    """The study's trials in ``state``, counted by the database (a worker's wait loop asks every few seconds)."""
    return _compat.count_trials(study).get(state, 0)


def _wait_for_other_workers(study: optuna.Study, deadline: float | None) -> bool:
    """With the queue empty: wait while other workers run trials, retrying any whose worker died.

    Returns True when a trial is waiting again (a retry), False when none runs any more (or the
    ``deadline`` passed).
    """
    import warnings

    import optuna

    from tuner.storage import heartbeat_settings

    interval, grace = heartbeat_settings()
    said = False
    while deadline is None or time.monotonic() < deadline:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
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

    def run_trial(self, trial: optuna.Trial) -> float:
        """The Optuna objective function: one fine-tuning run (or stepwise evaluation) of the trial's
        configuration."""
        self.current = trial
        config = self.space.suggest(trial)
        seed = records.inherited_seed(trial)  # a retry keeps its trial's seed
        seed = self.spec.seed + trial.number if seed is None else seed
        stored = config.as_dict() if self.objective.uses_common_params else dict(config.extra)
        why_retried = records.start_trial(trial, stored, seed, self.spec.max_epochs)
        if isinstance(self.objective, StepwiseObjective):
            return self._evaluate_trial(trial, config, seed, why_retried)
        return self._fit_trial(trial, config, seed, why_retried)

    def _fit_trial(self, trial: optuna.Trial, config: TrialConfig, seed: int, why_retried: str | None) -> float:
        import optuna

        from tuner.training.checkpoint import EpochCheckpoint
        from tuner.training.progress import BatchProgress

        spec, objective = self.spec, self.objective
        assert isinstance(objective, TrainedObjective)
        checkpoints = EpochCheckpoint(trial, self.artifact_store)
        try:
            resume_from = self._resume_path(trial, checkpoints, why_retried)
            started = time.perf_counter()
            progress = [BatchProgress(self.display, f"trial {trial.number}")] if self.show_progress else []
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
                )
            seconds = time.perf_counter() - started
            records.finish_trial(trial, len(result.history), result.best_epoch, seconds, result.info)
            if result.pruned_at is not None:
                checkpoints.discard()
                raise optuna.TrialPruned(f"pruned after epoch {result.pruned_at + 1}")
            value = result.best(objective.metric)
            if _is_best_so_far(self.study, value, objective.direction):
                checkpoints.keep()  # the checkpoint of the best trial so far stays, for tuner train and the dashboard
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
        (the study goes on, after ``cleanup``); Ctrl-C and study-stopping errors propagate."""
        try:
            yield
        except KeyboardInterrupt:
            records.fail_trial(trial, f"interrupted (Ctrl-C); re-queued to {on_retry}")
            raise
        except _TRIAL_FAILURES as error:
            if isinstance(error, TunerError):
                records.fail_trial(trial, str(error))
                raise
            reason = describe_failure(error)
            logger.debug("trial %d failed", trial.number, exc_info=True)
            records.fail_trial(trial, reason)
            if cleanup is not None:
                cleanup()
            _free_memory()
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
        records.write_resumed_from(trial, origin, epoch, why)
        if epoch is None:
            logger.info("trial %d retries trial %s from its start (no checkpoint to resume)", trial.number, origin)
        else:
            logger.info("trial %d resumes trial %s after epoch %d", trial.number, origin, epoch + 1)
        return resume_from

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        import optuna

        from tuner.dashboard import publish_trial_note

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
        publish_trial_note(study, trial)  # optuna-dashboard note; never raises
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

        from tuner._queue import requeue

        frozen = _compat.frozen_trial(self.study, trial)
        if frozen.state != optuna.trial.TrialState.FAIL:
            return  # still running (its heartbeat stops; another worker retries it after the grace period)
        why = "interrupted" if isinstance(error, KeyboardInterrupt) else type(error).__name__
        retry = requeue(self.study, frozen, why)
        if retry is not None:
            record = records.checkpoint_of(self.study, trial)
            after = f"after epoch {record['epoch'] + 1}" if record else "from its start (no epoch had finished)"
            logger.warning(
                "trial %d %s: marked failed and re-queued as trial %d, which resumes %s. Run the same command "
                "again to continue the study.",
                frozen.number,
                why,
                retry,
                after,
            )


def _is_best_so_far(study: optuna.Study, value: float, direction: str) -> bool:
    import math

    if math.isnan(value):
        return False
    try:
        best = study.best_value
    except ValueError:  # no completed trial yet
        return True
    return value <= best if direction == "minimize" else value >= best


def _check_or_record_study(
    study: optuna.Study, spec: StudySpec, objective: Objective, space: SearchSpace, url: str, prune_on: str
) -> None:
    """Record what the study is on first use; refuse to mix another objective into it later."""
    import tuner

    stored = records.StudyRecord.of(study)
    described = objective.describe()
    records.name_metric(study, objective.metric)
    if stored.recorded:
        if stored.objective != objective.name:
            raise ConfigError(
                f"{spec.where} in {mask_url(url)} was created for objective '{stored.objective}', not "
                f"'{objective.name}'. Give this study another name or use another store (--storage)."
            )
        if stored.prune_on != prune_on:
            raise ConfigError(
                f"{spec.where} in {mask_url(url)} prunes on {stored.prune_on!r}, not {prune_on!r}: its trials' "
                f"intermediate values are that. Set prune_on={stored.prune_on!r} in the study file, "
                "or give this study another name."
            )
        for key in ("data", "pretrained"):
            if getattr(stored, key) != described.get(key):
                logger.warning(
                    "study '%s' was started with %s=%r; this run uses %r (trials will mix both)",
                    spec.name,
                    key,
                    getattr(stored, key),
                    described.get(key),
                )
        return
    records.write_study(
        study,
        {
            **described,
            "metric": objective.metric,
            "direction": objective.direction,
            "components": list(objective.components),
            "prune_on": prune_on,
            "max_epochs": spec.max_epochs,
            "n_trials": spec.n_trials,
            "trainer": dict(spec.trainer),
            "seed": spec.seed,
            "search_space": space.to_dict(),
            "search_space_file": "inline" if isinstance(spec.search_space, Mapping) else str(spec.search_space),
            "tuner_version": tuner.__version__,
            "description": spec.description,
        },
    )
