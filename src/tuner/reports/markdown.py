"""The markdown report and the CSV files of a study, and the small markdown and CSV helpers the other pages use.

- :func:`report_markdown`: header, trial table (best first), then one per-epoch table per trial (``STUDY.md``);
- :func:`report_csv`: the trial table, every trial, floats in full precision (``STUDY.csv``);
- :func:`report_epochs_csv`: every epoch of every trial (``STUDY.epochs.csv``).

Cells are numbers as :func:`tuner.text.format_number` writes them (6 significant digits in the reports), with
``|`` escaped (:func:`md_cell`); CSV cells keep full precision (:func:`csv_value`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from tuner.reports.summary import StudyReport, epoch_columns, header_lines, trial_heading, trial_summary
from tuner.reports.tables import trial_columns
from tuner.text import epoch_number, format_number

if TYPE_CHECKING:
    import optuna

    from tuner.confirm import ConfirmedRanking

__all__ = [
    "report_markdown",
    "report_csv",
    "report_epochs_csv",
    "markdown_page",
    "trials_csv",
    "epochs_csv",
    "md_cell",
    "md_table",
    "csv_value",
    "csv_text",
]


# ------------------------------------------------------------------------------------------ helpers


def md_cell(value: Any, significant: int | None = 6) -> str:
    """``value`` as a markdown table cell: :func:`tuner.text.format_number` (``significant`` digits; None: its
    4 decimals), ``|`` escaped and on one line."""
    return format_number(value, significant=significant).replace("|", "\\|").replace("\n", " ")


def md_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The lines of a markdown table."""
    lines = ["| " + " | ".join(md_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(md_cell(v) for v in row) + " |" for row in rows]
    return lines


def csv_value(value: Any) -> Any:
    """``value`` as a CSV cell: empty for missing, floats in full precision, dicts and lists as JSON."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision: float(text) == value
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def csv_text(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A CSV file: ``header``, then ``rows`` (cells as they are: pass them through :func:`csv_value`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------- markdown


def report_markdown(study: optuna.Study, url: str = "", command: str = "") -> str:
    """The markdown report: header, trial table (best first), then one per-epoch table per trial."""
    return markdown_page(StudyReport.of(study), url, command)


def markdown_page(report: StudyReport, url: str, command: str) -> str:
    """:func:`report_markdown` of a study already read."""
    record = report.record
    metric = record.metric
    lines = [f"# Study report: {report.study.study_name}", ""]
    lines += [f"- {label}: {text}" for label, text in header_lines(report, url, command)]
    lines.append("")
    if not report.rows:
        lines += ["**This study has no trials yet.** Run `tuner run STUDY_FILE` to add some.", ""]
        return "\n".join(lines)
    if report.large:
        lines += ["## Summary", ""]
        lines += [f"- {line}" for line in report.summary()]
        lines.append("")
    if report.confirmation is not None:
        lines += ranking_markdown(report.confirmation)
    shown = report.table_rows()
    extent = f"; the best {len(shown)} of {len(report.rows)}" if len(shown) < len(report.rows) else ""
    lines += [f"## Trials by {metric} (best first; metric and components {report.at_best}{extent})", ""]
    columns = trial_columns(record)
    lines += md_table(columns, ([row.get(c) for c in columns] for row in shown))
    lines.append("")
    for trial in report.detailed():
        lines += [f"## {trial_heading(trial)}", "", trial_summary(trial, metric), ""]
        columns, detail = report.detail(trial)
        if not detail:
            lines += ["_No epoch finished._" if report.trains else "_No item evaluated._", ""]
            continue
        lines += md_table(columns, detail)
        lines.append("")
    return "\n".join(lines)


def ranking_markdown(ranking: ConfirmedRanking) -> list[str]:
    """The confirmed ranking as a markdown section (heading, table, what it rests on)."""
    from tuner.reports.confirmation import RANKING
    from tuner.reports.tables import ranking_rows

    rows = ranking_rows(ranking)
    columns = list(rows[0])
    lines = [f"## {RANKING} by {ranking.metric}", ""]
    lines += md_table(columns, ([row[c] for c in columns] for row in rows))
    lines += ["", *ranking.summary_lines(), ""]
    return lines


# ---------------------------------------------------------------------------------------------- csv


def report_csv(study: optuna.Study) -> str:
    """The trial table as CSV (one header row; floats in full precision, empty cells for missing)."""
    return trials_csv(StudyReport.of(study))


def trials_csv(report: StudyReport) -> str:
    """:func:`report_csv` of a study already read."""
    columns = trial_columns(report.record)
    return csv_text(columns, ([csv_value(row.get(c)) for c in columns] for row in report.rows))


def report_epochs_csv(study: optuna.Study) -> str:
    """Every epoch of every trial as CSV: trial, state, epoch, best (1 for the trial's best epoch), then the
    epoch's values in the per-epoch tables' order; trials in the trial table's order (best first)."""
    return epochs_csv(StudyReport.of(study))


def epochs_csv(report: StudyReport) -> str:
    """:func:`report_epochs_csv` of a study already read."""
    record = report.record
    trials = [report.trials[r["trial"]] for r in report.rows]
    every = [epoch for trial in trials for epoch in trial.epochs]
    values = [c for c in epoch_columns(every, record.metric, record.components) if c != "epoch"]
    rows = (
        [
            trial.number,
            trial.state,
            epoch_number(epoch["epoch"]),  # counted from 1, as everywhere a person reads
            1 if epoch["epoch"] == trial.best_epoch else 0,
            *(csv_value(epoch.get(c)) for c in values),
        ]
        for trial in trials
        for epoch in trial.epochs
    )
    return csv_text(["trial", "state", "epoch", "best", *values], rows)
