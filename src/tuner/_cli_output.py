"""What ``tuner`` prints after a command's work: the outcome of a run, a confirmed ranking, the command that
continues an interrupted run."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

__all__ = ["print_outcome", "print_ranking", "resume_command"]


def print_ranking(console: Any, ranking: Any) -> None:
    """The confirmed ranking's table and what it rests on."""
    from tuner.reports.tables import ranking_rows, rich_table

    title = f"study {ranking.study}: confirmed ranking by {ranking.metric}"
    keep = ("rank", "configuration", "runs", "mean", "95% interval", "vs best")
    console.print(rich_table(ranking_rows(ranking), title=title, width=console.width, keep=keep))
    for line in ranking.summary_lines():
        console.print(line)


def print_outcome(console: Any, study: Any) -> None:
    from tuner.store.records import StudyRecord

    record = StudyRecord.of(study)
    try:
        best = study.best_trial
    except ValueError:
        console.print("no completed trial yet")
        return
    from tuner.reports.summary import reference_text

    line = f"best: trial {best.number}, {record.metric} = {best.value:.4f}"
    if record.baseline_value is not None:
        line += f" ({record.baseline_label}: {record.baseline_value:.4f})"
    console.print(line)
    reference = reference_text(record, best.value)
    if reference is not None:
        console.print(f"{reference[0]}: {reference[1]}")


def resume_command(argv: Sequence[str]) -> str | None:
    """The command that continues an interrupted ``tuner run``: the same one without ``--n-trials`` (which
    would add its trials to the budget once more); None for other commands."""
    args = list(argv)
    verb = next((i for i, arg in enumerate(args) if not arg.startswith("-")), None)
    if verb is None or args[verb] != "run":
        return None
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--n-trials":
            skip = True
        elif not arg.startswith("--n-trials="):
            kept.append(arg)
    return shlex.join(["tuner", *kept])
