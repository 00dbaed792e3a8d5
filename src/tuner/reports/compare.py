"""Comparing studies of one metric: ``tuner report --compare A B`` (``DIR/compare.md``, ``DIR/compare.csv``).

:func:`compare_rows` reads each study once (objective, trials by state, best trial, baseline, the best trial's
parameters, and where the study has a confirmation (:mod:`tuner.confirm`) its configuration of best confirmed
mean with its 95 % interval and runs) and refuses studies of different metrics; :func:`write_comparison` writes
them as one table, then which studies' figures are from single runs and, between confirmed studies,
:func:`confirmed_pairs`: Welch's test on the runs of their best configurations, Holm-corrected over the pairs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.direction import is_better, rank_key
from tuner.errors import ConfigError
from tuner.reports.markdown import csv_text, csv_value, md_table
from tuner.reports.summary import DEFAULT_REPORT_DIR, StudyReport, finite, now, report_command
from tuner.store.connect import load_existing_study, mask_url, resolve_storage_url
from tuner.text import epoch_number, format_number

__all__ = [
    "COMPARE_COLUMNS",
    "compare_rows",
    "write_comparison",
    "compare_table_rows",
    "comparison_notes",
    "confirmed_pairs",
    "ALPHA",
]

#: the level of the Welch tests between confirmed studies (on Holm-adjusted p-values)
ALPHA = 0.05

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
    "confirmed_config",  # the configuration of best confirmed mean ("-" without a confirmation)
    "confirmed_mean",
    "confirmed_95ci",  # [low, high] of the mean (None with fewer than 2 runs)
    "confirmed_runs",
    "confirmed_vs_reference",
    "params",
)


def compare_rows(study_names: Sequence[str], storage: str | None = None) -> list[dict[str, Any]]:
    """One row per study (in the order given): objective, metric, trials by state, best value (the best single
    run), trial and epoch, baseline, the best trial's parameters (a dict), and from the study's confirmation the
    configuration of best confirmed mean: its label, mean, 95 % interval ``[low, high]``, number of runs and
    verdict against the reference (None without a confirmation). Two keys outside :data:`COMPARE_COLUMNS`:
    ``trains`` (whether its trials train, so that runs vary with the seed) and ``confirmed`` (that configuration's
    :class:`~tuner.confirm.RankedRow`, or None). The studies must share a metric (and its direction), else
    :class:`~tuner.errors.ConfigError`."""
    url = resolve_storage_url(storage)
    names = list(dict.fromkeys(study_names))
    if not names:
        raise ConfigError("name at least one study to compare: tuner report --compare STUDY_A STUDY_B")
    reports = [StudyReport.of(load_existing_study(name, url)) for name in names]
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
        top = report.confirmation.rows[0] if report.confirmation is not None else None  # best confirmed mean
        summary = top.summary if top is not None else None
        spread = summary is not None and summary.n > 1
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
                "best_epoch": epoch_number(best.best_epoch) if best is not None else None,
                "baseline": record.baseline.get(record.metric),
                "confirmed_config": top.label if top is not None else None,
                "confirmed_mean": summary.mean if summary is not None else None,
                "confirmed_95ci": [summary.low, summary.high] if summary is not None and spread else None,
                "confirmed_runs": summary.n if summary is not None else None,
                "confirmed_vs_reference": top.versus_reference if top is not None else None,
                "params": dict(best.params) if best is not None else {},
                "trains": report.trains,
                "confirmed": top if summary is not None else None,
            }
        )
    return rows


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={format_number(v, significant=6)}" for k, v in params.items()) or "-"


def _interval_text(interval: Sequence[float] | None) -> str | None:
    return None if interval is None else "[" + ", ".join(format_number(v, significant=6) for v in interval) + "]"


def comparison_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the table of ``rows`` (of :func:`compare_rows`) rests on, as the lines under it: which studies' figures
    are from single runs, then :func:`confirmed_pairs` (each paragraph after an empty line)."""
    lines: list[str] = []
    single = [r["study"] for r in rows if r["trains"] and r["confirmed"] is None]
    if single:
        lines += [
            "",
            f"Figures of {', '.join(single)} are from single runs (one training run per configuration): "
            "`tuner confirm STUDY` repeats the best configurations with new seeds.",
        ]
    pairs = confirmed_pairs(rows, rows[0]["direction"]) if rows else []
    if pairs:
        lines += [
            "",
            "Best confirmed configurations compared (Welch's t-test on their runs, Holm-corrected over the "
            f"{len(pairs)} pair{'' if len(pairs) == 1 else 's'}, p < {ALPHA:g}):",
            "",
            *pairs,
        ]
    return lines


def confirmed_pairs(rows: Sequence[Mapping[str, Any]], direction: str, alpha: float = ALPHA) -> list[str]:
    """One sentence per pair of confirmed studies in ``rows`` (of :func:`compare_rows`): whether the best confirmed
    configuration of one is better than the other's, by Welch's t-test on their runs with the p-values
    Holm-adjusted over the pairs; [] with fewer than two confirmed studies."""
    from tuner.statistics import holm, welch_test

    confirmed = [r for r in rows if r.get("confirmed") is not None]
    pairs = list(itertools.combinations(confirmed, 2))
    adjusted = holm([welch_test(a["confirmed"].runs, b["confirmed"].runs) for a, b in pairs])

    def mean(row: Mapping[str, Any]) -> float:
        return float(row["confirmed"].summary.mean)

    lines = []
    for (a, b), p in zip(pairs, adjusted):
        if p < alpha and is_better(mean(b), mean(a), direction):  # (False for NaN)
            a, b = b, a  # the better one first
        means = f"mean {format_number(mean(a), significant=6)} vs {format_number(mean(b), significant=6)}"
        if math.isnan(p):  # fewer than 2 runs on a side
            lines.append(f"- {a['study']} and {b['study']}: too few runs to compare ({means})")
        elif p < alpha:
            lines.append(f"- {a['study']} better than {b['study']} ({means}, adjusted p = {format_number(p)})")
        else:
            lines.append(
                f"- {a['study']} and {b['study']}: indistinguishable ({means}, adjusted p = {format_number(p)})"
            )
    return lines


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
    command = command or report_command(list(study_names), url, out_dir, compare=True)
    metric, direction = rows[0]["metric"], rows[0]["direction"]
    scored = [r for r in rows if finite(r["best"])]
    lines = [f"# Comparison of {len(rows)} studies on {metric} ({direction})", ""]
    if scored:
        rank = rank_key(direction)
        top = min(scored, key=lambda r: rank(r["best"]))
        best = format_number(top["best"], significant=6)
        lines.append(f"- best: study {top['study']}, trial {top['best_trial']}, {metric} = {best}")
    lines += [f"- store: {mask_url(url)}", f"- generated by: `{command}` at {now()}", ""]
    lines += md_table(COMPARE_COLUMNS, (list(r.values()) for r in compare_table_rows(rows)))
    lines += comparison_notes(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "compare.md", "csv": out_dir / "compare.csv"}
    paths["md"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = csv_text(COMPARE_COLUMNS, ([csv_value(row[c]) for c in COMPARE_COLUMNS] for row in rows))
    paths["csv"].write_text(table, encoding="utf-8", newline="")
    return rows, paths


def compare_table_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the parameters and the interval as text (for printing with
    :func:`tuner.reports.tables.rich_table`)."""
    text: dict[str, Callable[[Any], Any]] = {"params": _params_text, "confirmed_95ci": _interval_text}
    return [{c: (text[c](r[c]) if c in text else r[c]) for c in COMPARE_COLUMNS} for r in rows]
