"""``tuner evaluate``: a study's best (or given) trial on the corpus's test split, beside the starting model.

The objective is rebuilt from what the study recorded (objective, data, pretrained source, options) and
validated on the test split with the very code that validated its trials on the development split
(:meth:`tuner.objectives.base.Objective.for_split`): segmentation DER and its components, pipeline DER,
EER with its threshold and minDCF, SI-SNRi with SDRi. For a trained objective the trial's kept checkpoint
is loaded (tuner keeps the checkpoint of the best trial so far: its last epoch); the baseline is the
starting model (the pretrained checkpoint, or the untrained model) on the same split. For a pipeline the
trial's parameters run over the test files, beside pyannote's default parameters.

The figures are stored in the study (user attribute ``test``, see :func:`tuner.store.records.write_test`), so
``tuner report`` and the dashboard's study note show them.
"""

from __future__ import annotations

import datetime as _dt
import logging
import tempfile
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError
from tuner.store import records
from tuner.store.resolver import StudyResolver

__all__ = ["evaluate_study"]

logger = logging.getLogger(__name__)


def evaluate_study(
    study_name: str,
    storage: str | None = None,
    *,
    split: str = "test",
    trial_number: int | None = None,
    workdir: str | Path = "storage",
    artifacts: str | Path | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluate the best trial of ``study_name`` (or trial ``trial_number``) on ``split``, store the figures
    in the study and return them: ``{"split", "trial", "best": {...}, "baseline": {...}, ...}``."""
    from tuner.objectives.base import StepwiseObjective
    from tuner.quiet import quiet_libraries
    from tuner.search_space import TrialConfig
    from tuner.store.artifacts import resolve_artifact_dir
    from tuner.store.connect import resolve_storage_url, store_errors
    from tuner.training.fit import validate
    from tuner.training.steps import evaluate_steps

    url = resolve_storage_url(storage)
    resolver = StudyResolver(url, resolve_artifact_dir(url, artifacts))
    study = resolver.load(study_name)
    record = records.StudyRecord.of(study)
    if not record.recorded:
        raise ConfigError(f"study '{study_name}' was not made by tuner run: it records no objective to evaluate.")
    frozen = _pick_trial(study, study_name, trial_number)
    trial = records.TrialRecord.of(frozen, record)
    objective = study_objective(record, workdir, resolver, split=split)
    config = TrialConfig.from_params(dict(trial.config))
    seed = trial.seed if trial.seed is not None else (record.seed or 0)
    started = _dt.datetime.now(_dt.timezone.utc)
    paired: dict[str, Any] | None = None
    with quiet_libraries():
        if isinstance(objective, StepwiseObjective):
            best_steps = evaluate_steps(objective, config, split=split)
            baseline_steps = evaluate_steps(objective, TrialConfig.from_params(objective.default_config()), split=split)
            best, baseline = best_steps.metrics, baseline_steps.metrics
            paired = _paired_interval(objective, best_steps.per_step, baseline_steps.per_step, seed)
            checkpoint_epoch = None
        else:
            with tempfile.TemporaryDirectory(prefix="tuner-evaluate-") as scratch:
                checkpoint = Path(scratch) / "trial.ckpt"
                checkpoint_epoch = resolver.trial_checkpoint(study, frozen, checkpoint)
                best = validate(objective, config, seed, dict(record.trainer), device, checkpoint=checkpoint)
            baseline = validate(objective, config, seed, dict(record.trainer), device)
    shown = [
        k for k in (record.metric, *record.components) if k != "loss/train"
    ]  # validation computes no training loss
    result = {
        "split": split,
        "trial": trial.number,
        "checkpoint_epoch": checkpoint_epoch,
        "best": {k: float(v) for k, v in best.items() if k in shown},
        "baseline": {k: float(v) for k, v in baseline.items() if k in shown},
        "baseline_label": objective.baseline_label,
        "evaluated_at": started.replace(microsecond=0).isoformat(),
    }
    if paired is not None:
        result["paired"] = paired
    with store_errors(url, f"recording the {split} figures of study '{study_name}'"):
        records.write_test(study, result)
        from tuner.reports.notes import save_study_note

        save_study_note(study)  # optuna-dashboard's study note shows them
    return result


def _paired_interval(
    objective: Any, best: dict[int, dict[str, float]], baseline: dict[int, dict[str, float]], seed: int
) -> dict[str, Any] | None:
    """The difference of the metric (trial minus baseline) over the same items, with its 95 % paired bootstrap
    interval (items weighted as the metric weighs them); None with fewer than 2 items."""
    from tuner.statistics import paired_bootstrap

    items = sorted(set(best) & set(baseline))
    if len(items) < 2:
        return None
    metric, weight = objective.metric, objective.item_weight
    weights = [best[i][weight] for i in items] if weight is not None else None
    interval = paired_bootstrap(
        [best[i][metric] for i in items], [baseline[i][metric] for i in items], weights, seed=seed
    )
    return {
        "difference": interval.difference,
        "low": interval.low,
        "high": interval.high,
        "items": interval.items,
        "resamples": interval.resamples,
        "confidence": interval.confidence,
        "weighted_by": weight,
    }


def study_objective(
    record: records.StudyRecord, workdir: str | Path, store: StudyResolver, split: str = "development"
) -> Any:
    """The objective ``record``'s trials ran (same data, checkpoint and options), validating on ``split``,
    set up."""
    from tuner.objectives.base import get_objective_class

    objective_class = get_objective_class(record.objective)  # type: ignore[arg-type]
    pretrained, source = record.pretrained, dict(record.pretrained_source or {})
    if str(pretrained).startswith("study:") and source.get("path") and Path(source["path"]).is_file():
        pretrained = source["path"]  # the very checkpoint the trials used (that study may have a new best since)
    options = {k: v for k, v in record.options.items() if k in objective_class.default_options}
    objective = objective_class(record.data, pretrained, options, workdir=workdir).for_split(split)
    objective.store = store
    objective.setup()
    return objective


def _pick_trial(study: Any, study_name: str, number: int | None) -> Any:
    import optuna

    if number is None:
        try:
            return study.best_trial
        except ValueError:
            raise ConfigError(f"study '{study_name}' has no completed trial yet: nothing to evaluate.") from None
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise ConfigError(f"study '{study_name}' has no trial {number} (its trials: 0..{max(trials, default=-1)}).")
    if trials[number].state != optuna.trial.TrialState.COMPLETE:
        raise ConfigError(
            f"trial {number} of study '{study_name}' is {trials[number].state.name.lower()}, not complete."
        )
    return trials[number]
