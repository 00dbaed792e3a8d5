"""The objective's own figure in a study's report, picked by the figure kind its registry entry declares.

An objective declares, in :data:`tuner.objectives.base.OBJECTIVES` (read without importing the objective, whose
module pulls in torch), the unit of its metric and the kind of figure that shows its trials; the kinds are
:data:`FIGURE_KINDS`:

- ``per_trial``: the metric per trial at its best epoch, the baseline model's as a line (the default);
- ``der_components``: the components of the metric stacked per trial (DER: Confusion, FalseAlarm, Miss);
- ``eer_det``: the metric per trial and the best trial's DET curve on probit axes (an error rate);
- ``before_after``: the baseline model's metric beside each trial's best.

Each draws the best :data:`BARS` trials that have a metric, best first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from tuner.objectives.base import objective_entry
from tuner.reports.summary import StudyReport, finite
from tuner.store.records import StudyRecord
from tuner.text import epoch_number, format_number

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["FIGURE_KINDS", "BARS", "objective_figure", "objective_figure_title"]

#: bars of the per-objective figures: the best trials, at most this many
BARS = 30

Rows = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class _Kind:
    """A kind of objective figure: its title (``{metric}`` filled in; the figure's key) and how it is drawn from
    the report, the rows it shows and the metric's unit."""

    title: str
    draw: Callable[[StudyReport, Rows, str], go.Figure]


def _figure_of(record: StudyRecord) -> tuple[_Kind, str]:
    """The figure kind and the metric's unit the study's objective declares (``per_trial`` and no unit for an
    objective tuner does not know)."""
    entry = objective_entry(record.objective)
    return FIGURE_KINDS[entry.figure if entry is not None else "per_trial"], entry.unit if entry is not None else ""


def objective_figure_title(record: StudyRecord) -> str:
    """The title (and key) of the objective's figure of ``record``'s study."""
    return _figure_of(record)[0].title.format(metric=record.metric)


def objective_figure(report: StudyReport) -> go.Figure | None:
    """The objective's own figure, over the best :data:`BARS` trials that have a metric (best first)."""
    scored = report.scored_rows()
    if not scored:
        return None
    rows = scored[:BARS]
    kind, unit = _figure_of(report.record)
    figure = kind.draw(report, rows, unit)
    if len(rows) < len(scored):
        axis = figure.layout.xaxis
        axis.title.text = f"{axis.title.text or 'trial'}: the best {len(rows)} of {len(scored)} trials"
    return figure


def _label(row: Mapping[str, Any]) -> str:
    state = str(row["state"]).lower()
    return f"trial {row['trial']}" + ("" if state == "complete" else f" ({state})")


def _with_unit(metric: str, unit: str) -> str:
    """An axis title: ``EER (%)``, ``SI-SNRi (dB)``, or the metric alone."""
    return f"{metric} ({unit})" if unit else metric


def _baseline_text(record: StudyRecord, baseline: Any) -> str:
    return f"{record.baseline_label} {format_number(baseline, significant=6)}"


# -------------------------------------------------------------------------------------------- kinds


def _per_trial(report: StudyReport, rows: Rows, unit: str) -> go.Figure:
    """The metric per trial at its best epoch, the baseline model's as a line."""
    import plotly.graph_objects as go

    record = report.record
    metric = record.metric
    figure = go.Figure()
    figure.add_bar(name=metric, x=[_label(r) for r in rows], y=[r[metric] for r in rows])
    baseline = record.baseline.get(metric)
    if finite(baseline):
        figure.add_hline(y=baseline, line_dash="dash", annotation_text=_baseline_text(record, baseline))
    figure.update_layout(xaxis_title="trial (best first)", yaxis_title=_with_unit(metric, unit))
    return figure


def _der_components(report: StudyReport, rows: Rows, unit: str) -> go.Figure:
    """Confusion, FalseAlarm and Miss stacked per trial at its best epoch (the baseline model first)."""
    import plotly.graph_objects as go

    record = report.record
    metric = record.metric
    baseline = record.baseline
    parts = [c for c in ("Confusion", "FalseAlarm", "Miss") if c in record.components] or [
        "Confusion",
        "FalseAlarm",
        "Miss",
    ]
    bars = [(_label(r), r) for r in rows]
    if all(p in baseline for p in parts):
        bars.insert(0, (record.baseline_label, baseline))
    labels = [label for label, _ in bars]
    figure = go.Figure()
    for part in parts:
        figure.add_bar(name=part, x=labels, y=[values.get(part) for _, values in bars])
    figure.add_scatter(
        name=metric,
        x=labels,
        y=[values.get(metric) for _, values in bars],
        mode="markers+text",
        marker={"symbol": "diamond", "size": 10, "color": "black"},
        text=[format_number(values.get(metric), significant=6) for _, values in bars],
        textposition="top center",
    )
    figure.update_layout(
        barmode="stack",
        xaxis_title="trial (best first), at its best epoch",
        yaxis_title=f"{_with_unit(metric, unit)} and its components",
    )
    return figure


def _probit_axis(percentages: Sequence[float]) -> dict[str, Any]:
    normal = NormalDist()
    return {"tickvals": [normal.inv_cdf(p / 100) for p in percentages], "ticktext": [f"{p:g}" for p in percentages]}


def _eer_det(report: StudyReport, rows: Rows, unit: str) -> go.Figure:
    """The metric (an error rate: EER) per trial at its best epoch (the baseline model's as a line) and the best
    trial's DET curve (miss rate against false-alarm rate on probit axes, from ``details/best``)."""
    from plotly.subplots import make_subplots

    record, trials = report.record, report.trials
    metric = record.metric
    best = report.best()
    candidates = ([best.number] if best is not None else []) + [r["trial"] for r in rows]
    det_trial = next(
        (trials[n] for n in candidates if isinstance((trials[n].best_details or {}).get("det"), Mapping)), None
    )
    det_title = f"DET curve of trial {det_trial.number}" if det_trial is not None else "DET curve (none recorded)"
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=(f"{metric} per trial (best epoch)", det_title), horizontal_spacing=0.12
    )
    figure.add_bar(
        name=metric,
        x=[_label(r) for r in rows],
        y=[r[metric] for r in rows],
        text=[format_number(r[metric], significant=6) for r in rows],
        textposition="auto",
        row=1,
        col=1,
    )
    baseline = record.baseline.get(metric)
    if finite(baseline):
        figure.add_hline(
            y=baseline,
            line_dash="dash",
            line_color="gray",
            row=1,
            col=1,
            annotation_text=_baseline_text(record, baseline),
            annotation_position="top left",
        )
    figure.update_xaxes(title_text="trial (best first)", row=1, col=1)
    figure.update_yaxes(title_text=_with_unit(metric, unit), row=1, col=1)
    if det_trial is not None:
        details = det_trial.best_details or {}
        det = details["det"]
        normal = NormalDist()
        eps = 1e-3

        def probit(values: Sequence[float]) -> list[float]:
            return [normal.inv_cdf(min(max(float(v), eps), 1 - eps)) for v in values]

        fpr, fnr = list(det.get("fpr", [])), list(det.get("fnr", []))
        epoch = details.get("epoch")
        figure.add_scatter(
            name=f"trial {det_trial.number}" + (f", epoch {epoch_number(epoch)}" if epoch is not None else ""),
            x=probit(fpr),
            y=probit(fnr),
            mode="lines+markers",
            marker={"size": 4},
            customdata=[[100 * a, 100 * b] for a, b in zip(fpr, fnr)],
            hovertemplate="false alarm %{customdata[0]:.1f}%<br>miss %{customdata[1]:.1f}%<extra></extra>",
            row=1,
            col=2,
        )
        diagonal = probit([eps, 1 - eps])
        figure.add_scatter(
            name="EER line",
            x=diagonal,
            y=diagonal,
            mode="lines",
            line={"dash": "dot", "color": "gray"},
            hoverinfo="skip",
            row=1,
            col=2,
        )
        eer_row = next((r for r in rows if r["trial"] == det_trial.number), None)
        if eer_row is not None and finite(eer_row.get(metric)):
            rate = eer_row[metric] / 100 if unit == "%" else eer_row[metric]
            point = probit([rate])[0]
            figure.add_scatter(
                name=f"{metric} {format_number(eer_row[metric], significant=6)}{unit}",
                x=[point],
                y=[point],
                mode="markers",
                marker={"size": 11, "symbol": "circle-open", "color": "red"},
                row=1,
                col=2,
            )
        ticks = _probit_axis([0.5, 1, 2, 5, 10, 20, 40, 60, 80, 90, 95, 98, 99.5])
        limits = probit([eps * 2, 1 - eps * 2])
        figure.update_xaxes(title_text="false alarm rate (%)", range=limits, **ticks, row=1, col=2)
        figure.update_yaxes(title_text="miss rate (%)", range=limits, **ticks, row=1, col=2)
    return figure


def _before_after(report: StudyReport, rows: Rows, unit: str) -> go.Figure:
    """The metric of the model before fine-tuning (the study's baseline) beside each trial's best."""
    import plotly.graph_objects as go

    record = report.record
    metric = record.metric
    labels = [_label(r) for r in rows]
    baseline = record.baseline.get(metric)
    figure = go.Figure()
    if finite(baseline):
        figure.add_bar(
            name=f"before: {record.baseline_label}",
            x=labels,
            y=[baseline] * len(rows),
            marker_color="lightgray",
            text=[format_number(baseline, significant=6)] * len(rows),
            textposition="auto",
        )
    figure.add_bar(
        name="after: best epoch",
        x=labels,
        y=[r[metric] for r in rows],
        text=[format_number(r[metric], significant=6) for r in rows],
        textposition="auto",
    )
    figure.update_layout(barmode="group", xaxis_title="trial (best first)", yaxis_title=_with_unit(metric, unit))
    return figure


#: figure kind (what an objective's registry entry names) -> its title and how it is drawn
FIGURE_KINDS: dict[str, _Kind] = {
    "per_trial": _Kind("{metric} per trial at the best epoch", _per_trial),
    "der_components": _Kind("{metric} components at the best epoch", _der_components),
    "eer_det": _Kind("{metric} per trial and DET curve of the best trial", _eer_det),
    "before_after": _Kind("{metric} before and after fine-tuning", _before_after),
}
