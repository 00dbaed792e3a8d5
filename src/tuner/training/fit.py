"""Training and validating one configuration with Lightning: the code path every trial, ``tuner train`` and
``tuner evaluate`` share, and the one place a ``lightning.Trainer`` is built (:func:`make_trainer`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import ConfigError
from tuner.objectives.base import Objective, StepwiseObjective, TrainedObjective
from tuner.quiet import quiet_libraries
from tuner.search_space import TrialConfig
from tuner.text import did_you_mean
from tuner.training.steps import evaluate_steps

if TYPE_CHECKING:
    import lightning.pytorch as pl
    import optuna

    from tuner.training.items import ItemCollector

__all__ = [
    "FitResult",
    "fit",
    "validate",
    "make_trainer",
    "device_settings",
    "check_precision",
    "attach_optimization",
    "check_trainer_options",
]


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


def fit(
    objective: TrainedObjective,
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
    precision: str = "32-true",
    accumulate_grad_batches: int = 1,
) -> FitResult:
    """Train ``objective`` with ``config`` for up to ``max_epochs``, reporting to ``trial`` if given.

    ``device``: see :func:`device_settings`; ``precision`` and ``accumulate_grad_batches``: see
    :func:`make_trainer` (the run's ``info`` records what the Trainer used). ``resume_from``: a Lightning
    checkpoint of this same run (model, optimizer, schedule, epoch and records) to continue after its epoch. A
    NaN or infinite loss raises :class:`~tuner.training.divergence.TrialDiverged`; Ctrl-C raises
    ``KeyboardInterrupt`` once Lightning has shut the run down. ``prune_on``: the per-epoch value reported to
    ``trial`` (default: the objective's metric; see :func:`pruning_value`).
    """
    from tuner.training.divergence import DivergenceGuard
    from tuner.training.random_state import RandomState
    from tuner.training.reporting import TrialReporter

    inputs = objective.build(config, seed)
    attach_optimization(inputs.module, objective, config, max_epochs)
    reporter = TrialReporter(objective, trial, prune_on=prune_on)
    with quiet_libraries():
        trainer = make_trainer(
            device,
            precision=precision,
            accumulate_grad_batches=accumulate_grad_batches,
            max_epochs=max_epochs,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            callbacks=[reporter, DivergenceGuard(), RandomState(), *(callbacks or [])],
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
    info["precision"] = str(trainer.precision)
    info["accumulate_grad_batches"] = int(trainer.accumulate_grad_batches)
    return FitResult(reporter.history, reporter.best_epoch, reporter.pruned_at, info)


def validate(
    objective: Objective,
    config: TrialConfig,
    seed: int,
    trainer_options: Mapping[str, Any],
    device: str | None = None,
    checkpoint: str | Path | None = None,
    items: ItemCollector | None = None,
    precision: str = "32-true",
) -> dict[str, float]:
    """The validation metrics of ``config``: for a trained objective, of the model as ``checkpoint`` (a trial's
    Lightning checkpoint) left it, else before any training (a study's baseline); for a stepwise one, of the
    configuration on every item of its split. ``items``: a collector of the per-item results (a trained
    objective's :meth:`~tuner.objectives.base.TrainedObjective.item_collector`), filled by the validation.
    ``precision``: the study's, as its trials validate (gradient accumulation plays no part in validation)."""
    if isinstance(objective, StepwiseObjective):
        return evaluate_steps(objective, config).metrics
    assert isinstance(objective, TrainedObjective)
    inputs = objective.build(config, seed)
    options = {k: v for k, v in trainer_options.items() if k.startswith("limit_val")}
    with quiet_libraries():
        trainer = make_trainer(device, precision=precision, callbacks=[items] if items is not None else [], **options)
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


def make_trainer(
    device: str | None, *, precision: str = "32-true", accumulate_grad_batches: int = 1, **options: Any
) -> pl.Trainer:
    """A ``lightning.Trainer`` on ``device`` (see :func:`device_settings`) that logs, shows and summarises
    nothing itself (tuner records every epoch), with ``options`` on top (epochs, callbacks, the study's own
    ``trainer`` arguments).

    ``precision``: one of :data:`tuner.study.PRECISIONS`, refused where ``device`` cannot run it
    (:func:`check_precision`) rather than changed by Lightning; ``accumulate_grad_batches``: an optimizer step
    every that many batches (Lightning scales each batch's loss by its inverse)."""
    import lightning.pytorch as pl

    from tuner.study import check_accumulation_value, check_precision_value

    precision = check_precision(check_precision_value(precision, "make_trainer"), device)
    accelerator, devices = device_settings(device)
    settings: dict[str, Any] = {
        "accelerator": accelerator,
        "devices": devices,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "precision": precision,
        "accumulate_grad_batches": check_accumulation_value(accumulate_grad_batches, "make_trainer"),
    }
    return pl.Trainer(**{**settings, **options})


def check_precision(precision: str, device: str | None, where: str | None = None) -> str:
    """``precision`` if ``device`` (see :func:`device_settings`; "auto" as Lightning resolves it) can train in it,
    else a ConfigError naming the option, the value and what to use instead.

    Lightning does not run float16 mixed precision (``16-mixed``) on the CPU: it warns and trains in
    ``bf16-mixed`` instead, so the study would record one precision and train in another. ``bf16-mixed`` needs
    a GPU with bfloat16 (compute capability 8.0, Ampere, or later); an older one only emulates it, slower than
    32-bit."""
    if precision == "32-true":
        return precision
    prefix = f"{where}: " if where else ""
    accelerator, devices = device_settings(device)
    import torch

    if accelerator == "auto":
        if torch.cuda.is_available():
            accelerator, devices = "gpu", [0]
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return precision  # Apple's GPU: torch autocasts float16 and bfloat16 there
        else:
            accelerator = "cpu"
    shown = "auto, which is the CPU here (no visible GPU)" if device in (None, "auto") else repr(device)
    if accelerator == "cpu" and precision == "16-mixed":
        raise ConfigError(
            f"{prefix}precision '16-mixed' cannot train on the CPU (device {shown}): Lightning has no float16 mixed "
            "precision there (it would warn and train in bf16-mixed instead, not what the study records). Use "
            "precision 'bf16-mixed' (or '32-true') on the CPU, or train on a GPU (--device cuda)."
        )
    if accelerator == "gpu" and precision == "bf16-mixed" and torch.version.hip is None:  # ROCm GPUs: as torch says
        index = devices[0]
        major, minor = torch.cuda.get_device_capability(index)
        if (major, minor) < (8, 0):
            raise ConfigError(
                f"{prefix}precision 'bf16-mixed' needs a GPU with bfloat16 (compute capability 8.0 or later), and GPU "
                f"{index} ({torch.cuda.get_device_name(index)}) has {major}.{minor}. Use precision '16-mixed' on it "
                "(float16 autocast with loss scaling), or '32-true'."
            )
    return precision


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


def attach_optimization(
    module: pl.LightningModule, objective: TrainedObjective, config: TrialConfig, max_epochs: int
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


def check_trainer_options(options: Mapping[str, Any], where: str) -> None:
    """A misspelled ``trainer`` argument is an error before any trial, not a TypeError in the first one."""
    import inspect

    import lightning.pytorch as pl

    known = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    for key in options:
        if key not in known:
            raise ConfigError(
                f"{where}: trainer option '{key}'{did_you_mean(key, known)} is not an argument of "
                "lightning.Trainer (https://lightning.ai/docs/pytorch/stable/common/trainer.html#trainer-class-api)."
            )
