"""``tuner evaluate``: a study's chosen configuration on the corpus's test split, beside the starting model.

The objective is rebuilt from what the study recorded (objective, data, pretrained source, options) and
validated on the test split with the very code that validated its trials on the development split
(:meth:`tuner.objectives.base.Objective.for_split`): segmentation DER and its components, pipeline DER,
EER with its threshold and minDCF, SI-SNRi with SDRi. For a trained objective a trial's kept checkpoint
is loaded (tuner keeps the checkpoint of the best trial so far, and of every confirmation run: their best
epoch); the baseline is the starting model (the pretrained checkpoint, or the untrained model) on the same
split. For a pipeline the trial's parameters run over the test files, beside pyannote's default parameters.

What is evaluated: trial ``--trial N``; else, where the study has a confirmation (:mod:`tuner.confirm`), every
kept run of the configuration with the best confirmed mean (the one ``tuner export`` exports), whose figures are
averaged; else the best trial. The difference from the starting model comes with a 95 % paired bootstrap
interval over the test items (diarization: files, weighted by their reference speech; verification: trials,
whose EER is recomputed; separation: mixtures) and, with several runs, over the runs (seeds) too
(:func:`tuner.statistics.paired_bootstrap`).

The figures are stored in the study (user attribute ``test``, see :func:`tuner.store.records.write_test`), so
``tuner report`` and the dashboard's study note show them; those of a trial asked for with ``--trial N`` are
kept apart (``test/trial/N``), and leave the study's figures as they are.
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
    """Evaluate the best trial of ``study_name`` (or trial ``trial_number``; or, where the study has a
    confirmation, every kept run of the configuration with the best confirmed mean) on ``split``, store the
    figures in the study and return them: ``{"split", "trial", "best": {...}, "baseline": {...}, "runs",
    "paired", ...}``."""
    from tuner.objectives.base import StepwiseObjective
    from tuner.quiet import quiet_libraries
    from tuner.search_space import TrialConfig
    from tuner.store.artifacts import resolve_artifact_dir
    from tuner.store.connect import resolve_storage_url, store_errors
    from tuner.training.fit import check_precision, validate
    from tuner.training.steps import evaluate_steps

    url = resolve_storage_url(storage)
    resolver = StudyResolver(url, resolve_artifact_dir(url, artifacts))
    study = resolver.load(study_name)
    record = records.StudyRecord.of(study)
    if not record.recorded:
        raise ConfigError(f"study '{study_name}' was not made by tuner run: it records no objective to evaluate.")
    objective = study_objective(record, workdir, resolver, split=split)
    stepwise = isinstance(objective, StepwiseObjective)
    if not stepwise:  # validation runs in the study's precision: refused where the device has none such
        check_precision(record.precision, device, f"study '{study_name}'")
    runs, chosen_by = _runs_to_evaluate(resolver, study, record, trial_number, kept_only=not stepwise)
    trial = records.TrialRecord.of(runs[0][1], record)
    config = TrialConfig.from_params(dict(trial.config))
    seed = trial.seed if trial.seed is not None else (record.seed or 0)
    started = _dt.datetime.now(_dt.timezone.utc)
    paired: dict[str, Any] | None = None
    evaluated: list[dict[str, Any]] = []
    with quiet_libraries():
        if stepwise:
            best_steps = evaluate_steps(objective, config, split=split)
            baseline_steps = evaluate_steps(objective, TrialConfig.from_params(objective.default_config()), split=split)
            best, baseline = best_steps.metrics, baseline_steps.metrics
            paired = _paired_runs(
                [_step_items(objective, best_steps.per_step)], _step_items(objective, baseline_steps.per_step), seed
            )
            checkpoint_epoch = None
        else:
            per_run, run_items = [], []
            for run_study, frozen in runs:
                metrics, items, epoch = _validate_run(objective, resolver, run_study, frozen, record, device)
                run = records.TrialRecord.of(frozen, record)
                per_run.append(metrics)
                run_items.append(items)
                evaluated.append(
                    {"study": run_study.study_name, "source": "search" if run_study is study else "confirm",
                     "trial": run.number, "seed": run.seed, "checkpoint_epoch": epoch,
                     record.metric: float(metrics[record.metric])}
                )  # fmt: skip
            checkpoint_epoch = evaluated[0]["checkpoint_epoch"] if len(evaluated) == 1 else None
            collector = objective.item_collector()
            baseline = validate(
                objective, config, seed, dict(record.trainer), device, items=collector, precision=record.precision
            )
            best = {k: sum(m[k] for m in per_run) / len(per_run) for k in per_run[0] if all(k in m for m in per_run)}
            paired = _paired_runs(run_items, collector.scores, seed)
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
    if chosen_by is not None:
        result["chosen_by"] = chosen_by
    if len(evaluated) > 1 or chosen_by is not None:
        result["runs"] = evaluated
    if paired is not None:
        result["paired"] = paired
    with store_errors(url, f"recording the {split} figures of study '{study_name}'"):
        # the study's own figures are those of its choice; a trial asked for by number keeps its figures apart
        records.write_test(study, result, trial=trial_number)
        from tuner.reports.notes import save_study_note

        save_study_note(study)  # optuna-dashboard's study note shows them
    return result


#: what a result's ``chosen_by`` says when a confirmation chose the configuration
CONFIRMED_CHOICE = "best confirmed mean"


def _runs_to_evaluate(
    resolver: StudyResolver, study: Any, record: records.StudyRecord, number: int | None, kept_only: bool
) -> tuple[list[tuple[Any, Any]], str | None]:
    """The (study, trial) runs to evaluate, and what chose them (None: the study's best trial or ``number``).

    With a confirmation and no ``number``: the configuration with the best confirmed mean (as ``tuner export``
    exports it), every run of it whose checkpoint was kept (``kept_only``: a trained objective's), search and
    confirmation alike."""
    if number is not None:
        return [(study, _pick_trial(study, study.study_name, number, record, kept_only))], None
    confirmed = _confirmed_runs(resolver, study, record, kept_only)
    if confirmed:
        return confirmed, CONFIRMED_CHOICE
    return [(study, _pick_trial(study, study.study_name, None, record, kept_only))], None


def _confirmed_runs(
    resolver: StudyResolver, study: Any, record: records.StudyRecord, kept_only: bool
) -> list[tuple[Any, Any]]:
    """The runs of the configuration with the best confirmed mean (none without a confirmation)."""
    from tuner.confirm import confirmation_name, confirmed_ranking

    try:
        companion = resolver.load(confirmation_name(study.study_name))
    except ConfigError:
        return []
    rows = [row for row in confirmed_ranking(study, companion).rows if row.summary is not None]
    if not rows:
        return []
    top = rows[0]
    runs = []
    for source, numbers in ((study, top.numbers("search")), (companion, top.numbers("confirm"))):
        by_number = {t.number: t for t in source.get_trials(deepcopy=False)}
        for n in numbers:
            if not kept_only or records.checkpoint_of(source, by_number[n]) is not None:
                runs.append((source, by_number[n]))
    return runs


def _validate_run(
    objective: Any, resolver: StudyResolver, study: Any, frozen: Any, record: records.StudyRecord,
    device: str | None,
) -> tuple[dict[str, float], Any, int]:  # fmt: skip
    """One trained run's kept checkpoint on the objective's split: its metrics, per-item scores and epoch."""
    from tuner.search_space import TrialConfig
    from tuner.training.fit import validate

    run = records.TrialRecord.of(frozen, record)
    seed = run.seed if run.seed is not None else (record.seed or 0)
    collector = objective.item_collector()
    with tempfile.TemporaryDirectory(prefix="tuner-evaluate-") as scratch:
        checkpoint = Path(scratch) / "trial.ckpt"
        epoch = resolver.trial_checkpoint(study, frozen, checkpoint)
        metrics = validate(
            objective, TrialConfig.from_params(dict(run.config)), seed, dict(record.trainer), device,
            checkpoint=checkpoint, items=collector, precision=record.precision,
        )  # fmt: skip
    return metrics, collector.scores, epoch


def _step_items(objective: Any, per_step: dict[int, dict[str, float]]) -> Any:
    """A stepwise objective's results per item (a pipeline's files) as item scores, weighted as its metric weighs
    them (:attr:`~tuner.objectives.base.StepwiseObjective.item_weight`)."""
    import numpy as np

    from tuner.training.items import ItemScores

    items = sorted(per_step)
    weight = objective.item_weight
    return ItemScores(
        ids=tuple(map(str, items)),
        values=np.array([per_step[i][objective.metric] for i in items], dtype=float),
        weights=np.array([per_step[i][weight] for i in items], dtype=float) if weight is not None else None,
        weighted_by=weight,
    )


def _paired_runs(runs: list[Any], baseline: Any, seed: int) -> dict[str, Any] | None:
    """The difference (runs' mean minus the starting model) over the same test items, with its 95 % paired
    bootstrap interval over items and runs; None where the items are fewer than 2 or do not match."""
    from tuner.statistics import paired_bootstrap

    if baseline is None or any(r is None or r.ids != baseline.ids for r in runs) or len(baseline.ids) < 2:
        return None
    statistic = baseline.statistic
    interval = paired_bootstrap(
        [r.values for r in runs], baseline.values, baseline.weights, statistic=statistic,
        resamples=2_000 if statistic is not None else 10_000, seed=seed,
    )  # fmt: skip
    return {
        "difference": interval.difference,
        "low": interval.low,
        "high": interval.high,
        "items": interval.items,
        "runs": interval.runs,
        "resamples": interval.resamples,
        "confidence": interval.confidence,
        "weighted_by": baseline.weighted_by,
        "statistic": "EER of the resampled trials" if statistic is not None else None,
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


def _pick_trial(study: Any, study_name: str, number: int | None, record: records.StudyRecord, kept_only: bool) -> Any:
    if number is None:
        try:
            return study.best_trial
        except ValueError:
            raise ConfigError(f"study '{study_name}' has no completed trial yet: nothing to evaluate.") from None
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    can = evaluable_trials(study, kept_only)
    choices = f"trials that can be evaluated: {', '.join(map(str, can))}" if can else "no trial can be evaluated yet"
    if number not in trials:
        raise ConfigError(f"study '{study_name}' has no trial {number}; {choices}.")
    if number not in can:
        state = trials[number].state.name.lower()
        why = (
            f"is {state}, not complete" if state != "complete" else "kept no checkpoint (only a study's best so far do)"
        )
        raise ConfigError(
            f"trial {number} of study '{study_name}' {why}; {choices} (tuner evaluate {study_name} --trial N)."
        )
    return trials[number]


def evaluable_trials(study: Any, kept_only: bool) -> list[int]:
    """The numbers of the trials ``tuner evaluate --trial`` takes: complete ones, with a kept checkpoint where
    the objective trains (``kept_only``)."""
    import optuna

    return [
        t.number
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not kept_only or records.checkpoint_of(study, t) is not None
    ]
