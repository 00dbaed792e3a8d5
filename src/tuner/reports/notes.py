"""What tuner writes for optuna-dashboard: trial and study notes, and the report figures of a study.

It lives where optuna-dashboard looks for it (the study's system attributes), so the stock
``optuna-dashboard <url>`` shows it as well as ``tuner dashboard`` (:mod:`tuner.reports.serving`):

- a markdown note per finished trial (:func:`trial_note`): configuration, seed, state, best epoch and a
  per-epoch table built from the trial's per-epoch records, for the study's first :data:`NOTES_UP_TO`
  trials and its best :data:`NOTED_BEST` (:func:`note_wanted`: a trial that completes among the best gets
  one, and the trial it pushes out of them loses its own, unless a person wrote in it). optuna-dashboard
  sends every note with the trial list and looks through all of the study's notes and figures once per
  trial, so a note for each of 10,000 trials made its first load of a study take minutes;
- a study note (:func:`study_note`): objective, metric, baseline, trial counts, best trial;
- the report figures (:func:`tuner.reports.figures.study_figures`) as plotly graph objects, under stable ids so
  that a later run replaces them (for a large study, those optuna-dashboard does not draw itself).

Notes are read and written through :mod:`tuner.reports.dashboard_internals` (one note's rows at a time, in the
layout of ``optuna_dashboard.save_note``): ``optuna_dashboard.get_note`` / ``save_note`` read every note and
figure of the study each time, a cost that grew with every trial.

Writing these is best effort: :func:`publish_trial_note` and :func:`publish_study` log a warning and
return when anything goes wrong, so a dashboard problem never stops a study.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING

from tuner.reports import dashboard_internals
from tuner.reports.markdown import md_cell
from tuner.reports.tables import trains
from tuner.store import optuna_internals
from tuner.store.queries import queries_of
from tuner.store.records import StudyRecord, TrialRecord, study_trials
from tuner.text import epoch_number

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

__all__ = [
    "trial_note",
    "study_note",
    "save_trial_note",
    "save_study_note",
    "attach_figures",
    "publish_trial_note",
    "publish_study",
    "note_wanted",
    "FIGURE_ID_PREFIX",
    "NOTES_UP_TO",
    "NOTED_BEST",
]

logger = logging.getLogger(__name__)

#: graph-object ids of the figures tuner attaches start with this (the rest is the figure's key)
FIGURE_ID_PREFIX = "tuner-"
#: study system attribute listing the figure ids tuner attached last time
_FIGURE_IDS_ATTR = "tuner:figure_ids"
#: every finished trial among a study's first this many has a dashboard note
NOTES_UP_TO = 10
#: beyond those, the study's best this many completed trials have one
NOTED_BEST = 10
#: the last line of what tuner writes in a note (plain markdown: the dashboard shows raw HTML as text);
#: text a person adds below it is kept when tuner rewrites the note
_MARK = "*written by tuner"
#: a note's table cell: :func:`tuner.text.format_number`'s 4 decimals (the report pages show 6 significant digits)
_cell = partial(md_cell, significant=None)


# --------------------------------------------------------------------------------------------- notes


def trial_note(trial: optuna.trial.FrozenTrial, study: optuna.Study) -> str:
    """The markdown note of ``trial``: state, best epoch and value, seed, why it failed (a failed trial),
    configuration (searched and fixed parameters) and one row per epoch (metric, components, lr)."""
    record = StudyRecord.of(study)
    return _trial_note(TrialRecord.of(trial, record), record)


def _trial_note(trial: TrialRecord, study: StudyRecord) -> str:
    metric = study.metric
    epochs = trial.epochs
    best = trial.best
    lines = [f"### Trial {trial.number}: {trial.state.lower()}", ""]
    if trial.steps is not None:  # a stepwise trial: a configuration evaluated item by item
        summary = f"{metric} **{_cell(best.get(metric))}** over {len(trial.steps)} items"
    elif best:  # its components are in the epoch table below
        summary = f"best {metric} **{_cell(best.get(metric))}** at epoch {epoch_number(best['epoch'])}"
        summary += f"; {len(epochs)}" + (f" of {trial.max_epochs}" if trial.max_epochs else "") + " epochs run"
    else:
        summary = f"no {metric} recorded"
        summary += f"; {len(epochs)}" + (f" of {trial.max_epochs}" if trial.max_epochs else "") + " epochs run"
    if trial.seed is not None:
        summary += f"; seed {trial.seed}"
    if isinstance(trial.seconds, (int, float)):
        summary += f"; {trial.seconds:.1f} s"
    lines.append(summary + ".")
    if trial.retry_summary:
        lines += ["", f"This trial {trial.retry_summary}."]
    if trial.state == "FAIL":
        lines += ["", f"Failed: `{trial.fail_summary[:300]}`" if trial.fail_summary else "Failed (no reason recorded)."]

    if trial.config:
        lines += ["", "| parameter | value | |", "|---|---|---|"]
        for name, value in trial.config.items():
            if value is None and name not in trial.params:  # a key this configuration does not use
                continue
            lines.append(f"| {name} | {_cell(value)} | {'searched' if name in trial.params else 'fixed'} |")

    if epochs:
        columns = [metric, *study.components, "lr"]
        columns = [c for c in columns if any(c in e for e in epochs)]
        lines += ["", "| epoch | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
        for row in epochs:
            mark = " (best)" if best and row["epoch"] == best["epoch"] else ""
            lines.append(
                f"| {epoch_number(row['epoch'])}{mark} | " + " | ".join(_cell(row.get(c)) for c in columns) + " |"
            )
    if trial.steps:
        columns = [metric, *study.components]
        lines += ["", "| item | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
        for item, values in trial.steps.items():
            lines.append(f"| {item} | " + " | ".join(_cell(values.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def study_note(study: optuna.Study) -> str:
    """The markdown note of ``study``: what it tunes, the baseline, trial counts, best trial."""
    record, trials = study_trials(study)
    metric, components = record.metric, record.components
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state] = counts.get(trial.state, 0) + 1
    lines = [f"### Study {study.study_name}", ""]
    if record.description:
        lines += [record.description, ""]
    what = f"Objective `{record.objective or '?'}`, {metric} ({record.direction})"
    if components:
        what += " with " + ", ".join(components)
    lines.append(what + ".")
    training = trains(record)
    epochs = record.max_epochs if training else None
    details = [
        f"data `{record.data}`" if record.data else None,
        f"pretrained `{record.pretrained_text}`" if record.pretrained else "trained from random weights",
        f"up to {epochs} epoch{'s' if epochs != 1 else ''} per trial" if epochs else None,
        f"budget {record.n_trials} finished trials" if record.n_trials else None,
    ]
    lines += ["", "; ".join(d for d in details if d) + "."]
    summary = ", ".join(f"{n} {state.lower()}" for state, n in counts.items() if n)
    lines += ["", f"Trials: {len(trials)}" + (f" ({summary})" if summary else "") + "."]

    complete = [t for t in trials if t.state == "COMPLETE" and t.value is not None and not math.isnan(t.value)]
    best = None
    for trial in complete:
        if best is None or record.better(trial.value, best.value):  # type: ignore[arg-type]
            best = trial
    columns = [metric, *components]
    if record.baseline or best is not None:
        lines += ["", "| | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
        if record.baseline:
            values = " | ".join(_cell(record.baseline.get(c)) for c in columns)
            lines.append(f"| {record.baseline_label} | {values} |")
        if best is not None:
            values = " | ".join(_cell(v) for v in [best.value, *(best.best.get(c) for c in components)])
            at = f", epoch {_cell(epoch_number(best.best_epoch))}" if training else ""
            lines.append(f"| best: trial {best.number}{at} | {values} |")
    if record.test_text:
        lines += ["", f"Evaluated with `tuner evaluate`: {record.test_text}."]
    from tuner.reports.figures import importance_unavailable

    unavailable = importance_unavailable(complete, metric)
    if unavailable is not None and complete:  # the dashboard draws its bars anyway: say they mean nothing
        lines += ["", f"Parameter importance (the Importance panel) means nothing here: {unavailable}."]
    if best is not None and training:
        from tuner.reports.confirmation import confirmation_of
        from tuner.reports.markdown import ranking_markdown

        ranking = confirmation_of(study)
        if ranking is not None:
            lines += ["", *(line.replace("## ", "#### ", 1) for line in ranking_markdown(ranking))]
        else:
            lines += [
                "",
                f"Ranking from single runs: `tuner confirm {study.study_name}` repeats the best with new seeds.",
            ]
    if best is not None:
        shown = {k: v for k, v in best.config.items() if v is not None or k in best.params}
        lines += ["", "Best configuration: " + ", ".join(f"{k}={_cell(v)}" for k, v in shown.items()) + "."]
        out = "best.yaml" if training else f"exported/{study.study_name}"
        lines += ["", f"Export it with `tuner export {study.study_name} --out {out}`."]
    else:
        lines += ["", "No completed trial yet."]
    return "\n".join(lines) + "\n"


def _merge(generated: str, existing: str) -> str:
    """``generated`` followed by whatever a person wrote below tuner's part of ``existing``."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = f"{generated.rstrip()}\n\n{_MARK} {stamp}; notes added below this line are kept*\n"
    kept_text = _added_text(existing)
    return body + ("\n" + kept_text.lstrip("\n") if kept_text.strip() else "")


def _added_text(existing: str) -> str:
    """What a person wrote in a note: below tuner's part (all of a note that has none)."""
    if not existing.strip():
        return ""
    if _MARK in existing:
        kept = existing.split(_MARK, 1)[1].split("\n", 1)
        return kept[1] if len(kept) == 2 else ""
    return existing  # a note written before tuner's: keep all of it


def save_trial_note(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """Write :func:`trial_note` as the trial's dashboard note (keeping text a person added); returns it."""
    trial_id = optuna_internals.trial_id(trial)
    body = _merge(trial_note(trial, study), dashboard_internals.read_note(study, trial_id))
    dashboard_internals.write_note(study, trial_id, body)
    return body


def save_study_note(study: optuna.Study) -> str:
    """Write :func:`study_note` as the study's dashboard note (keeping text a person added); returns it."""
    body = _merge(study_note(study), dashboard_internals.read_note(study))
    dashboard_internals.write_note(study, None, body)
    return body


def note_wanted(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a finished ``trial`` gets a dashboard note: every one among the study's first
    :data:`NOTES_UP_TO` trials, and a later one that completed among the study's best :data:`NOTED_BEST`
    (one count by the database: the same cost at 100 trials as at 10,000)."""
    import optuna

    if trial.number < NOTES_UP_TO:
        return True
    if trial.state != optuna.trial.TrialState.COMPLETE or trial.value is None:
        return False
    return queries_of(study).count_better(trial.value) < NOTED_BEST


def _retire_pushed_out_note(study: optuna.Study) -> None:
    """Remove the note of the trial that a new best trial pushed out of the best :data:`NOTED_BEST` (not one
    of the first :data:`NOTES_UP_TO`, and only if no person wrote in it)."""
    pushed = queries_of(study).nth_best_trial(NOTED_BEST)
    if pushed is None or pushed[0] < NOTES_UP_TO:
        return
    existing = dashboard_internals.read_note(study, pushed[1])
    if existing and not _added_text(existing).strip():
        dashboard_internals.delete_note(study, pushed[1])


# ------------------------------------------------------------------------------------------- figures


def _figure_id(key: str) -> str:
    return FIGURE_ID_PREFIX + (re.sub(r"[^A-Za-z0-9_.-]+", "-", key).strip("-") or "figure")


def attach_figures(study: optuna.Study, figures: Mapping[str, go.Figure] | None = None) -> list[str]:
    """Attach ``figures`` (default: ``study_figures(study, dashboard=True)`` of :mod:`tuner.reports.figures`: the
    report's, less those optuna-dashboard draws itself once a study is large) to the study as optuna-dashboard
    plotly graph objects; returns their ids.

    Each figure is saved under the id ``tuner-<key>``, so attaching again replaces it; figures tuner
    attached earlier under keys that are no longer produced are removed from the store.
    """
    import optuna_dashboard

    if figures is None:
        from tuner.reports.figures import study_figures

        figures = study_figures(study, dashboard=True)
    previous = optuna_internals.study_system_attrs(study).get(_FIGURE_IDS_ATTR, [])
    ids = []
    for key, figure in figures.items():
        ids.append(optuna_dashboard.save_plotly_graph_object(study, figure, graph_object_id=_figure_id(key)))
    stale = tuple(f"{dashboard_internals.PLOT_DATA_PREFIX}{i}:" for i in previous if i not in ids)
    if stale:
        queries_of(study).delete_system_attrs_where(lambda key: key.startswith(stale))
    optuna_internals.set_study_system_attr(study, _FIGURE_IDS_ATTR, ids)
    return ids


# -------------------------------------------------------------------------------- best-effort hooks


def publish_trial_note(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """:func:`save_trial_note` when :func:`note_wanted`, logging a warning instead of raising (called after
    every trial)."""
    try:
        if note_wanted(study, trial):
            save_trial_note(study, trial)
            if trial.number >= NOTES_UP_TO:
                _retire_pushed_out_note(study)
    except Exception as error:
        logger.warning(
            "could not write the dashboard note of trial %d: %s: %s", trial.number, type(error).__name__, error
        )


def publish_study(study: optuna.Study) -> None:
    """Attach the report figures and write the study note, logging a warning for whatever fails."""
    try:
        attach_figures(study)
    except Exception as error:
        logger.warning(
            "could not attach the report figures to study '%s' for optuna-dashboard: %s: %s",
            study.study_name,
            type(error).__name__,
            error,
        )
    try:
        save_study_note(study)
    except Exception as error:
        logger.warning(
            "could not write the dashboard note of study '%s': %s: %s", study.study_name, type(error).__name__, error
        )
