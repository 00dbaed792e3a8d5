"""``tuner train best.yaml``: train an exported configuration to the end, and check that it reproduces.

The export written by ``tuner export`` says everything a trial was: the objective, its data, pretrained
source and options, the Lightning trainer options, its precision and gradient accumulation, the trial's seed,
and the configuration (``params`` searched + ``fixed``). :func:`train_exported` rebuilds that objective through
the study machinery (:func:`tuner.runner.prepare_objective`), trains with :func:`tuner.training.fit.fit` (the
very code that ran the trial, without a pruner), saves the final Lightning checkpoint and the per-epoch metrics,
and compares the metric at the exported epoch with the exported value.

Reproduction: with the same seed, data, options and device the run repeats the trial; on CPU it is
bit-identical in our measurements, so the default tolerance :data:`DEFAULT_TOLERANCE` (absolute, in the
metric's own unit: a DER fraction, an EER in %, SI-SNRi in dB) only absorbs float formatting. It is
not a meaningful comparison (and is reported as such, not as a failure) when the data or pretrained
model are overridden, or when a cosine / warm-up schedule spans a different number of epochs (the
learning rate then differs from the second epoch on). GPU runs were not measured; cuDNN's recurrent and
convolution kernels are not guaranteed deterministic, so expect small differences there (pass a larger
``tolerance``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner._yaml import parse_yaml
from tuner.errors import ConfigError
from tuner.store import files
from tuner.text import did_you_mean, epoch_number, format_number

if TYPE_CHECKING:
    from tuner.training.fit import FitResult

__all__ = ["DEFAULT_TOLERANCE", "Reproduction", "TrainResult", "load_export", "train_exported"]

logger = logging.getLogger(__name__)

#: what to do when `tuner train` cannot write its output (after the folder, the reason and its free space)
_ADVICE = "Free space there, or give --out a folder on a disk with room"

#: |metric(run) - metric(export)| at the exported epoch that still counts as reproduced (metric units)
DEFAULT_TOLERANCE = 1e-4


@dataclass
class Reproduction:
    """The trained run's metric at the exported epoch against the exported value."""

    epoch: int | None
    exported: float | None
    reproduced: float | None
    tolerance: float
    comparable: bool
    reason: str = ""  # why the values are not comparable (or why the check could not run)
    #: the epoch's other values (components, losses, lr) that differ by more than the tolerance: "name here vs trial"
    others: list[str] = field(default_factory=list)

    @property
    def difference(self) -> float | None:
        if self.exported is None or self.reproduced is None:
            return None
        return abs(self.reproduced - self.exported)

    @property
    def matches(self) -> bool | None:
        """True / False when comparable, None when the comparison means nothing."""
        if not self.comparable or self.difference is None:
            return None
        return self.difference <= self.tolerance

    def as_dict(self) -> dict[str, Any]:
        return {
            "epoch": epoch_number(self.epoch),
            "exported": self.exported,
            "reproduced": self.reproduced,
            "difference": self.difference,
            "tolerance": self.tolerance,
            "comparable": self.comparable,
            "matches": self.matches,
            "reason": self.reason,
            "others": list(self.others),
        }

    def summary(self, metric: str) -> str:
        if self.epoch is None or self.exported is None:
            return f"reproduction: not checked ({self.reason})"
        if self.reproduced is None:
            return f"reproduction: not checked ({self.reason})"
        at = f"{metric} at epoch {epoch_number(self.epoch)}"
        head = (
            f"{at}: {self.reproduced:.6g} here, {self.exported:.6g} in the trial (|difference| {self.difference:.3g})"
        )
        if not self.comparable:
            return f"{head}: not comparable, {self.reason}"
        verdict = "reproduced" if self.matches else "NOT reproduced"
        return f"{head}: {verdict} within tolerance {self.tolerance:g}"

    def failure(self, metric: str) -> str | None:
        """One line saying what differed when the run does not reproduce the trial (comparable, and off by more
        than the tolerance); None when it does, or when the comparison means nothing."""
        if self.matches is not False:
            return None
        line = (
            f"{metric} at epoch {epoch_number(self.epoch)} is {self.reproduced:.6g} here and {self.exported:.6g} in "
            f"the trial (|difference| {self.difference:.3g} > tolerance {self.tolerance:g})"
        )
        if self.others:
            line += "; also " + ", ".join(self.others)
        return line


@dataclass
class TrainResult:
    """What :func:`train_exported` did: the fit, where it wrote, and the reproduction check."""

    source: Path  # the export YAML
    export: dict[str, Any]
    out_dir: Path
    checkpoint: Path  # out_dir / final.ckpt (Lightning checkpoint of the last epoch)
    metrics_file: Path  # out_dir / metrics.json
    metric: str
    direction: str
    max_epochs: int
    config: dict[str, Any]
    seed: int
    fit: FitResult
    reproduction: Reproduction
    seconds: float
    components: list[str] = field(default_factory=list)

    @property
    def best_epoch(self) -> int | None:
        return self.fit.best_epoch

    def failure(self) -> str | None:
        """One line saying what differed when this run does not reproduce the exported trial, else None."""
        line = self.reproduction.failure(self.metric)
        if line is None:
            return None
        return f"{self.export.get('study')} trial {self.export.get('trial')} not reproduced: {line}"

    def rows(self) -> list[dict[str, Any]]:
        """One row per epoch: epoch, metric, components, lr, seconds."""
        rows = []
        for epoch, record in sorted(self.fit.history.items()):
            row: dict[str, Any] = {"epoch": epoch_number(epoch), self.metric: record.get(self.metric)}
            row.update({k: v for k, v in record.items() if k not in (self.metric, "lr", "seconds")})
            row["lr"] = record.get("lr")
            row["seconds"] = record.get("seconds")
            rows.append(row)
        return rows

    def table(self) -> Any:
        """A rich table of :meth:`rows`, the best epoch and the exported epoch marked."""
        from rich.table import Table

        rows = self.rows()
        table = Table(title=f"{self.export.get('study')} trial {self.export.get('trial')} trained {len(rows)} epochs")
        if not rows:
            return table
        for column in rows[0]:
            table.add_column(column, justify="right")
        table.add_column("")
        for row in rows:
            marks = []
            if row["epoch"] == epoch_number(self.best_epoch):
                marks.append("best")
            if row["epoch"] == epoch_number(self.reproduction.epoch):
                marks.append(
                    f"exported {self.reproduction.exported:.4f}"
                    if self.reproduction.exported is not None
                    else "exported"
                )
            table.add_row(*(format_number(v, missing="", small=1e-3) for v in row.values()), ", ".join(marks))
        return table

    def summary(self) -> list[str]:
        best = self.fit.best(self.metric)
        lines = [
            f"best: epoch {epoch_number(self.best_epoch)}, {self.metric} = {best:.4f}"
            if self.best_epoch is not None
            else "no finite metric",
            self.reproduction.summary(self.metric),
            f"wrote {self.checkpoint} and {self.metrics_file} ({self.seconds:.1f} s)",
        ]
        return lines


# -- reading an export ----------------------------------------------------------------------------

_REQUIRED: dict[str, tuple[type, ...]] = {
    "study": (str,),
    "objective": (str,),
    "trial": (int,),
    "params": (Mapping,),
    "fixed": (Mapping,),
    "metric": (Mapping,),
    "trained_on": (Mapping,),
}
_REQUIRED_METRIC: dict[str, tuple[type, ...]] = {"name": (str,)}
_OPTIONAL_METRIC: dict[str, tuple[type, ...]] = {"value": (int, float), "epoch": (int,), "direction": (str,)}
_REQUIRED_TRAINED_ON: dict[str, tuple[type, ...]] = {
    "data": (str,),
    "pretrained": (str,),
    "options": (Mapping,),
    "trainer": (Mapping,),
    "max_epochs": (int,),
    "seed": (int,),
}
_NULLABLE = {"trained_on.data", "trained_on.pretrained", "metric.value", "metric.epoch", "metric.direction"}


def load_export(path: str | Path) -> dict[str, Any]:
    """Read and check an export written by ``tuner export``; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"export file not found: {path}. Write one with `tuner export STUDY --out {path}`.")
    content = parse_yaml(path.read_text(encoding="utf-8"), path)
    if not isinstance(content, Mapping):
        raise ConfigError(
            f"{path}: not an export of `tuner export` (expected a mapping, got {type(content).__name__})."
        )
    _check_keys(path, content, _REQUIRED, "")
    _check_keys(path, content["metric"], _REQUIRED_METRIC, "metric.")
    _check_keys(path, content["metric"], _OPTIONAL_METRIC, "metric.", optional=True)
    _check_keys(path, content["trained_on"], _REQUIRED_TRAINED_ON, "trained_on.")
    from tuner.objectives.base import OBJECTIVES

    if content["objective"] not in OBJECTIVES:
        raise ConfigError(
            f"{path}: key 'objective': unknown objective {content['objective']!r}"
            f"{did_you_mean(str(content['objective']), OBJECTIVES)}. Available: {', '.join(OBJECTIVES)}."
        )
    if content["trained_on"]["max_epochs"] < 1:
        raise ConfigError(
            f"{path}: key 'trained_on.max_epochs' must be >= 1, got {content['trained_on']['max_epochs']}."
        )
    return dict(content)


def _check_keys(
    path: Path,
    content: Mapping[str, Any],
    required: Mapping[str, tuple[type, ...]],
    prefix: str,
    optional: bool = False,
) -> None:
    for key, types in required.items():
        full = f"{prefix}{key}"
        if key not in content:
            if optional:
                continue
            raise ConfigError(
                f"{path}: missing key '{full}'. An export of `tuner export` has study, objective, trial, params, "
                "fixed, metric {name, value, epoch} "
                "and trained_on {data, pretrained, options, trainer, max_epochs, seed}."
            )
        value = content[key]
        if value is None and full in _NULLABLE:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join("a mapping" if t is Mapping else t.__name__ for t in types)
            raise ConfigError(f"{path}: key '{full}' must be {expected}, got {value!r}.")


# -- training -------------------------------------------------------------------------------------


def train_exported(
    path: str | Path,
    max_epochs: int | None = None,
    out_dir: str | Path | None = None,
    *,
    data: str | None = None,
    pretrained: str | None = None,
    workdir: str | Path = "storage",
    tolerance: float = DEFAULT_TOLERANCE,
    show_progress: bool = False,
    device: str | None = None,
    precision: str | None = None,
    accumulate_grad_batches: int | None = None,
) -> TrainResult:
    """Train the configuration exported in ``path`` for ``max_epochs`` (default: as long as its trial).

    The objective is rebuilt from the export (objective, data, pretrained, options, trainer options,
    precision, gradient accumulation, seed; configuration = ``params`` + ``fixed``), or with ``data`` /
    ``pretrained`` / ``precision`` / ``accumulate_grad_batches`` instead. Writes
    ``out_dir/final.ckpt`` (the Lightning checkpoint after the last epoch) and ``out_dir/metrics.json``
    (per-epoch records, best epoch, the export, the reproduction check); ``out_dir`` defaults to
    ``workdir/train/<study>-trial<k>``.
    """
    source = Path(path)
    export = load_export(source)  # before the heavy imports: a broken file fails at once

    import lightning.pytorch as pl

    from tuner.objectives.base import TrainedObjective
    from tuner.runner import prepare_objective
    from tuner.study import StudySpec, check_accumulation_value, check_precision_value
    from tuner.training.fit import check_precision, fit

    trained_on = export["trained_on"]
    metric_info = export["metric"]
    params, fixed = dict(export["params"]), dict(export["fixed"])
    overlap = sorted(set(params) & set(fixed))
    if overlap:
        raise ConfigError(f"{source}: key 'fixed' repeats searched parameter(s) {overlap} of 'params'.")
    epochs = max_epochs if max_epochs is not None else int(trained_on["max_epochs"])
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"max_epochs must be a positive integer, got {max_epochs!r}.")
    trainer = dict(trained_on["trainer"])
    # an export from before they were keys of their own holds them in `trainer`, if anywhere
    exported_precision = check_precision_value(
        trained_on.get("precision", trainer.pop("precision", "32-true")), f"{source}: key 'trained_on.precision'"
    )
    exported_accumulation = check_accumulation_value(
        trained_on.get("accumulate_grad_batches", trainer.pop("accumulate_grad_batches", 1)),
        f"{source}: key 'trained_on.accumulate_grad_batches'",
    )
    if precision is not None:  # given instead of the export's (--precision)
        precision = check_precision_value(precision, "tuner train")
    if accumulate_grad_batches is not None:
        check_accumulation_value(accumulate_grad_batches, "tuner train")
    spec = StudySpec(
        name=str(export["study"]),
        objective=str(export["objective"]),
        # the whole configuration as fixed values: validated by the same vocabulary as a search space
        search_space={**fixed, **params},
        data=data if data is not None else trained_on["data"],
        pretrained=pretrained if pretrained is not None else trained_on["pretrained"],
        options=dict(trained_on["options"]),
        trainer=trainer,
        precision=precision if precision is not None else exported_precision,
        accumulate_grad_batches=(
            accumulate_grad_batches if accumulate_grad_batches is not None else exported_accumulation
        ),
        max_epochs=epochs,
        seed=int(trained_on["seed"]),
        n_trials=1,
    )
    check_precision(spec.precision, device, str(source))  # before the objective loads its data
    try:
        objective, space = prepare_objective(spec, workdir)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    if not isinstance(objective, TrainedObjective):
        raise ConfigError(
            f"{source}: objective '{objective.name}' trains nothing (it tunes parameters): its export is the result; "
            "load the folder `tuner export` wrote instead of re-training it."
        )
    config = space.config_from({})
    if metric_info["name"] != objective.metric:
        raise ConfigError(
            f"{source}: key 'metric.name' is {metric_info['name']!r} but objective '{objective.name}' reports "
            f"'{objective.metric}'."
        )
    out = (
        Path(out_dir) if out_dir is not None else Path(workdir) / "train" / f"{export['study']}-trial{export['trial']}"
    )
    with files.disk_errors(out.parent, f"the output of `tuner train` ({out.name})", _ADVICE):
        out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "final.ckpt"
    metrics_file = out / "metrics.json"

    class _SaveFinal(pl.Callback):
        """Save the Lightning checkpoint once training ends (every epoch run, nothing pruned)."""

        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            with files.atomic_path(checkpoint, what="the final checkpoint", advice=_ADVICE) as temporary:
                trainer.save_checkpoint(temporary)

    callbacks: list[pl.Callback] = [_SaveFinal()]
    logger.info(
        "training %s trial %s (%s) for %d epochs, seed %d, precision %s, gradients accumulated over %d batch(es): %s",
        export["study"],
        export["trial"],
        objective.name,
        epochs,
        spec.seed,
        spec.precision,
        spec.accumulate_grad_batches,
        config.as_dict(),
    )
    started = time.perf_counter()
    display = None
    if show_progress:
        from tuner.training.progress import BatchProgress, StudyProgress

        display = StudyProgress(None)
        callbacks.append(BatchProgress(display, "train"))
    try:
        if display is not None:
            display.__enter__()
        result = fit(
            objective, config, spec.seed, epochs, trainer_options=spec.trainer, callbacks=callbacks, device=device,
            precision=spec.precision, accumulate_grad_batches=spec.accumulate_grad_batches,
        )  # fmt: skip
    finally:
        if display is not None:
            display.__exit__(None, None, None)
    seconds = time.perf_counter() - started

    changed = [
        f"{key} {ours!r} instead of {theirs!r}"
        for key, ours, theirs in (
            ("precision", spec.precision, exported_precision),
            ("accumulate_grad_batches", spec.accumulate_grad_batches, exported_accumulation),
        )
        if ours != theirs
    ]
    reproduction = _reproduction(
        export, result, objective.metric, config, epochs, data, pretrained, tolerance, spec, changed
    )
    train_result = TrainResult(
        source=source,
        export=export,
        out_dir=out,
        checkpoint=checkpoint,
        metrics_file=metrics_file,
        metric=objective.metric,
        direction=objective.direction,
        max_epochs=epochs,
        config=config.as_dict(),
        seed=spec.seed,
        fit=result,
        reproduction=reproduction,
        seconds=seconds,
        components=list(objective.components),
    )
    _write_metrics(train_result, objective.describe())
    logger.info(reproduction.summary(objective.metric))
    return train_result


def _reproduction(
    export: Mapping[str, Any],
    result: FitResult,
    metric: str,
    config: Any,
    epochs: int,
    data: str | None,
    pretrained: str | None,
    tolerance: float,
    spec: Any,
    changed: list[str],
) -> Reproduction:
    info = export["metric"]
    trained_on = export["trained_on"]
    epoch, exported = info.get("epoch"), info.get("value")
    if epoch is not None and info.get("epochs_counted_from") == 1:  # exports before it counted from 0
        epoch = int(epoch) - 1
    exported = float(exported) if exported is not None else None
    if epoch is None or exported is None:
        return Reproduction(epoch, exported, None, tolerance, False, "the export has no metric value or epoch")
    record = result.history.get(int(epoch))
    if record is None or metric not in record:
        return Reproduction(
            epoch, exported, None, tolerance, False,
            f"this run has no epoch {epoch_number(epoch)} (ran {len(result.history)})",
        )  # fmt: skip
    reproduced = float(record[metric])
    reasons = []
    if data is not None and data != trained_on["data"]:
        reasons.append(f"data {data!r} instead of {trained_on['data']!r}")
    if pretrained is not None and pretrained != trained_on["pretrained"]:
        reasons.append(f"pretrained {pretrained!r} instead of {trained_on['pretrained']!r}")
    reasons.extend(changed)  # the precision or the gradient accumulation given instead of the export's
    trial_epochs = int(trained_on["max_epochs"])
    if epochs != trial_epochs and (config.schedule == "cosine" or config.warmup_epochs > 0):
        reasons.append(
            f"the {config.schedule} schedule spans {epochs} epochs here and {trial_epochs} in the trial, "
            "so the learning rates differ after the first epoch"
        )
    others = [
        f"{key} {float(record[key]):.6g} vs {float(value):.6g}"
        for key, value in (info.get("components") or {}).items()
        if key not in ("seconds", "epoch")
        and key in record
        and isinstance(value, (int, float))
        and not abs(float(record[key]) - float(value)) <= tolerance  # NaN on either side differs
    ]
    return Reproduction(int(epoch), exported, reproduced, tolerance, not reasons, "; ".join(reasons), others)


def _write_metrics(result: TrainResult, described: Mapping[str, Any]) -> None:
    best = result.fit.best_epoch
    content = {
        "export": {
            "path": str(result.source),
            "study": result.export.get("study"),
            "trial": result.export.get("trial"),
            "content": result.export,
        },
        "objective": described.get("objective"),
        "trained_on": dict(described),
        "metric": result.metric,
        "direction": result.direction,
        "config": result.config,
        "seed": result.seed,
        "max_epochs": result.max_epochs,
        # epochs counted from 1, as everywhere a person reads them
        "epochs": [{**record, "epoch": epoch_number(epoch)} for epoch, record in sorted(result.fit.history.items())],
        "best_epoch": epoch_number(best),
        "best": result.fit.history.get(best) if best is not None else None,
        "reproduction": result.reproduction.as_dict(),
        "checkpoint": str(result.checkpoint),
        "model": result.fit.info,
        "seconds": round(result.seconds, 2),
    }
    text = json.dumps(_plain(content), indent=2, allow_nan=False)
    files.write_text(result.metrics_file, text + "\n", what="metrics.json", advice=_ADVICE)


def _plain(value: Any) -> Any:
    """JSON-ready data: NaN / inf -> null, paths and other objects -> strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
