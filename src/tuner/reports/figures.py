"""The figures of a study's report, as plotly figures: :func:`study_figures` (title -> figure), drawn from the
records the report already read.

Optimization history, intermediate values (pruned trials dashed; the spread of all trials beyond
:data:`LINES_UP_TO`), parallel coordinates (one WebGL trace beyond :data:`LINES_UP_TO`), parameter importances
(fANOVA, or PED-ANOVA beyond :data:`FANOVA_UP_TO`), and the objective's own figure
(:mod:`tuner.reports.objective_figures`). The titles are the figures' keys: optuna-dashboard stores each
figure under an id made from its key, so they stay as they are.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tuner.reports.objective_figures import objective_figure, objective_figure_title
from tuner.reports.summary import StudyReport, finite
from tuner.store.records import StudyRecord, TrialRecord
from tuner.text import epoch_number, format_number

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

__all__ = [
    "study_figures",
    "figure_sections",
    "HISTORY",
    "INTERMEDIATE",
    "PARALLEL",
    "IMPORTANCES",
    "LINES_UP_TO",
    "BEST_LINES",
    "FANOVA_UP_TO",
]

logger = logging.getLogger(__name__)

# figure keys (stable: optuna-dashboard stores each figure under an id made from its key)
HISTORY = "Optimization history"
INTERMEDIATE = "Intermediate values"
PARALLEL = "Parallel coordinates"
IMPORTANCES = "Parameter importances"
_FIGURE_HEIGHT = 460
_TEMPLATE = "plotly_white"

#: intermediate values: one line per trial up to this many trials; beyond, the spread of all trials (median
#: and 10-90 % band per epoch) with a line for each of the best :data:`BEST_LINES`
LINES_UP_TO = 50
BEST_LINES = 10
#: parameter importances: fANOVA up to this many completed trials (its cost grows with the square of their
#: number: 3 minutes for 3,000), PED-ANOVA over all of them beyond
FANOVA_UP_TO = 200


def study_figures(study: optuna.Study, *, dashboard: bool = False) -> dict[str, go.Figure]:
    """The report's figures of ``study``, title -> plotly figure (the ones the HTML report shows).

    Figures that cannot be drawn yet (no completed trial, importances with fewer than two completed
    trials or without any spread) are left out; the HTML report says why in their place. With
    ``dashboard``, a study of more than :data:`LINES_UP_TO` completed trials also leaves out the
    optimization history and parallel coordinates, which optuna-dashboard draws itself from every trial
    (each attached figure travels with every load of the study).
    """
    sections = figure_sections(StudyReport.of(study), dashboard=dashboard)
    return {title: item for title, item in sections.items() if not isinstance(item, str)}


def figure_sections(report: StudyReport, dashboard: bool = False) -> dict[str, Any]:
    """title -> figure, or -> a note saying why that figure is not drawn (in the report's order)."""
    import optuna

    sections: dict[str, Any] = {}
    notes: dict[str, str] = {}
    study, record = report.study, report.record
    metric = record.metric
    trials = list(report.trials.values())
    if not trials:
        return {"Figures": "This study has no trials yet: nothing to plot."}
    completed = [t for t in trials if t.state == "COMPLETE" and finite(t.value)]
    drawn_by_dashboard = (HISTORY, PARALLEL) if dashboard and len(completed) > LINES_UP_TO else ()
    builders = [
        (HISTORY, lambda: _history(report, completed) if completed else None, "no completed trial yet"),
        (
            INTERMEDIATE,
            lambda: _intermediate(report) if any(t.reported for t in trials) else None,
            "no trial has reported an epoch yet",
        ),
        (
            PARALLEL,
            lambda: _parallel(report, completed) if completed and any(t.params for t in completed) else None,
            "no completed trial yet",
        ),
        (IMPORTANCES, lambda: _importances(study, metric, completed, notes), None),
        (
            objective_figure_title(record),
            lambda: objective_figure(report),
            f"no trial has a {metric} yet",
        ),
    ]
    if report.confirmation is not None:
        from tuner.reports.confirmation import RANKING, ranking_figure

        confirmation = report.confirmation
        builders.insert(0, (RANKING, lambda: ranking_figure(confirmation), None))
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # optuna's "no trials" warnings are notes here
    try:
        for title, build, why in builders:
            if title in drawn_by_dashboard:
                continue
            try:
                figure = build()
            except Exception as error:
                logger.warning(
                    "report figure '%s' of study '%s' failed: %s: %s",
                    title,
                    study.study_name,
                    type(error).__name__,
                    error,
                )
                sections[title] = f"could not be drawn ({type(error).__name__}: {error})"
                continue
            if figure is None:
                note = notes.get(title, why)
                if note is not None:
                    sections[title] = note
                continue
            figure.update_layout(title={"text": title}, template=_TEMPLATE, height=_FIGURE_HEIGHT)
            sections[title] = figure
    finally:
        optuna.logging.set_verbosity(previous)
    return sections


def _history(report: StudyReport, completed: Sequence[TrialRecord]) -> go.Figure:
    """Each completed trial's value by trial number, and the best value so far (as Optuna's optimization
    history, from the records already read), with the baseline model's value as a line."""
    import plotly.graph_objects as go

    record = report.record
    metric = record.metric
    ordered = sorted(completed, key=lambda t: t.number)
    best: list[float] = []
    for trial in ordered:
        value = float(trial.value)  # type: ignore[arg-type]
        best.append(value if not best or record.better(value, best[-1]) else best[-1])
    size = 6 if len(ordered) <= 500 else 3
    figure = go.Figure()
    figure.add_scatter(
        name=metric,
        x=[t.number for t in ordered],
        y=[t.value for t in ordered],
        mode="markers",
        marker={"size": size},
        hovertemplate=f"trial %{{x}}<br>{metric} %{{y:.4g}}<extra></extra>",
    )
    figure.add_scatter(name="Best value", x=[t.number for t in ordered], y=best, mode="lines", line_shape="hv")
    baseline = record.baseline.get(metric)
    if finite(baseline):
        label = f"{record.baseline_label} {format_number(baseline, significant=6)}"
        figure.add_hline(y=baseline, line_dash="dash", annotation_text=label)
    others = len(report.trials) - len(ordered)
    figure.update_layout(
        xaxis_title="trial" + (f" ({len(ordered)} completed; {others} pruned, failed or unfinished)" if others else ""),
        yaxis_title=metric,
    )
    return figure


def _intermediate(report: StudyReport) -> go.Figure:
    """The value each trial reported after each epoch (the study's ``prune_on``: what the pruner compared).

    Up to :data:`LINES_UP_TO` trials, one line each, pruned trials dashed and named so (Optuna's figure).
    A larger study shows where all of them were, epoch by epoch (median and 10-90 % band, with how many
    trials got that far), and one line for each of its best :data:`BEST_LINES` trials.
    """
    reporting = [t for t in report.trials.values() if t.reported]
    if len(reporting) <= LINES_UP_TO:
        return _intermediate_lines(report.study, report.record.prune_on)
    return _intermediate_spread(report, reporting)


def _intermediate_lines(study: optuna.Study, reported: str) -> go.Figure:
    from optuna.visualization import plot_intermediate_values

    figure = plot_intermediate_values(study)
    states = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
    for trace in figure.data:
        match = re.fullmatch(r"Trial\s*(\d+)", str(trace.name or ""))
        if not match:
            continue
        number = int(match.group(1))
        state = states.get(number, "")
        trace.name = f"trial {number} ({state.lower()})" if state else f"trial {number}"
        trace.x = [epoch_number(step) for step in trace.x]  # Optuna's step is the epoch counted from 0
        if state == "PRUNED":
            trace.line = {"dash": "dash"}
            trace.marker.symbol = "x"
    figure.update_layout(showlegend=True, xaxis_title="epoch", yaxis_title=f"{reported} (each epoch)")
    return figure


def _intermediate_spread(report: StudyReport, reporting: Sequence[TrialRecord]) -> go.Figure:
    import numpy as np
    import plotly.graph_objects as go

    reported = report.record.prune_on
    by_step: dict[int, list[float]] = {}
    for trial in reporting:
        for step, value in trial.reported.items():
            if finite(value):
                by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    low, median, high = (
        [float(np.percentile(by_step[s], q)) for s in steps] for q in (10, 50, 90)
    )  # fmt: skip
    counts = [len(by_step[s]) for s in steps]
    steps = [s + 1 for s in steps]  # epochs counted from 1 (text.epoch_number)
    figure = go.Figure()
    figure.add_scatter(name="90th percentile", x=steps, y=high, mode="lines", line={"width": 0}, showlegend=False,
                       hoverinfo="skip")  # fmt: skip
    figure.add_scatter(
        name=f"10-90 % of the {len(reporting)} trials",
        x=steps,
        y=low,
        mode="lines",
        line={"width": 0},
        fill="tonexty",
        fillcolor="rgba(99, 110, 250, 0.2)",
        hoverinfo="skip",
    )
    figure.add_scatter(
        name="median",
        x=steps,
        y=median,
        mode="lines+markers",
        line={"color": "rgb(99, 110, 250)", "width": 3},
        customdata=[[n, lo, hi] for n, lo, hi in zip(counts, low, high)],
        hovertemplate="epoch %{x}: median %{y:.4g} of %{customdata[0]} trials (10-90 %: %{customdata[1]:.4g}"
        "-%{customdata[2]:.4g})<extra></extra>",
    )
    best = [report.trials[r["trial"]] for r in report.scored_rows() if report.trials[r["trial"]].reported]
    for trial in best[:BEST_LINES]:
        pruned = trial.state == "PRUNED"
        points = sorted(trial.reported.items())
        figure.add_scatter(
            name=f"trial {trial.number} ({trial.state.lower()})",
            x=[epoch_number(step) for step, _ in points],
            y=[value for _, value in points],
            mode="lines+markers",
            line={"dash": "dash"} if pruned else {},
            marker={"symbol": "x" if pruned else "circle", "size": 5},
        )
    figure.update_layout(
        showlegend=True,
        xaxis_title=f"epoch (lines: the best {min(BEST_LINES, len(best))} trials by {report.record.metric})",
        yaxis_title=f"{reported} (each epoch)",
    )
    return figure


def _parallel(report: StudyReport, completed: Sequence[TrialRecord]) -> go.Figure:
    """Each completed trial's parameters and metric: Optuna's parallel coordinates (one line a trial) up to
    :data:`LINES_UP_TO` trials, one plotly ``Parcoords`` trace (drawn by WebGL, for thousands) beyond."""
    if len(completed) <= LINES_UP_TO:
        from optuna.visualization import plot_parallel_coordinate

        return plot_parallel_coordinate(report.study, target_name=report.record.metric)
    return _parallel_dense(report.record, completed)


def _parallel_dense(record: StudyRecord, completed: Sequence[TrialRecord]) -> go.Figure:
    import plotly.graph_objects as go

    metric = record.metric
    values = [float(t.value) for t in completed]  # type: ignore[arg-type]
    dimensions: list[dict[str, Any]] = [{"label": metric, "values": values}]
    names = list(dict.fromkeys([*(n for n in record.search_space if any(n in t.params for t in completed)),
                                *(n for t in completed for n in t.params)]))  # fmt: skip
    for name in names:
        column = [t.params.get(name) for t in completed]
        present = [v for v in column if v is not None]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
        spec = record.search_space.get(name)
        if numeric and len(set(present)) > 3:
            log = isinstance(spec, Mapping) and bool(spec.get("log")) and all(v > 0 for v in present)
            scaled = [math.log10(v) if log else float(v) for v in present]
            low, high = min(scaled), max(scaled)
            missing = low - 0.1 * ((high - low) or 1.0)
            dimension: dict[str, Any] = {
                "label": name,
                "values": [missing if v is None else (math.log10(v) if log else float(v)) for v in column],
            }
            if log:
                decades = range(math.floor(low), math.ceil(high) + 1)
                dimension.update(tickvals=list(decades), ticktext=[f"1e{d}" for d in decades])
            if len(present) < len(column):
                dimension.setdefault("tickvals", [])
                dimension.setdefault("ticktext", [])
                dimension["tickvals"] = [missing, *dimension["tickvals"]]
                dimension["ticktext"] = ["none", *dimension["ticktext"]]
        else:
            choices = sorted({repr(v): v for v in column}.values(), key=lambda v: (v is None, str(v)))
            index = {repr(v): i for i, v in enumerate(choices)}
            dimension = {
                "label": name,
                "values": [index[repr(v)] for v in column],
                "tickvals": list(range(len(choices))),
                "ticktext": ["none" if v is None else format_number(v, significant=6) for v in choices],
            }
        dimensions.append(dimension)
    figure = go.Figure(
        go.Parcoords(
            dimensions=dimensions,
            line={
                "color": values,
                "colorscale": "Viridis",
                "reversescale": not record.maximize,  # the best trials bright
                "showscale": True,
                "colorbar": {"title": {"text": metric}},
            },
        )
    )
    figure.update_layout(margin={"l": 80, "r": 40, "t": 90, "b": 40})
    return figure


def importance_unavailable(completed: Sequence[TrialRecord], metric: str) -> str | None:
    """Why parameter importances would mean nothing for these completed trials (too few, one configuration, one
    value), else None; the report and the dashboard's study note say the same."""
    if len(completed) < 2:
        return f"need at least 2 completed trials with differing parameters (this study has {len(completed)} completed)"
    names = set().union(*(t.params for t in completed))
    if not any(len({repr(t.params.get(n)) for t in completed}) > 1 for n in names):
        return "the completed trials all have the same parameters: nothing to rank"
    if len({t.value for t in completed}) < 2:
        return f"every completed trial has the same {metric}: no parameter explains any difference"
    return None


def _importances(
    study: optuna.Study, metric: str, completed: Sequence[TrialRecord], notes: dict[str, str]
) -> go.Figure | None:
    """How much each parameter explains of the metric: fANOVA (seeded) up to :data:`FANOVA_UP_TO` completed
    trials, PED-ANOVA (what sets the best 10 % apart) beyond; or a note when there is too little to rank."""
    import plotly.graph_objects as go
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

    unavailable = importance_unavailable(completed, metric)
    if unavailable is not None:
        notes[IMPORTANCES] = unavailable
        return None
    if len(completed) <= FANOVA_UP_TO:
        evaluator: Any = FanovaImportanceEvaluator(seed=0)
        method = f"fANOVA over the {len(completed)} completed trials"
    else:
        evaluator = PedAnovaImportanceEvaluator()
        method = f"PED-ANOVA: what sets the best 10 % of the {len(completed)} completed trials apart"
    try:
        importances = get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as error:  # e.g. "zero total variance in all trees"
        notes[IMPORTANCES] = f"cannot be computed from these trials yet ({error})"
        return None
    ranked = sorted(importances.items(), key=lambda item: item[1])  # the most important at the top
    figure = go.Figure()
    figure.add_bar(
        name="importance",
        x=[float(value) for _, value in ranked],
        y=[name for name, _ in ranked],
        orientation="h",
        text=[f"{float(value):.2f}" for _, value in ranked],
        textposition="outside",
        hovertemplate="%{y}: %{x:.3f}<extra></extra>",
    )
    figure.update_layout(xaxis_title=f"importance for {metric} ({method})", yaxis_title="parameter")
    return figure
