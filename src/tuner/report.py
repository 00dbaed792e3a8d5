"""Study reports rebuilt from the store alone: trial tables (markdown, CSV), one offline HTML page of figures,
and a comparison of several studies of one metric.

- :func:`write_report` writes ``DIR/STUDY.md`` (header, trial table, one per-epoch table per trial),
  ``DIR/STUDY.csv`` (the trial table), ``DIR/STUDY.epochs.csv`` (every epoch of every trial) and
  ``DIR/STUDY.html`` (the figures of :func:`study_figures` with plotly.js embedded once, inline: the page
  opens offline, and the trial table). A large study's markdown and html show a summary, the best
  :data:`TABLE_ROWS` trials and the epochs of the best :data:`DETAILED_TRIALS`; the CSVs keep everything;
- :func:`study_figures` builds the figures (title -> plotly figure): optimization history, intermediate
  values (pruned trials dashed), parallel coordinates, parameter importances, and one figure of the
  objective's own (DER components, EER with the best trial's DET curve, SI-SNRi before/after);
- :func:`write_comparison` puts several studies in one table (``DIR/compare.md``, ``DIR/compare.csv``).

Everything is read from the study's stored attributes (see :mod:`tuner.runner`), never from a live run.
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import io
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from tuner.errors import ConfigError
from tuner.store.connect import load_existing_study, mask_url, resolve_storage_url
from tuner.store.records import StudyRecord, TrialRecord, study_trials
from tuner.tables import sort_rows, trains, trial_columns, trial_row

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

__all__ = [
    "COMPARE_COLUMNS",
    "DEFAULT_REPORT_DIR",
    "compare_rows",
    "compare_table_rows",
    "report_csv",
    "report_epochs_csv",
    "report_html",
    "report_markdown",
    "study_figures",
    "write_comparison",
    "write_report",
]

logger = logging.getLogger(__name__)

#: where `tuner report` writes (relative to the working directory)
DEFAULT_REPORT_DIR = Path("storage/reports")

#: states in the order they are counted in headers and tables
_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")

# figure keys (stable: optuna-dashboard stores each figure under an id made from its key)
HISTORY = "Optimization history"
INTERMEDIATE = "Intermediate values"
PARALLEL = "Parallel coordinates"
IMPORTANCES = "Parameter importances"
_OBJECTIVE_FIGURES = {
    "pyannote_segmentation": "DER components at the best epoch",
    "wavlm_sv": "EER per trial and DET curve of the best trial",
    "sepformer_separation": "SI-SNRi before and after fine-tuning",
}
_FIGURE_HEIGHT = 460
_TEMPLATE = "plotly_white"

#: rows of the trial table in the markdown and html (best first; the CSV has every trial)
TABLE_ROWS = 200
#: a study of up to this many trials shows every trial's epochs; a larger one those of the best
#: :data:`DETAILED_TRIALS` (``STUDY.epochs.csv`` has every epoch of every trial)
DETAIL_ALL_UP_TO = 50
DETAILED_TRIALS = 20
#: intermediate values: one line per trial up to this many trials; beyond, the spread of all trials (median
#: and 10-90 % band per epoch) with a line for each of the best :data:`BEST_LINES`
LINES_UP_TO = 50
BEST_LINES = 10
#: bars of the per-objective figures: the best trials, at most this many
BARS = 30
#: parameter importances: fANOVA up to this many completed trials (its cost grows with the square of their
#: number: 3 minutes for 3,000), PED-ANOVA over all of them beyond
FANOVA_UP_TO = 200


# ------------------------------------------------------------------------------------ study summary


@dataclass
class _Report:
    """A study read once for a report: its record, its trials' records and the trial table (best first)."""

    study: optuna.Study
    record: StudyRecord
    trials: dict[int, TrialRecord]
    rows: list[dict[str, Any]]

    @classmethod
    def of(cls, study: optuna.Study) -> _Report:
        record, trials = study_trials(study)
        rows = sort_rows([trial_row(t, record) for t in trials], record)
        return cls(study, record, {t.number: t for t in trials}, rows)

    def state_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(_STATES, 0)
        for trial in self.trials.values():
            counts[trial.state] = counts.get(trial.state, 0) + 1
        return counts

    def best(self) -> TrialRecord | None:
        """The study's best trial (Optuna's choice among completed trials), None before one completed."""
        try:
            return self.trials.get(self.study.best_trial.number)
        except ValueError:  # no completed trial (or a multi-objective study)
            return None

    @property
    def trains(self) -> bool:
        """Whether trials train (per-epoch records) or evaluate items one by one (a pipeline's files)."""
        return trains(self.record)

    @property
    def at_best(self) -> str:
        """Where a row's metric comes from, for headings."""
        return "at each trial's best epoch" if self.trains else "over the items each trial evaluated"

    def detail(self, trial: TrialRecord) -> tuple[list[str], list[list[Any]]]:
        """The columns and rows of ``trial``'s own table: its epochs (the best marked), or each evaluated
        item of a stepwise trial (a pipeline's dev files, in the order it evaluated them)."""
        metric, components = self.record.metric, self.record.components
        if trial.epochs:
            columns = _epoch_columns(trial.epochs, metric, components)
            marks = ("*" if e["epoch"] == trial.best_epoch else "" for e in trial.epochs)
            return [*columns, "best"], [[*(e.get(c) for c in columns), m] for e, m in zip(trial.epochs, marks)]
        steps = dict(trial.steps or {})
        columns = [metric, *(c for c in components if any(c in v for v in steps.values()))]
        return ["item", *columns], [[item, *(values.get(c) for c in columns)] for item, values in steps.items()]

    def scored_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if _finite(r.get(self.record.metric))]

    @property
    def large(self) -> bool:
        """Whether the pages summarise (more trials than they show in full)."""
        return len(self.rows) > min(TABLE_ROWS, DETAIL_ALL_UP_TO)

    def table_rows(self) -> list[dict[str, Any]]:
        """The rows the pages' trial table shows: the best :data:`TABLE_ROWS`."""
        return self.rows[:TABLE_ROWS]

    def detailed(self) -> list[TrialRecord]:
        """The trials whose epochs the pages show: all, or the best :data:`DETAILED_TRIALS` of a large study."""
        rows = self.rows if len(self.rows) <= DETAIL_ALL_UP_TO else self.rows[:DETAILED_TRIALS]
        return [self.trials[r["trial"]] for r in rows]

    def summary(self) -> list[str]:
        """Plain-text lines summarising every trial (for a large study, whose pages show only the best)."""
        record, metric = self.record, self.record.metric
        name = self.study.study_name
        scored = sorted(r[metric] for r in self.scored_rows())
        if record.maximize:
            scored.reverse()
        unit = "epochs" if self.trains else "evaluated items"
        lines = [
            f"the trial table shows the best {min(TABLE_ROWS, len(self.rows))} of {len(self.rows)} trials and "
            f"the {unit} of the best {len(self.detailed())}; {_safe_stem(name)}.csv has every trial"
            + (f" and {_safe_stem(name)}.epochs.csv every epoch of every trial" if self.trains else "")
        ]
        if scored:
            marks = ", ".join(
                f"{label} {_fmt(scored[min(len(scored) - 1, int(q * (len(scored) - 1) + 0.5))])}"
                for label, q in (("best", 0.0), ("10 %", 0.1), ("median", 0.5), ("90 %", 0.9), ("worst", 1.0))
            )
            lines.append(f"{metric} {self.at_best}, over the {len(scored)} trials that have one: {marks}")
        runs: dict[int, int] = {}
        for trial in self.trials.values():
            done = trial.epochs_run if self.trains else len(trial.reported)
            runs[done] = runs.get(done, 0) + 1
        lines.append(
            ("epochs run: " if self.trains else "items evaluated: ")
            + ", ".join(f"{epochs} by {n} trials" for epochs, n in sorted(runs.items(), key=lambda item: -item[0]))
        )
        reasons: dict[str, list[int]] = {}
        for trial in self.trials.values():
            if trial.state == "FAIL":
                reasons.setdefault(trial.fail_summary or "no reason recorded", []).append(trial.number)
        for reason, numbers in sorted(reasons.items(), key=lambda item: -len(item[1]))[:10]:
            shown = ", ".join(str(n) for n in numbers[:10]) + (", ..." if len(numbers) > 10 else "")
            lines.append(f"failed ({len(numbers)} trials: {shown}): {reason}")
        for state in ("RUNNING", "WAITING"):
            numbers = [t.number for t in self.trials.values() if t.state == state]
            if numbers:
                shown = ", ".join(str(n) for n in numbers[:20]) + (", ..." if len(numbers) > 20 else "")
                lines.append(f"{state.lower()}: {len(numbers)} trials ({shown})")
        return lines


def _counts_text(counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    named = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
    parts = [
        f"{n} {named.get(state, state.lower())}"
        for state, n in counts.items()
        if n or state in ("COMPLETE", "PRUNED", "FAIL")
    ]
    return f"{total} ({', '.join(parts)})"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------------- formatting


def _fmt(value: Any) -> str:
    """A value for the markdown and HTML tables: 6 significant digits, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.6g}"
    return str(value)


def _md_cell(value: Any) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _md_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return lines


def _html_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision: float(text) == value
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def _command(study_names: Sequence[str], url: str, out_dir: Path, compare: bool = False) -> str:
    parts = [
        "tuner",
        "report",
        *(["--compare"] if compare else []),
        *study_names,
        "--storage",
        mask_url(url),
        "--out",
        str(out_dir),
    ]
    return " ".join(_shell_quote(p) for p in parts)


def _shell_quote(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9_./:@%+=,-]+", text) else "'" + text.replace("'", "'\"'\"'") + "'"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# ---------------------------------------------------------------------------------- per-trial parts


def _epoch_columns(epochs: Sequence[Mapping[str, Any]], metric: str, components: Sequence[str]) -> list[str]:
    """The hand-run tables' shape: epoch, loss/val, metric, components, loss/train, lr (then seconds, the rest)."""
    present: set[str] = set().union(*(e.keys() for e in epochs)) if epochs else set()
    losses = [c for c in components if c.startswith("loss/") and c not in ("loss/val", "loss/train")]
    columns = ["epoch"]
    columns += [c for c in ("loss/val",) if c in present]
    columns += [metric]
    columns += [c for c in components if not c.startswith("loss/") and c != metric]
    columns += [c for c in (*losses, "loss/train", "lr", "seconds") if c in present]
    columns += sorted(k for k in present if k not in columns)
    return columns


def _trial_heading(trial: TrialRecord) -> str:
    config = trial.config
    parts = []
    if config.get("optimizer") is not None:
        parts.append(str(config["optimizer"]))
    if config.get("schedule") is not None:
        parts.append(str(config["schedule"]))
    if config.get("batch_size") is not None:
        parts.append(f"batch {config['batch_size']}")
    if _finite(config.get("lr")):
        parts.append(f"lr {config['lr']:.3g}")
    heading = f"Trial {trial.number} ({trial.state})"
    return heading + (": " + ", ".join(parts) if parts else "")


def _trial_summary(trial: TrialRecord, metric: str) -> str:
    """One line under a trial's heading: the rest of its configuration, seed, epochs, best epoch, and for a
    failed trial why it failed."""
    shown = {"optimizer", "schedule", "batch_size", "lr"}
    rest = [f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in trial.config.items() if k not in shown and v is not None]
    facts = []
    if rest:
        facts.append(", ".join(rest))
    if trial.seed is not None:
        facts.append(f"seed {trial.seed}")
    if trial.steps is not None or (not trial.epochs and trial.reported):
        facts.append(f"{len(trial.reported)} items evaluated")
    else:
        max_epochs = trial.max_epochs
        facts.append(f"{trial.epochs_run}" + (f" of {max_epochs}" if max_epochs else "") + " epochs run")
    if trial.best_epoch is not None:
        facts.append(f"best epoch {trial.best_epoch}: {metric} {_fmt(trial.best.get(metric))}")
    if trial.retry_summary:
        facts.append(trial.retry_summary)
    if trial.state == "FAIL":
        facts.append("failed" + (f": {trial.fail_summary}" if trial.fail_summary else " (no reason recorded)"))
    return "; ".join(facts)


# --------------------------------------------------------------------------------------- markdown


def _header_lines(report: _Report, url: str, command: str) -> list[tuple[str, str]]:
    """(label, text) pairs of the report header, shared by the markdown and HTML pages."""
    record = report.record
    metric = record.metric
    items = [
        ("objective", str(record.objective or "?")),
        ("metric", f"{metric} ({record.direction})"),
        ("data", str(record.data or "?")),
        ("pretrained", record.pretrained_text),
        ("trials", _counts_text(report.state_counts())),
    ]
    best = report.best()
    if best is not None:
        at = f" at epoch {best.best_epoch}" if best.best_epoch is not None else ""
        items.append(("best", f"trial {best.number}, {metric} = {_fmt(best.value)}{at}"))
    else:
        items.append(("best", "no completed trial yet"))
    label = f"baseline ({record.baseline_label})"
    baseline = record.baseline
    if metric in baseline:
        others = ", ".join(f"{k} {_fmt(v)}" for k, v in baseline.items() if k in record.components)
        items.append((label, f"{metric} = {_fmt(baseline[metric])}" + (f" ({others})" if others else "")))
    else:
        items.append((label, "not recorded"))
    if record.test_text:
        items.append(("evaluated (`tuner evaluate`)", record.test_text))
    items.append(("store", mask_url(url)))
    items.append(("generated by", f"`{command}` at {_now()}"))
    return items


def report_markdown(study: optuna.Study, url: str = "", command: str = "") -> str:
    """The markdown report: header, trial table (best first), then one per-epoch table per trial."""
    return _markdown(_Report.of(study), url, command)


def _markdown(report: _Report, url: str, command: str) -> str:
    record = report.record
    metric = record.metric
    lines = [f"# Study report: {report.study.study_name}", ""]
    lines += [f"- {label}: {text}" for label, text in _header_lines(report, url, command)]
    lines.append("")
    if not report.rows:
        lines += ["**This study has no trials yet.** Run `tuner run STUDY_FILE` to add some.", ""]
        return "\n".join(lines)
    if report.large:
        lines += ["## Summary", ""]
        lines += [f"- {line}" for line in report.summary()]
        lines.append("")
    shown = report.table_rows()
    extent = f"; the best {len(shown)} of {len(report.rows)}" if len(shown) < len(report.rows) else ""
    lines += [f"## Trials by {metric} (best first; metric and components {report.at_best}{extent})", ""]
    columns = trial_columns(record)
    lines += _md_table(columns, ([row.get(c) for c in columns] for row in shown))
    lines.append("")
    for trial in report.detailed():
        lines += [f"## {_trial_heading(trial)}", "", _trial_summary(trial, metric), ""]
        columns, detail = report.detail(trial)
        if not detail:
            lines += ["_No epoch finished._" if report.trains else "_No item evaluated._", ""]
            continue
        lines += _md_table(columns, detail)
        lines.append("")
    return "\n".join(lines)


def report_csv(study: optuna.Study) -> str:
    """The trial table as CSV (one header row; floats in full precision, empty cells for missing)."""
    return _csv(_Report.of(study))


def _csv(report: _Report) -> str:
    columns = trial_columns(report.record)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in report.rows:
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    return buffer.getvalue()


def report_epochs_csv(study: optuna.Study) -> str:
    """Every epoch of every trial as CSV: trial, state, epoch, best (1 for the trial's best epoch), then the
    epoch's values in the per-epoch tables' order; trials in the trial table's order (best first)."""
    return _epochs_csv(_Report.of(study))


def _epochs_csv(report: _Report) -> str:
    record = report.record
    trials = [report.trials[r["trial"]] for r in report.rows]
    every = [epoch for trial in trials for epoch in trial.epochs]
    values = [c for c in _epoch_columns(every, record.metric, record.components) if c != "epoch"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", "state", "epoch", "best", *values])
    for trial in trials:
        for epoch in trial.epochs:
            best = 1 if epoch["epoch"] == trial.best_epoch else 0
            writer.writerow(
                [trial.number, trial.state, epoch["epoch"], best, *(_csv_value(epoch.get(c)) for c in values)]
            )
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------- figures


def study_figures(study: optuna.Study, *, dashboard: bool = False) -> dict[str, go.Figure]:
    """The report's figures of ``study``, title -> plotly figure (the ones the HTML report shows).

    Figures that cannot be drawn yet (no completed trial, importances with fewer than two completed
    trials or without any spread) are left out; the HTML report says why in their place. With
    ``dashboard``, a study of more than :data:`LINES_UP_TO` completed trials also leaves out the
    optimization history and parallel coordinates, which optuna-dashboard draws itself from every trial
    (each attached figure travels with every load of the study).
    """
    sections = _figure_sections(_Report.of(study), dashboard=dashboard)
    return {title: item for title, item in sections.items() if not isinstance(item, str)}


def _figure_sections(report: _Report, dashboard: bool = False) -> dict[str, Any]:
    """title -> figure, or -> a note saying why that figure is not drawn (in the report's order)."""
    import optuna

    sections: dict[str, Any] = {}
    notes: dict[str, str] = {}
    study, record = report.study, report.record
    metric = record.metric
    trials = list(report.trials.values())
    if not trials:
        return {"Figures": "This study has no trials yet: nothing to plot."}
    completed = [t for t in trials if t.state == "COMPLETE" and _finite(t.value)]
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
            _OBJECTIVE_FIGURES.get(record.objective, f"{metric} per trial at the best epoch"),
            lambda: _objective_figure(report),
            f"no trial has a {metric} yet",
        ),
    ]
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


def _history(report: _Report, completed: Sequence[TrialRecord]) -> go.Figure:
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
    if _finite(baseline):
        figure.add_hline(y=baseline, line_dash="dash", annotation_text=f"{record.baseline_label} {_fmt(baseline)}")
    others = len(report.trials) - len(ordered)
    figure.update_layout(
        xaxis_title="trial" + (f" ({len(ordered)} completed; {others} pruned, failed or unfinished)" if others else ""),
        yaxis_title=metric,
    )
    return figure


def _intermediate(report: _Report) -> go.Figure:
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
        if state == "PRUNED":
            trace.line = {"dash": "dash"}
            trace.marker.symbol = "x"
    figure.update_layout(showlegend=True, xaxis_title="epoch", yaxis_title=f"{reported} (each epoch)")
    return figure


def _intermediate_spread(report: _Report, reporting: Sequence[TrialRecord]) -> go.Figure:
    import numpy as np
    import plotly.graph_objects as go

    reported = report.record.prune_on
    by_step: dict[int, list[float]] = {}
    for trial in reporting:
        for step, value in trial.reported.items():
            if _finite(value):
                by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    low, median, high = (
        [float(np.percentile(by_step[s], q)) for s in steps] for q in (10, 50, 90)
    )  # fmt: skip
    counts = [len(by_step[s]) for s in steps]
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
            x=[step for step, _ in points],
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


def _parallel(report: _Report, completed: Sequence[TrialRecord]) -> go.Figure:
    """Each completed trial's parameters and metric: Optuna's parallel coordinates (one line a trial) up to
    :data:`LINES_UP_TO` trials, one plotly ``Parcoords`` trace (drawn by WebGL, for thousands) beyond."""
    if len(completed) <= LINES_UP_TO:
        from optuna.visualization import plot_parallel_coordinate

        return plot_parallel_coordinate(report.study, target_name=report.record.metric)
    return _parallel_dense(report.record, completed)


def _parallel_dense(record: StudyRecord, completed: Sequence[TrialRecord]) -> go.Figure:
    import math

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
                "ticktext": ["none" if v is None else _fmt(v) for v in choices],
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


def _importances(
    study: optuna.Study, metric: str, completed: Sequence[TrialRecord], notes: dict[str, str]
) -> go.Figure | None:
    """How much each parameter explains of the metric: fANOVA (seeded) up to :data:`FANOVA_UP_TO` completed
    trials, PED-ANOVA (what sets the best 10 % apart) beyond; or a note when there is too little to rank."""
    import plotly.graph_objects as go
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

    if len(completed) < 2:
        notes[IMPORTANCES] = (
            f"need at least 2 completed trials with differing parameters (this study has {len(completed)} completed)"
        )
        return None
    names = set().union(*(t.params for t in completed))
    varying = [n for n in names if len({repr(t.params.get(n)) for t in completed}) > 1]
    if not varying:
        notes[IMPORTANCES] = "the completed trials all have the same parameters: nothing to rank"
        return None
    if len({t.value for t in completed}) < 2:
        notes[IMPORTANCES] = f"every completed trial has the same {metric}: no parameter explains any difference"
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


def _label(row: Mapping[str, Any]) -> str:
    state = str(row["state"]).lower()
    return f"trial {row['trial']}" + ("" if state == "complete" else f" ({state})")


def _objective_figure(report: _Report) -> go.Figure | None:
    """The objective's own figure, over the best :data:`BARS` trials that have a metric (best first)."""
    scored, record = report.scored_rows(), report.record
    if not scored:
        return None
    rows = scored[:BARS]
    objective = record.objective
    if objective == "pyannote_segmentation":
        figure = _der_components(rows, record)
    elif objective == "wavlm_sv":
        figure = _eer_and_det(report, rows)
    elif objective == "sepformer_separation":
        figure = _before_after(rows, record)
    else:
        figure = _metric_bars(rows, record)
    if len(rows) < len(scored):
        axis = figure.layout.xaxis
        axis.title.text = f"{axis.title.text or 'trial'}: the best {len(rows)} of {len(scored)} trials"
    return figure


def _der_components(rows: Sequence[Mapping[str, Any]], record: StudyRecord) -> go.Figure:
    """Confusion, FalseAlarm and Miss stacked per trial at its best epoch (the baseline model first)."""
    import plotly.graph_objects as go

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
        text=[_fmt(values.get(metric)) for _, values in bars],
        textposition="top center",
    )
    figure.update_layout(
        barmode="stack", xaxis_title="trial (best first), at its best epoch", yaxis_title=f"{metric} and its components"
    )
    return figure


def _probit_axis(percentages: Sequence[float]) -> dict[str, Any]:
    normal = NormalDist()
    return {"tickvals": [normal.inv_cdf(p / 100) for p in percentages], "ticktext": [f"{p:g}" for p in percentages]}


def _eer_and_det(report: _Report, rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """EER per trial at its best epoch (the baseline model's as a line) and the best trial's DET curve
    (miss rate against false-alarm rate on probit axes, from ``details/best``)."""
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
        text=[_fmt(r[metric]) for r in rows],
        textposition="auto",
        row=1,
        col=1,
    )
    baseline = record.baseline.get(metric)
    if _finite(baseline):
        figure.add_hline(
            y=baseline,
            line_dash="dash",
            line_color="gray",
            row=1,
            col=1,
            annotation_text=f"{record.baseline_label} {_fmt(baseline)}",
            annotation_position="top left",
        )
    figure.update_xaxes(title_text="trial (best first)", row=1, col=1)
    figure.update_yaxes(title_text=f"{metric} (%)", row=1, col=1)
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
            name=f"trial {det_trial.number}" + (f", epoch {epoch}" if epoch is not None else ""),
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
        if eer_row is not None and _finite(eer_row.get(metric)):
            point = probit([eer_row[metric] / 100])[0]
            figure.add_scatter(
                name=f"{metric} {_fmt(eer_row[metric])}%",
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


def _before_after(rows: Sequence[Mapping[str, Any]], record: StudyRecord) -> go.Figure:
    """The metric of the model before fine-tuning (the study's baseline) beside each trial's best."""
    import plotly.graph_objects as go

    metric = record.metric
    labels = [_label(r) for r in rows]
    baseline = record.baseline.get(metric)
    figure = go.Figure()
    if _finite(baseline):
        figure.add_bar(
            name=f"before: {record.baseline_label}",
            x=labels,
            y=[baseline] * len(rows),
            marker_color="lightgray",
            text=[_fmt(baseline)] * len(rows),
            textposition="auto",
        )
    figure.add_bar(
        name="after: best epoch",
        x=labels,
        y=[r[metric] for r in rows],
        text=[_fmt(r[metric]) for r in rows],
        textposition="auto",
    )
    figure.update_layout(barmode="group", xaxis_title="trial (best first)", yaxis_title=f"{metric} (dB)")
    return figure


def _metric_bars(rows: Sequence[Mapping[str, Any]], record: StudyRecord) -> go.Figure:
    import plotly.graph_objects as go

    metric = record.metric
    figure = go.Figure()
    figure.add_bar(name=metric, x=[_label(r) for r in rows], y=[r[metric] for r in rows])
    baseline = record.baseline.get(metric)
    if _finite(baseline):
        figure.add_hline(y=baseline, line_dash="dash", annotation_text=f"{record.baseline_label} {_fmt(baseline)}")
    figure.update_layout(xaxis_title="trial (best first)", yaxis_title=metric)
    return figure


# -------------------------------------------------------------------------------------------- html

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; \
max-width: 1400px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
ul.header { list-style: none; padding-left: 0; } ul.header li { margin: .15em 0; }
ul.header b { display: inline-block; min-width: 13em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0 1em; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; }
p.note { color: #555; font-style: italic; }
details { margin: .4em 0; } summary { cursor: pointer; font-weight: 600; }
"""


def report_html(
    study: optuna.Study, url: str = "", command: str = "", sections: Mapping[str, Any] | None = None
) -> str:
    """One self-contained HTML page: header, figures (plotly.js inline, once), trial table, epoch tables.

    ``sections`` (title -> figure or note) defaults to the figures of :func:`study_figures` with a note
    in place of each figure that cannot be drawn yet."""
    return _html(_Report.of(study), url, command, sections)


def _html(report: _Report, url: str, command: str, sections: Mapping[str, Any] | None = None) -> str:
    import plotly.io as pio

    if sections is None:
        sections = _figure_sections(report)
    metric = report.record.metric
    name = html.escape(report.study.study_name)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>tuner report: {name}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Study report: {name}</h1>",
        '<ul class="header">',
    ]
    for label, text in _header_lines(report, url, command):
        parts.append(f"<li><b>{html.escape(label)}</b> {html.escape(text.replace('`', ''))}</li>")
    parts.append("</ul>")

    parts.append("<h2>Figures</h2>")
    first = True
    for title, item in sections.items():
        if isinstance(item, str):
            parts.append(f'<p class="note"><b>{html.escape(title)}:</b> {html.escape(item)}</p>')
            continue
        div_id = "figure-" + (re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower() or "plot")
        figure_html = pio.to_html(
            item, include_plotlyjs=first, full_html=False, div_id=div_id, config={"displaylogo": False}
        )
        parts.append(f'<div class="figure">{figure_html}</div>')
        first = False

    rows = report.table_rows()
    if report.large:
        parts.append("<h2>Summary</h2><ul>")
        parts += [f"<li>{html.escape(line)}</li>" for line in report.summary()]
        parts.append("</ul>")
    extent = f"; the best {len(rows)} of {len(report.rows)}" if len(rows) < len(report.rows) else ""
    parts.append(f"<h2>Trials by {html.escape(metric)} (best first; {report.at_best}{extent})</h2>")
    if rows:
        columns = trial_columns(report.record)
        parts.append(_html_table(columns, ([r.get(c) for c in columns] for r in rows), css="trials"))
        detailed = report.detailed()
        extent = f" (the best {len(detailed)})" if len(detailed) < len(report.rows) else ""
        parts.append(f"<h2>{'Epochs' if report.trains else 'Evaluated items'} per trial{extent}</h2>")
        for trial in detailed:
            parts.append(f"<details><summary>{html.escape(_trial_heading(trial))}</summary>")
            parts.append(f"<p>{html.escape(_trial_summary(trial, metric))}</p>")
            columns, detail = report.detail(trial)
            if detail:
                parts.append(_html_table(columns, detail, css="epochs"))
            parts.append("</details>")
    else:
        parts.append('<p class="note">This study has no trials yet.</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------ writing


def write_report(
    study_name: str, storage: str | None = None, out_dir: str | Path = DEFAULT_REPORT_DIR, command: str | None = None
) -> dict[str, Path]:
    """Write ``out_dir/STUDY.md``, ``.csv``, ``.epochs.csv`` and ``.html`` from the store; returns ``{"md",
    "csv", "epochs", "html"}`` -> path. ``command`` is the line recorded as having generated the report
    (default: the equivalent ``tuner report`` command)."""
    url = resolve_storage_url(storage)
    study = load_existing_study(study_name, url)
    out_dir = Path(out_dir)
    command = command or _command([study_name], url, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _safe_stem(study_name)
    paths = {
        "md": out_dir / f"{stem}.md",
        "csv": out_dir / f"{stem}.csv",
        "epochs": out_dir / f"{stem}.epochs.csv",
        "html": out_dir / f"{stem}.html",
    }
    report = _Report.of(study)
    paths["md"].write_text(_markdown(report, url, command), encoding="utf-8")
    paths["csv"].write_text(_csv(report), encoding="utf-8", newline="")
    paths["epochs"].write_text(_epochs_csv(report), encoding="utf-8", newline="")
    paths["html"].write_text(_html(report, url, command), encoding="utf-8")
    return paths


def _safe_stem(name: str) -> str:
    """A file name for a study name (study names are free text in Optuna)."""
    stem = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name).strip("._")
    return stem or "study"


# ---------------------------------------------------------------------------------------- comparing

#: columns of the comparison table
COMPARE_COLUMNS = (
    "study",
    "objective",
    "metric",
    "direction",
    "trials",
    "complete",
    "pruned",
    "failed",
    "running",
    "best",
    "best_trial",
    "best_epoch",
    "baseline",
    "params",
)


def compare_rows(study_names: Sequence[str], storage: str | None = None) -> list[dict[str, Any]]:
    """One row per study (in the order given): objective, metric, trials by state, best value, trial and
    epoch, baseline, and the best trial's parameters (a dict). The studies must share a metric (and its
    direction), else :class:`~tuner.errors.ConfigError`."""
    url = resolve_storage_url(storage)
    names = list(dict.fromkeys(study_names))
    if not names:
        raise ConfigError("name at least one study to compare: tuner report --compare STUDY_A STUDY_B")
    reports = [_Report.of(load_existing_study(name, url)) for name in names]
    metrics = {(r.record.metric, r.record.direction) for r in reports}
    if len(metrics) > 1:
        listing = ", ".join(f"{r.record.name} ({r.record.metric}, {r.record.direction})" for r in reports)
        raise ConfigError(
            f"studies with different metrics cannot be compared: {listing}. Compare studies of one metric."
        )
    rows = []
    for report in reports:
        record = report.record
        counts = report.state_counts()
        best = report.best()
        rows.append(
            {
                "study": record.name,
                "objective": record.objective,
                "metric": record.metric,
                "direction": record.direction,
                "trials": sum(counts.values()),
                "complete": counts["COMPLETE"],
                "pruned": counts["PRUNED"],
                "failed": counts["FAIL"],
                "running": counts["RUNNING"],
                "best": best.value if best is not None else None,
                "best_trial": best.number if best is not None else None,
                "best_epoch": best.best_epoch if best is not None else None,
                "baseline": record.baseline.get(record.metric),
                "params": dict(best.params) if best is not None else {},
            }
        )
    return rows


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()) or "-"


def write_comparison(
    study_names: Sequence[str],
    storage: str | None = None,
    out_dir: str | Path = DEFAULT_REPORT_DIR,
    command: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Compare ``study_names`` (one metric) in ``out_dir/compare.md`` and ``compare.csv``; returns the rows
    and ``{"md", "csv"}`` -> path."""
    url = resolve_storage_url(storage)
    rows = compare_rows(study_names, url)
    out_dir = Path(out_dir)
    command = command or _command(list(study_names), url, out_dir, compare=True)
    metric, direction = rows[0]["metric"], rows[0]["direction"]
    scored = [r for r in rows if _finite(r["best"])]
    lines = [f"# Comparison of {len(rows)} studies on {metric} ({direction})", ""]
    if scored:
        top = (max if direction == "maximize" else min)(scored, key=lambda r: r["best"])
        lines.append(f"- best: study {top['study']}, trial {top['best_trial']}, {metric} = {_fmt(top['best'])}")
    lines += [f"- store: {mask_url(url)}", f"- generated by: `{command}` at {_now()}", ""]
    lines += _md_table(
        COMPARE_COLUMNS, ([_params_text(r[c]) if c == "params" else r[c] for c in COMPARE_COLUMNS] for r in rows)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "compare.md", "csv": out_dir / "compare.csv"}
    paths["md"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COMPARE_COLUMNS)
    for row in rows:
        writer.writerow([_csv_value(row[c]) for c in COMPARE_COLUMNS])
    paths["csv"].write_text(buffer.getvalue(), encoding="utf-8", newline="")
    return rows, paths


def compare_table_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the parameters as text (for printing with :func:`tuner.tables.rich_table`)."""
    return [{c: (_params_text(r[c]) if c == "params" else r[c]) for c in COMPARE_COLUMNS} for r in rows]
