"""Confirmation runs: the best configurations of a finished search trained again with new seeds, and the ranking
that says how sure it is.

A search runs each configuration once, and one training seed moves a fine-tuned model's DER by more than
the differences between the best configurations. ``tuner confirm STUDY --top K --seeds N`` (or a study file's
``confirm={"top": K, "seeds": N}``, which ``tuner run`` performs once the search budget is spent) trains the K
best distinct configurations of the search, and the study's reference (its first warm-start configuration:
pyannote's default for the default study), with N new seeds each, for the study's epochs.

The runs are trials of a companion study, ``STUDY.confirm``, in the same store: they go through the same queue,
exact budget, heartbeats, retries and Ctrl-C as search trials (any number of workers), are never pruned (its
pruner is Optuna's ``NopPruner``), never count in the search's budget, and cannot become the search's best
trial. Each configuration runs the same N seeds (common random numbers), distinct from the search's. Rerunning
adds nothing once the confirmation is complete; a larger N adds the missing seeds.

:func:`confirmed_ranking` gathers every run of each confirmed configuration (the search's and the
confirmation's), at the epoch each run selects (its best validation epoch: the trial's value), and ranks them
with :mod:`tuner.statistics`: mean, standard deviation, 95 % interval of the mean, Welch's test against the
best mean and against the reference, Holm-corrected.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner import identity
from tuner.errors import ConfigError
from tuner.store import records

if TYPE_CHECKING:
    import optuna

    from tuner.statistics import RunSummary
    from tuner.study import StudySpec

__all__ = [
    "CONFIRM_SUFFIX",
    "SEED_OFFSET",
    "confirmation_name",
    "Candidate",
    "candidates",
    "confirm_study",
    "ConfirmedRanking",
    "RankedRow",
    "confirmed_ranking",
    "spec_from_record",
]

logger = logging.getLogger(__name__)

#: the companion study of study ``X`` is ``X.confirm``
CONFIRM_SUFFIX = ".confirm"
#: confirmation seeds are ``study seed + SEED_OFFSET + i``: never a search trial's (``study seed + trial number``)
SEED_OFFSET = 1_000_000
#: the epoch each run is scored at, as the ranking states it
EPOCH_RULE = "each run at its best validation epoch (the trial's value)"


def confirmation_name(study_name: str) -> str:
    """The name of the companion study that holds the confirmation runs of ``study_name``."""
    return f"{study_name}{CONFIRM_SUFFIX}"


def configuration_key(config: Mapping[str, Any]) -> str:
    """One text per configuration (its parameters, searched and fixed, sorted): runs of equal keys are repeats."""
    return json.dumps({k: config[k] for k in sorted(config)}, sort_keys=True, default=str)


@dataclass(frozen=True)
class Candidate:
    """A configuration of the search chosen for confirmation."""

    key: str
    params: Mapping[str, Any]  # the searched parameters, as they are enqueued
    config: Mapping[str, Any]  # searched and fixed
    trials: tuple[int, ...]  # the search trials that ran it (completed; the pruned one, for a ``pruned`` candidate)
    reference: bool = False  # the study's reference (its first warm-start configuration)
    pruned: bool = False  # only ever pruned in the search: its confirmation runs are its only full runs


#: the search as the confirmation reads it (see :func:`_search_runs`)
_SearchRuns = tuple[records.StudyRecord, list[records.TrialRecord], dict[str, list[records.TrialRecord]], str | None]


def _search_runs(study: optuna.Study) -> _SearchRuns:
    """The search's record, its trials, its completed runs grouped by configuration (a retried trial counted once),
    and the key of its reference configuration (its first warm-start entry; None without one)."""
    record, trials = records.study_trials(study)
    replaced = records.superseded_numbers(study.get_trials(deepcopy=False))
    grouped: dict[str, list[records.TrialRecord]] = {}
    for trial in trials:
        if trial.state == "COMPLETE" and trial.value is not None and trial.number not in replaced:
            grouped.setdefault(configuration_key(trial.config), []).append(trial)
    first = (record.warm_start or {}).get("entries") or []
    reference = next((configuration_key(t.config) for t in trials if first and t.warm_start == first[0]), None)
    return record, trials, grouped, reference


def candidates(study: optuna.Study, top: int) -> list[Candidate]:
    """The ``top`` best distinct configurations among the search's completed trials (by the mean of their runs,
    in the study's direction), then the reference configuration if it is not among them.

    Where fewer than ``top`` configurations completed (a pruner stopped the rest), the places left go to the
    pruned configurations that went furthest (most epochs, then the best value there): what the pruner ranked
    next. Their confirmation runs are their only full-length runs, so the ranking also tells whether the pruner
    stopped a configuration that was as good as the best."""
    from tuner.direction import rank_key

    record, trials, grouped, reference_key = _search_runs(study)
    if not grouped:
        raise ConfigError(f"study '{study.study_name}' has no completed trial yet: nothing to confirm.")
    key = rank_key(record.direction)

    def mean(runs: list[records.TrialRecord]) -> float:
        return sum(float(t.value or 0.0) for t in runs) / len(runs)

    ranked = sorted(grouped, key=lambda k: (key(mean(grouped[k])), grouped[k][0].number))
    chosen = ranked[:top]
    if reference_key is not None and reference_key in grouped and reference_key not in chosen:
        chosen.append(reference_key)
    found = [
        Candidate(
            key=k,
            params=dict(grouped[k][0].params),
            config=dict(grouped[k][0].config),
            trials=tuple(t.number for t in grouped[k]),
            reference=k == reference_key,
        )
        for k in chosen
    ]
    return found + _pruned_candidates(trials, record.direction, set(grouped), top - len(ranked[:top]))


def _pruned_candidates(
    trials: Sequence[records.TrialRecord], direction: str, completed: set[str], places: int
) -> list[Candidate]:
    """Up to ``places`` configurations among ``trials`` that only ever ran pruned, each by its trial that went
    furthest: most epochs first, then the best value there."""
    from tuner.direction import rank_key

    key = rank_key(direction)
    pruned = sorted(
        (
            t
            for t in trials
            if t.state == "PRUNED" and t.value is not None and configuration_key(t.config) not in completed
        ),
        key=lambda t: (-t.epochs_run, key(float(t.value or 0.0)), t.number),
    )
    furthest: dict[str, records.TrialRecord] = {}
    for trial in pruned:  # in rank order: a configuration's first trial is its furthest
        furthest.setdefault(configuration_key(trial.config), trial)
    chosen = list(furthest.values())[: max(places, 0)]
    return [
        Candidate(key=configuration_key(t.config), params=dict(t.params), config=dict(t.config), trials=(t.number,),
                  pruned=True)
        for t in chosen
    ]  # fmt: skip


def _fill(companion: optuna.Study, chosen: Sequence[Candidate], seeds: Sequence[int]) -> tuple[int, int]:
    """Enqueue the confirmation runs the companion study lacks (each candidate x seed once, under the study
    lock, so that workers starting together enqueue them once); ``(runs planned before, runs enqueued)``."""
    from tuner.store.lock import study_lock

    with study_lock(companion, "queue"):
        trials = companion.get_trials(deepcopy=False)
        replaced = records.superseded_numbers(trials)
        have = set()
        for trial in trials:
            confirms = trial.user_attrs.get(records.CONFIRMS) or {}
            if trial.number not in replaced and "configuration" in confirms:
                have.add((confirms["configuration"], trial.user_attrs.get(records.SEED)))
        added = 0
        for candidate in chosen:
            for seed in seeds:
                if (candidate.key, seed) not in have:
                    attrs = records.confirmation_attrs(candidate.key, candidate.trials, seed)
                    companion.enqueue_trial(dict(candidate.params), user_attrs=attrs, skip_if_exists=False)
                    added += 1
        return len(have), added


def spec_from_record(record: records.StudyRecord) -> StudySpec:
    """The study as its record describes it (objective, data, checkpoint, options, space, epochs, seed): what
    ``tuner confirm STUDY`` trains with, without its study file."""
    from tuner.study import StudySpec

    if not record.recorded or record.objective is None:
        raise ConfigError(f"study '{record.name}' was not made by tuner run: it records no objective to confirm.")
    pretrained, source = record.pretrained, dict(record.pretrained_source or {})
    if str(pretrained).startswith("study:") and source.get("path") and Path(source["path"]).is_file():
        pretrained = source["path"]  # the very checkpoint the trials used
    return StudySpec(
        name=record.name,
        objective=record.objective,
        search_space=dict(record.search_space),
        data=record.data,
        pretrained=pretrained,
        max_epochs=int(record.max_epochs or 1),
        prune_on=record.prune_on or None,
        seed=int(record.seed or 0),
        options=dict(record.options),
        trainer=dict(record.trainer),
        precision=record.precision,
        accumulate_grad_batches=record.accumulate_grad_batches,
    )


def confirm_study(
    spec: StudySpec,
    storage: str | None = None,
    *,
    top: int = 2,
    seeds: int = 2,
    workdir: str | Path = "storage",
    device: str | None = None,
    artifacts: str | Path | None = None,
    show_progress: bool = True,
    timeout: float | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> ConfirmedRanking:
    """Run (or resume, as one more worker) the confirmation of the finished search ``spec``: ``seeds`` new seeds
    for each of its ``top`` best configurations and its reference; returns the confirmed ranking."""
    import optuna

    from tuner.objectives.base import StepwiseObjective
    from tuner.quiet import silence_library_loggers
    from tuner.runner import prepare_objective, pruning_value, work_queue
    from tuner.store.artifacts import open_artifact_store, resolve_artifact_dir
    from tuner.store.connect import load_existing_study, open_storage, resolve_storage_url, store_errors
    from tuner.store.resolver import StudyResolver
    from tuner.training.fit import check_precision

    if top < 1 or seeds < 1:
        raise ConfigError(f"confirmation needs --top and --seeds of at least 1, got top={top}, seeds={seeds}.")
    url = resolve_storage_url(storage)
    search = load_existing_study(spec.name, url)
    objective, space = prepare_objective(spec, workdir, store=StudyResolver(url, resolve_artifact_dir(url, artifacts)))
    check_precision(spec.precision, device, spec.where)  # before any run: a precision the device cannot train in
    if isinstance(objective, StepwiseObjective):
        raise ConfigError(
            f"{spec.where}: objective '{objective.name}' trains nothing, so a configuration gives the same result "
            "whatever the seed: there is nothing to confirm. Compare on the test split with `tuner evaluate`."
        )
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # tuner logs each run itself
    silence_library_loggers()
    prune_on = pruning_value(spec, objective)
    if records.StudyRecord.of(search).recorded:  # the search's problem (read only: `tuner run` records, extends it)
        space = identity.reopen(search, spec, objective, space, prune_on, url).space
    chosen = candidates(search, top)
    seed_list = [spec.seed + SEED_OFFSET + i for i in range(seeds)]
    name = confirmation_name(spec.name)
    confirm_spec = spec.override(name=name)
    with store_errors(url, f"opening the confirmation study '{name}'"):
        companion = optuna.create_study(
            study_name=name,
            storage=open_storage(url),
            sampler=optuna.samplers.RandomSampler(seed=spec.seed),  # never asked: every run is enqueued
            pruner=optuna.pruners.NopPruner(),  # confirmation runs are never pruned
            direction=objective.direction,
            load_if_exists=True,
        )
        search_record = records.StudyRecord.of(search)
        if not records.StudyRecord.of(companion).recorded:
            copied = {k: v for k, v in search.user_attrs.items() if k in records.STUDY_KEYS}
            problem = identity.fingerprint(spec, objective, space, prune_on)
            records.write_study(
                companion, {**copied, "confirms": spec.name, "n_trials": len(chosen) * seeds, "problem": problem}
            )
            records.write_baseline(companion, search_record.baseline, search_record.baseline_label)
        else:  # the search's problem; its space as the search's, which `tuner run --extend-space` may have extended
            reopening = identity.reopen(companion, confirm_spec, objective, space, prune_on, url, extend_space=True)
            identity.record(companion, reopening)
            space = reopening.space
        records.name_metric(companion, objective.metric)
        planned, added = _fill(companion, chosen, seed_list)
    logger.info(
        "confirming study '%s': %d configuration%s x %d seed%s (%s) in '%s': %d run%s planned before, %d added",
        spec.name, len(chosen), "" if len(chosen) == 1 else "s", seeds, "" if seeds == 1 else "s",
        ", ".join(map(str, seed_list)), name, planned, "" if planned == 1 else "s", added,
    )  # fmt: skip
    pruned = [c for c in chosen if c.pruned]
    if pruned and added:  # said once, when their runs are enqueued
        logger.info(
            "fewer than %d configurations completed in the search: %s only ran pruned (trial%s %s), and is confirmed "
            "as the pruner ranked it", top, "1 of them" if len(pruned) == 1 else f"{len(pruned)} of them",
            "" if len(pruned) == 1 else "s", ", ".join(str(c.trials[0]) for c in pruned),
        )  # fmt: skip
    work_queue(
        companion, confirm_spec, objective, space, prune_on, open_artifact_store(resolve_artifact_dir(url, artifacts)),
        device=device, show_progress=show_progress, timeout=timeout, callbacks=callbacks, url=url,
    )  # fmt: skip
    return confirmed_ranking(search, companion, chosen)


# -- the ranking ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankedRow:
    """One configuration of a confirmed ranking (or the starting point, ``runs`` empty and ``summary`` None)."""

    label: str
    config: Mapping[str, Any]
    runs: tuple[float, ...]
    sources: tuple[str, ...]  # where each run comes from: "search #5", "confirm #2"
    summary: RunSummary | None
    verdict: str  # against the best mean: "best", "indistinguishable", "worse", "too few runs"
    p_value: float  # Holm-adjusted, against the best mean (NaN for the best and rows without a test)
    versus_reference: str  # "reference", "better", "indistinguishable", "worse", "too few runs"
    reference: bool = False

    def numbers(self, kind: str) -> list[int]:
        """The trial numbers of this row's runs in the search (``kind`` "search") or the confirmation ("confirm")."""
        return [int(source.split("#")[1]) for source in self.sources if source.startswith(f"{kind} #")]


@dataclass(frozen=True)
class ConfirmedRanking:
    """Every confirmed configuration with its runs, best mean first, and the starting point."""

    study: str
    metric: str
    direction: str
    rows: tuple[RankedRow, ...]
    baseline: float | None
    baseline_label: str
    epoch_rule: str = EPOCH_RULE
    seeds: tuple[int, ...] = field(default_factory=tuple)
    pending: int = 0  # confirmation runs not finished yet (waiting, running or failed)
    #: the starting point against the best mean (a one-sample t-test of the best's runs against its fixed figure):
    #: "worse", "indistinguishable", "better", "too few runs", or "-" without a starting figure
    starting_point: str = "-"

    def summary_lines(self) -> list[str]:
        """What the end of `tuner run` and `tuner confirm` print under the table."""
        runs = sorted({len(r.runs) for r in self.rows})
        lines = [
            f"confirmed ranking of study '{self.study}' by {self.metric}: {EPOCH_RULE}; mean and 95 % interval of "
            f"the mean over {'/'.join(map(str, runs))} runs per configuration; verdicts from Welch's t-test, "
            "Holm-corrected (p < 0.05); the starting point (one figure, which no seed moves) against the best by a "
            "one-sample t-test."
        ]
        if self.pending:
            lines.append(
                f"{self.pending} confirmation run(s) have not finished: run `tuner confirm` again to add them."
            )
        return lines


def _label(config: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items())


def _versus_starting_point(rows: Sequence[RankedRow], baseline: float | None, direction: str, alpha: float) -> str:
    """The starting point's verdict against the best mean: a one-sample t-test of the best configuration's runs
    against the starting figure (which no seed moves)."""
    from tuner.direction import is_better
    from tuner.statistics import one_sample_test

    if baseline is None or not rows or rows[0].summary is None:
        return "-"
    p = one_sample_test(rows[0].runs, baseline)
    if p != p:  # NaN: fewer than 2 runs
        return "too few runs"
    if p >= alpha:
        return "indistinguishable"
    return "better" if is_better(baseline, rows[0].summary.mean, direction) else "worse"


def confirmed_ranking(
    search: optuna.Study, companion: optuna.Study, chosen: Sequence[Candidate] | None = None, alpha: float = 0.05
) -> ConfirmedRanking:
    """The ranking of the configurations the companion study confirmed (or ``chosen``), from every completed run
    of each, search and confirmation alike."""
    from tuner.direction import is_better
    from tuner.statistics import holm, rank_configurations, summarize, welch_test

    record, _, grouped, search_reference = _search_runs(search)
    direction = "maximize" if record.maximize else "minimize"
    runs = {key: [float(t.value or 0.0) for t in trials] for key, trials in grouped.items()}
    sources = {key: [f"search #{t.number}" for t in trials] for key, trials in grouped.items()}
    configs: dict[str, Mapping[str, Any]] = {key: trials[0].config for key, trials in grouped.items()}
    searched = {key: trials[0].params for key, trials in grouped.items()}  # what labels a row
    confirmed: list[str] = [c.key for c in chosen] if chosen is not None else []
    pending = 0
    companion_trials = companion.get_trials(deepcopy=False)
    replaced_there = records.superseded_numbers(companion_trials)
    seeds: set[int] = set()
    for frozen in companion_trials:
        trial = records.TrialRecord.of(frozen, record)
        repeated = (trial.confirms or {}).get("configuration")
        if repeated is None or frozen.number in replaced_there:
            continue
        key = str(repeated)
        if key not in confirmed:
            confirmed.append(key)
        if trial.seed is not None:
            seeds.add(trial.seed)
        configs.setdefault(key, trial.config)  # a configuration the search only ran pruned
        searched.setdefault(key, trial.params)
        if trial.state == "COMPLETE" and trial.value is not None:
            runs.setdefault(key, []).append(float(trial.value))
            sources.setdefault(key, []).append(f"confirm #{trial.number}")
        else:
            pending += 1
    confirmed = [k for k in confirmed if runs.get(k)]
    reference_key = next((c.key for c in chosen or () if c.reference), None)
    if reference_key is None and search_reference in confirmed:
        reference_key = search_reference
    ranked = rank_configurations({k: runs[k] for k in confirmed}, direction, alpha)  # type: ignore[arg-type]
    # against the reference: Welch's test, Holm over the configurations compared with it
    others = [k for k in confirmed if k != reference_key]
    versus: dict[str, str] = {}
    if reference_key is not None and others:
        p = [welch_test(runs[k], runs[reference_key]) for k in others]
        for key, adjusted in zip(others, holm(p)):
            mean = summarize(runs[key]).mean
            if adjusted != adjusted:  # NaN: fewer than 2 runs on a side
                versus[key] = "too few runs"
            elif adjusted < alpha:
                better = is_better(mean, summarize(runs[reference_key]).mean, direction)
                versus[key] = "better" if better else "worse"
            else:
                versus[key] = "indistinguishable"
    rows = [
        RankedRow(
            label=_label(searched.get(r.name) or configs[r.name]),
            config=configs[r.name],
            runs=tuple(runs[r.name]),
            sources=tuple(sources[r.name]),
            summary=r.summary,
            verdict=r.verdict.value,
            p_value=r.adjusted_p,
            versus_reference="reference" if r.name == reference_key else versus.get(r.name, "-"),
            reference=r.name == reference_key,
        )
        for r in ranked
    ]
    return ConfirmedRanking(
        starting_point=_versus_starting_point(rows, record.baseline_value, direction, alpha),
        study=search.study_name,
        metric=record.metric,
        direction=direction,
        rows=tuple(rows),
        baseline=record.baseline_value,
        baseline_label=record.baseline_label,
        seeds=tuple(sorted(seeds)),
        pending=pending,
    )
