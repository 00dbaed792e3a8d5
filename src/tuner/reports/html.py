"""The HTML page of a study's report, and :func:`write_report`, which writes every file of it.

:func:`report_html` is one self-contained page: the header, the figures of
:func:`tuner.reports.figures.study_figures` with plotly.js embedded once, inline (the page opens offline), the
trial table and each trial's epochs. :func:`write_report` writes ``DIR/STUDY.md``, ``DIR/STUDY.csv``,
``DIR/STUDY.epochs.csv`` (:mod:`tuner.reports.markdown`) and ``DIR/STUDY.html`` from the store alone, reading
the study once.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.reports.figures import figure_sections
from tuner.reports.markdown import epochs_csv, markdown_page, trials_csv
from tuner.reports.summary import (
    DEFAULT_REPORT_DIR,
    StudyReport,
    header_lines,
    report_command,
    safe_stem,
    trial_heading,
    trial_summary,
)
from tuner.reports.tables import trial_columns
from tuner.store.connect import load_existing_study, resolve_storage_url
from tuner.text import format_number

if TYPE_CHECKING:
    import optuna

__all__ = ["report_html", "html_page", "write_report"]

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
div.scroll { overflow-x: auto; max-width: 100%; }
"""


def html_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], css: str = "") -> str:
    """An HTML table of ``rows`` under ``columns`` (cells as the markdown shows them: 6 significant digits)."""

    def cells(row: Sequence[Any]) -> str:
        return "".join(f"<td>{html.escape(format_number(v, significant=6))}</td>" for v in row)

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(f"<tr>{cells(row)}</tr>" for row in rows)
    # a wide table scrolls within its own box: the page keeps its width
    return f'<div class="scroll"><table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def report_html(
    study: optuna.Study, url: str = "", command: str = "", sections: Mapping[str, Any] | None = None
) -> str:
    """One self-contained HTML page: header, figures (plotly.js inline, once), trial table, epoch tables.

    ``sections`` (title -> figure or note) defaults to the figures of
    :func:`tuner.reports.figures.study_figures` with a note in place of each figure that cannot be drawn yet."""
    return html_page(StudyReport.of(study), url, command, sections)


def html_page(report: StudyReport, url: str, command: str, sections: Mapping[str, Any] | None = None) -> str:
    """:func:`report_html` of a study already read."""
    import plotly.io as pio

    if sections is None:
        sections = figure_sections(report)
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
    for label, text in header_lines(report, url, command):
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

    if report.confirmation is not None:
        from tuner.reports.confirmation import RANKING
        from tuner.reports.tables import ranking_rows

        confirmed = ranking_rows(report.confirmation)
        columns = list(confirmed[0])
        parts.append(f"<h2>{RANKING} by {html.escape(metric)}</h2>")
        parts.append(html_table(columns, ([row[c] for c in columns] for row in confirmed), css="trials"))
        parts += [f'<p class="note">{html.escape(line)}</p>' for line in report.confirmation.summary_lines()]
    rows = report.table_rows()
    if report.large:
        parts.append("<h2>Summary</h2><ul>")
        parts += [f"<li>{html.escape(line)}</li>" for line in report.summary()]
        parts.append("</ul>")
    extent = f"; the best {len(rows)} of {len(report.rows)}" if len(rows) < len(report.rows) else ""
    parts.append(f"<h2>Trials by {html.escape(metric)} (best first; {report.at_best}{extent})</h2>")
    if rows:
        columns = trial_columns(report.record)
        parts.append(html_table(columns, ([r.get(c) for c in columns] for r in rows), css="trials"))
        detailed = report.detailed()
        extent = f" (the best {len(detailed)})" if len(detailed) < len(report.rows) else ""
        parts.append(f"<h2>{'Epochs' if report.trains else 'Evaluated items'} per trial{extent}</h2>")
        for trial in detailed:
            parts.append(f"<details><summary>{html.escape(trial_heading(trial))}</summary>")
            parts.append(f"<p>{html.escape(trial_summary(trial, metric))}</p>")
            columns, detail = report.detail(trial)
            if detail:
                parts.append(html_table(columns, detail, css="epochs"))
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
    command = command or report_command([study_name], url, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = safe_stem(study_name)
    paths = {
        "md": out_dir / f"{stem}.md",
        "csv": out_dir / f"{stem}.csv",
        "epochs": out_dir / f"{stem}.epochs.csv",
        "html": out_dir / f"{stem}.html",
    }
    report = StudyReport.of(study)
    paths["md"].write_text(markdown_page(report, url, command), encoding="utf-8")
    paths["csv"].write_text(trials_csv(report), encoding="utf-8", newline="")
    paths["epochs"].write_text(epochs_csv(report), encoding="utf-8", newline="")
    paths["html"].write_text(html_page(report, url, command), encoding="utf-8")
    return paths
