"""Reports of a study, rebuilt from the store alone, and what optuna-dashboard shows of it.

One module a job:

- :mod:`~tuner.reports.summary`: the report model (:class:`~tuner.reports.summary.StudyReport`), header, counts;
- :mod:`~tuner.reports.tables`: trial rows, study rows (``tuner studies``), rich tables;
- :mod:`~tuner.reports.markdown`: the markdown report and the CSV files;
- :mod:`~tuner.reports.figures` and :mod:`~tuner.reports.objective_figures`: the plotly figures;
- :mod:`~tuner.reports.html`: the HTML page, and :func:`write_report`, which writes every file of a report;
- :mod:`~tuner.reports.compare`: ``tuner report --compare``;
- :mod:`~tuner.reports.notes`: optuna-dashboard notes and figures; :mod:`~tuner.reports.publish`: the callback
  that writes them as a study runs; :mod:`~tuner.reports.serving`: ``tuner dashboard``;
- :mod:`~tuner.reports.dashboard_internals`: every use of optuna-dashboard's private API.

The entry points below are imported from their module on first use, so that importing this package costs
nothing (``tuner --help`` loads neither optuna nor plotly).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuner.reports.compare import COMPARE_COLUMNS, compare_rows, compare_table_rows, write_comparison
    from tuner.reports.figures import study_figures
    from tuner.reports.html import report_html, write_report
    from tuner.reports.markdown import report_csv, report_epochs_csv, report_markdown
    from tuner.reports.notes import (
        attach_figures,
        note_wanted,
        publish_study,
        publish_trial_note,
        save_study_note,
        save_trial_note,
        study_note,
        trial_note,
    )
    from tuner.reports.serving import dashboard_url, serve
    from tuner.reports.summary import DEFAULT_REPORT_DIR, StudyReport
    from tuner.reports.tables import rich_table, store_study_rows, study_rows, trial_columns, trial_row, trial_rows

#: each name of :data:`__all__` -> the module of this package that defines it
_WHERE = {
    "DEFAULT_REPORT_DIR": "summary",
    "StudyReport": "summary",
    "trial_rows": "tables",
    "trial_row": "tables",
    "trial_columns": "tables",
    "study_rows": "tables",
    "store_study_rows": "tables",
    "rich_table": "tables",
    "report_markdown": "markdown",
    "report_csv": "markdown",
    "report_epochs_csv": "markdown",
    "study_figures": "figures",
    "report_html": "html",
    "write_report": "html",
    "COMPARE_COLUMNS": "compare",
    "compare_rows": "compare",
    "compare_table_rows": "compare",
    "write_comparison": "compare",
    "trial_note": "notes",
    "study_note": "notes",
    "save_trial_note": "notes",
    "save_study_note": "notes",
    "note_wanted": "notes",
    "attach_figures": "notes",
    "publish_trial_note": "notes",
    "publish_study": "notes",
    "serve": "serving",
    "dashboard_url": "serving",
}

__all__ = [
    "DEFAULT_REPORT_DIR",
    "StudyReport",
    "trial_rows",
    "trial_row",
    "trial_columns",
    "study_rows",
    "store_study_rows",
    "rich_table",
    "report_markdown",
    "report_csv",
    "report_epochs_csv",
    "study_figures",
    "report_html",
    "write_report",
    "COMPARE_COLUMNS",
    "compare_rows",
    "compare_table_rows",
    "write_comparison",
    "trial_note",
    "study_note",
    "save_trial_note",
    "save_study_note",
    "note_wanted",
    "attach_figures",
    "publish_trial_note",
    "publish_study",
    "serve",
    "dashboard_url",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
