"""Running a study: one Optuna study in the store, one Lightning fit per trial, every epoch recorded."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import ConfigError
from tuner.objectives.base import Objective, get_objective_class
from tuner.search_space import SearchSpace, TrialConfig
from tuner.storage import mask_url, open_storage, resolve_storage_url
from tuner.study import StudySpec, WarmStartEntry, load_warm_start

if TYPE_CHECKING:
    import lightning.pytorch as pl
    import optuna

__all__ = ["run_study", "fit", "FitResult", "prepare_objective"]

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


def prepare_objective(spec: StudySpec, workdir: str | Path = "storage") -> tuple[Objective, SearchSpace]:
    """The study's objective (data validated) and search space (validated), before the store is touched."""
    objective_class = get_objective_class(spec.objective)
    space = spec.load_search_space(objective_class.params)  # the file (or inline dict) + the study's `fixed`
    load_warm_start(spec, space)  # warm-start entries are checked against the space before any work
    objective = objective_class(spec.data, spec.pretrained, spec.options, workdir=workdir)
    objective.setup()
    space.check_unfrozen_layers(objective.num_blocks(), model=f"the {objective.name} model")
    return objective, space


def fit(
    objective: Objective,
    config: TrialConfig,
    seed: int,
    max_epochs: int,
    *,
    trial: optuna.Trial | None = None,
    trainer_options: Mapping[str, Any] | None = None,
    callbacks: list[pl.Callback] | None = None,
) -> FitResult:
    """Train ``objective`` with ``config`` for up to ``max_epochs``, reporting to ``trial`` if given."""
    import lightning.pytorch as pl

    from tuner.training.reporting import TrialReporter

    inputs = objective.build(config, seed)
    _attach_optimization(inputs.module, objective, config, max_epochs)
    reporter = TrialReporter(objective, trial)
    with _quiet_libraries():
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            accelerator="auto",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[reporter, *(callbacks or [])],
            **{**inputs.trainer_options, **dict(trainer_options or {})},
        )
        trainer.fit(
            inputs.module,
            datamodule=inputs.datamodule,
            train_dataloaders=inputs.train_dataloaders,
            val_dataloaders=inputs.val_dataloaders,
        )
    info = dict(inputs.info)
    info["trainable_parameters"] = sum(p.numel() for p in inputs.module.parameters() if p.requires_grad)
    info["parameters"] = sum(p.numel() for p in inputs.module.parameters())
    info["device"] = str(trainer.strategy.root_device)
    return FitResult(reporter.history, reporter.best_epoch, reporter.pruned_at, info)


def evaluate_untrained(objective: Objective, config: TrialConfig, seed: int, trainer_options: Mapping[str, Any]) -> dict[str, float]:
    """The validation metrics of the model before any training (the study's baseline)."""
    import lightning.pytorch as pl

    inputs = objective.build(config, seed)
    options = {k: v for k, v in trainer_options.items() if k.startswith("limit_val")}
    with _quiet_libraries():
        trainer = pl.Trainer(
            accelerator="auto", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False, **options
        )
        results = trainer.validate(
            inputs.module,
            datamodule=inputs.datamodule,
            dataloaders=inputs.val_dataloaders,
            verbose=False,
        )
    return objective.epoch_metrics(results[0] if results else {})


def _attach_optimization(module: pl.LightningModule, objective: Objective, config: TrialConfig, max_epochs: int) -> None:
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


def run_study(
    spec: StudySpec,
    storage: str | None = None,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    workdir: str | Path = "storage",
    show_progress: bool = True,
) -> optuna.Study:
    """Create or resume ``spec`` in the store and run trials.

    Without ``n_trials`` the study runs until its budget (``spec.n_trials`` finished trials, counted
    across every worker sharing the store) is met; with ``n_trials`` this call adds that many trials.
    """
    import optuna

    from tuner.dashboard import publish_study, publish_trial_note
    from tuner.training.progress import BatchProgress, StudyProgress

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tuner logs each epoch and trial itself
    _silence_library_loggers()
    objective, space = prepare_objective(spec, workdir)
    url = resolve_storage_url(storage)
    study = optuna.create_study(
        study_name=spec.name,
        storage=open_storage(url),
        sampler=spec.sampler or _default_sampler(spec.seed),
        pruner=spec.pruner or _default_pruner(),
        direction=objective.direction,
        load_if_exists=True,
    )
    _check_or_record_study(study, spec, objective, space, url)
    if study.get_trials(deepcopy=False):
        # a resumed study or another worker: a sampler seeded as in the first run would propose the
        # same configurations again
        study.sampler.reseed_rng()
    _enqueue_warm_start(study, load_warm_start(spec, space), spec)
    if "baseline" not in study.user_attrs:
        logger.info("evaluating the untrained model (the study's baseline)")
        baseline = evaluate_untrained(objective, space.config_from({}), spec.seed, spec.trainer)
        study.set_user_attr("baseline", baseline)
        logger.info("baseline %s=%.4f", objective.metric, baseline.get(objective.metric, float("nan")))

    finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    finished = len(study.get_trials(deepcopy=False, states=finished_states))
    callbacks: list[Any] = []
    if n_trials is None:
        n_trials = spec.n_trials - finished
        if n_trials <= 0:
            logger.info(
                "study '%s' already has %d finished trials (budget %d): nothing to run. "
                "Pass --n-trials N to add trials.", spec.name, finished, spec.n_trials,
            )
            publish_study(study)  # optuna-dashboard: report figures and study note
            return study
        callbacks.append(optuna.study.MaxTrialsCallback(spec.n_trials, states=finished_states))
    logger.info(
        "study '%s' in %s: %d finished trials, running up to %d more (%s, %s)",
        spec.name, mask_url(url), finished, n_trials, type(study.sampler).__name__, type(study.pruner).__name__,
    )

    with StudyProgress(n_trials) as display:

        def trial_objective(trial: optuna.Trial) -> float:
            config = space.suggest(trial)
            seed = spec.seed + trial.number
            trial.set_user_attr("config", config.as_dict())
            trial.set_user_attr("seed", seed)
            trial.set_user_attr("max_epochs", spec.max_epochs)
            started = time.perf_counter()
            progress = [BatchProgress(display, f"trial {trial.number}")] if show_progress else []
            result = fit(objective, config, seed, spec.max_epochs, trial=trial, trainer_options=spec.trainer, callbacks=progress)
            _record_result(trial, result, objective, time.perf_counter() - started)
            if result.pruned_at is not None:
                raise optuna.TrialPruned(f"pruned after epoch {result.pruned_at + 1}")
            return result.best(objective.metric)

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            value = "" if trial.value is None else f" {objective.metric}={trial.value:.4f}"
            display.trial_finished(f"last: #{trial.number} {trial.state.name.lower()}{value}")
            if trial.state == optuna.trial.TrialState.COMPLETE:
                logger.info("trial %d complete:%s (best so far: %.4f, trial %d)", trial.number, value, study.best_value, study.best_trial.number)
            elif trial.state == optuna.trial.TrialState.FAIL:
                logger.warning("trial %d failed: %s", trial.number, trial.system_attrs.get("fail_reason", "see the log above"))
            publish_trial_note(study, trial)  # optuna-dashboard note; never raises

        study.optimize(
            trial_objective,
            n_trials=n_trials,
            timeout=timeout,
            callbacks=[*callbacks, after_trial],
            catch=(RuntimeError,),
            gc_after_trial=True,
        )
    publish_study(study)  # optuna-dashboard: report figures and study note; never raises
    return study


def _record_result(trial: optuna.Trial, result: FitResult, objective: Objective, seconds: float) -> None:
    trial.set_user_attr("epochs_run", len(result.history))
    trial.set_user_attr("best_epoch", result.best_epoch)
    trial.set_user_attr("seconds", round(seconds, 2))
    trial.set_user_attr("model", result.info)


def _check_or_record_study(study: optuna.Study, spec: StudySpec, objective: Objective, space: SearchSpace, url: str) -> None:
    """Record what the study is on first use; refuse to mix another objective into it later."""
    import tuner

    attrs = study.user_attrs
    if "objective" in attrs and attrs["objective"] != objective.name:
        raise ConfigError(
            f"study '{spec.name}' in {mask_url(url)} was created for objective '{attrs['objective']}', not "
            f"'{objective.name}'. Give this study another name or use another store (--storage)."
        )
    described = objective.describe()
    if "objective" in attrs:
        for key in ("data", "pretrained"):
            if attrs.get(key) != described.get(key):
                logger.warning(
                    "study '%s' was started with %s=%r; this run uses %r (trials will mix both)",
                    spec.name, key, attrs.get(key), described.get(key),
                )
        return
    record = {
        **described,
        "metric": objective.metric,
        "direction": objective.direction,
        "components": list(objective.components),
        "max_epochs": spec.max_epochs,
        "n_trials": spec.n_trials,
        "trainer": dict(spec.trainer),
        "seed": spec.seed,
        "search_space": space.to_dict(),
        "search_space_file": "inline" if isinstance(spec.search_space, Mapping) else str(spec.search_space),
        "tuner_version": tuner.__version__,
        "description": spec.description,
    }
    for key, value in record.items():
        study.set_user_attr(key, value)


#: study system attribute: which worker enqueues the warm start (cleared never; a stale claim is retaken)
_WARM_START_CLAIM = "tuner:warm_start_claim"
_WARM_START_SETTLE_S = 0.5  # how long a claim waits for a worker that started at the same moment
_WARM_START_STALE_S = 120.0  # a claim this old without the done record: its worker died, take over


def _enqueue_warm_start(study: optuna.Study, entries: list[WarmStartEntry], spec: StudySpec) -> None:
    """Enqueue the study's warm-start configurations once per study, before the sampler takes over.

    The study's user attribute ``warm_start`` records that it was done (a resumed run or another
    worker skips it). Workers starting together each write a claim, wait :data:`_WARM_START_SETTLE_S`
    and read it back: only the last writer enqueues. ``skip_if_exists`` keeps a repeat harmless.
    """
    import uuid

    if not entries or "warm_start" in study.user_attrs:
        return
    storage, study_id = study._storage, study._study_id  # study system attrs: no public setter in Optuna 4+
    token = uuid.uuid4().hex
    claim = storage.get_study_system_attrs(study_id).get(_WARM_START_CLAIM)
    if claim is None or time.time() - float(claim.get("at", 0)) > _WARM_START_STALE_S:
        storage.set_study_system_attr(study_id, _WARM_START_CLAIM, {"token": token, "at": time.time()})
        time.sleep(_WARM_START_SETTLE_S)
        claim = storage.get_study_system_attrs(study_id).get(_WARM_START_CLAIM)
    if not claim or claim.get("token") != token:
        logger.info("study '%s': another worker enqueues the %d warm-start configurations", spec.name, len(entries))
        return
    for entry in entries:
        study.enqueue_trial(dict(entry.params), user_attrs={"warm_start": entry.name}, skip_if_exists=True)
    source = str(spec.warm_start) if isinstance(spec.warm_start, (str, Path)) else "inline"
    study.set_user_attr("warm_start", {"source": source, "entries": [e.name for e in entries]})
    logger.info("study '%s': enqueued %d warm-start configurations from %s", spec.name, len(entries), source)
