"""The report model: a study read once from the store (:class:`StudyReport`), and the lines every page of it shares.

:class:`StudyReport` holds the study's record, its trials' records and the trial table (best first), and decides
what the pages show of a large study (the best :data:`TABLE_ROWS` trials, the epochs of the best
:data:`DETAILED_TRIALS`) and the summary that stands in for the rest. :func:`header_lines` is the header of the
markdown and HTML pages, :func:`trial_heading` and :func:`trial_summary` the two lines above each trial's own
table, :func:`report_command` the ``tuner report`` line a page records as having generated it.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.direction import is_better, rank_key
from tuner.reports.tables import rows_of, sort_rows, trains
from tuner.store.connect import mask_url
from tuner.store.records import StudyRecord, TrialRecord, study_trials
from tuner.text import epoch_number, format_number

if TYPE_CHECKING:
    import optuna

    from tuner.confirm import ConfirmedRanking

__all__ = [
    "DEFAULT_REPORT_DIR",
    "TABLE_ROWS",
    "DETAIL_ALL_UP_TO",
    "DETAILED_TRIALS",
    "StudyReport",
    "finite",
    "epoch_columns",
    "trial_heading",
    "trial_summary",
    "header_lines",
    "report_command",
    "now",
    "safe_stem",
]

#: where `tuner report` writes (relative to the working directory)
DEFAULT_REPORT_DIR = Path("storage/reports")

#: states in the order they are counted in headers and tables
_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")

#: rows of the trial table in the markdown and html (best first; the CSV has every trial)
TABLE_ROWS = 200
#: a study of up to this many trials shows every trial's epochs; a larger one those of the best
#: :data:`DETAILED_TRIALS` (``STUDY.epochs.csv`` has every epoch of every trial)
DETAIL_ALL_UP_TO = 50
DETAILED_TRIALS = 20


@dataclass
class StudyReport:
    """A study read once for a report: its record, its trials' records and the trial table (best first)."""

    study: optuna.Study
    record: StudyRecord
    trials: dict[int, TrialRecord]
    rows: list[dict[str, Any]]
    #: the confirmed ranking from the study's confirmation (:mod:`tuner.confirm`), None without one
    confirmation: ConfirmedRanking | None = None

    @classmethod
    def of(cls, study: optuna.Study) -> StudyReport:
        from tuner.reports.confirmation import confirmation_of

        record, trials = study_trials(study)
        rows = sort_rows(rows_of(trials, record), record)
        confirmation = confirmation_of(study) if trains(record) and rows else None
        return cls(study, record, {t.number: t for t in trials}, rows, confirmation)

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
            columns = epoch_columns(trial.epochs, metric, components)
            marks = ("*" if e["epoch"] == trial.best_epoch else "" for e in trial.epochs)
            shown = ({**e, "epoch": epoch_number(e["epoch"])} for e in trial.epochs)  # counted from 1
            return [*columns, "best"], [[*(e.get(c) for c in columns), m] for e, m in zip(shown, marks)]
        steps = dict(trial.steps or {})
        columns = [metric, *(c for c in components if any(c in v for v in steps.values()))]
        return ["item", *columns], [[item, *(values.get(c) for c in columns)] for item, values in steps.items()]

    def scored_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if finite(r.get(self.record.metric))]

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
        scored = sorted((r[metric] for r in self.scored_rows()), key=rank_key(record.direction))
        unit = "epochs" if self.trains else "evaluated items"
        lines = [
            f"the trial table shows the best {min(TABLE_ROWS, len(self.rows))} of {len(self.rows)} trials and "
            f"the {unit} of the best {len(self.detailed())}; {safe_stem(name)}.csv has every trial"
            + (f" and {safe_stem(name)}.epochs.csv every epoch of every trial" if self.trains else "")
        ]
        if scored:
            quantiles = (("best", 0.0), ("10 %", 0.1), ("median", 0.5), ("90 %", 0.9), ("worst", 1.0))
            picked = ((label, scored[min(len(scored) - 1, int(q * (len(scored) - 1) + 0.5))]) for label, q in quantiles)
            marks = ", ".join(f"{label} {format_number(value, significant=6)}" for label, value in picked)
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


def finite(value: Any) -> bool:
    """Whether ``value`` is a finite number (not a bool, None, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------- per-trial parts


def epoch_columns(epochs: Sequence[Mapping[str, Any]], metric: str, components: Sequence[str]) -> list[str]:
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


def trial_heading(trial: TrialRecord) -> str:
    """``Trial 3 (COMPLETE): AdamW, cosine, batch 32, lr 0.0003``."""
    config = trial.config
    parts = []
    if config.get("optimizer") is not None:
        parts.append(str(config["optimizer"]))
    if config.get("schedule") is not None:
        parts.append(str(config["schedule"]))
    if config.get("batch_size") is not None:
        parts.append(f"batch {config['batch_size']}")
    if finite(config.get("lr")):
        parts.append(f"lr {config['lr']:.3g}")
    heading = f"Trial {trial.number} ({trial.state})"
    return heading + (": " + ", ".join(parts) if parts else "")


def trial_summary(trial: TrialRecord, metric: str) -> str:
    """One line under a trial's heading: the rest of its configuration, seed, epochs, best epoch, and for a
    failed trial why it failed."""
    shown = {"optimizer", "schedule", "batch_size", "lr"}
    rest = [
        f"{k.replace('_', ' ')} {format_number(v, significant=6)}"
        for k, v in trial.config.items()
        if k not in shown and v is not None
    ]
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
        value = format_number(trial.best.get(metric), significant=6)
        facts.append(f"best epoch {epoch_number(trial.best_epoch)}: {metric} {value}")
    if trial.retry_summary:
        facts.append(trial.retry_summary)
    if trial.state == "FAIL":
        facts.append("failed" + (f": {trial.fail_summary}" if trial.fail_summary else " (no reason recorded)"))
    return "; ".join(facts)


# ------------------------------------------------------------------------------------------- header


def reference_text(record: StudyRecord, best: float | None = None) -> tuple[str, str] | None:
    """``(label, text)`` of the objective's do-nothing reference (``ObjectiveEntry.reference``), and whether
    ``best`` beats it; None for an objective without one."""
    from tuner.objectives.base import objective_entry

    entry = objective_entry(record.objective)
    if entry is None or entry.reference is None:
        return None
    what, value = entry.reference
    unit = f" {entry.unit}" if entry.unit else ""
    text = f"{record.metric} = {format_number(value, significant=6)}{unit}"
    if best is not None and not is_better(best, value, record.direction):
        text += (
            f": the best trial ({format_number(best, significant=6)}{unit}) does not beat it, so no trial is useful yet"
        )
    return f"reference ({what})", text


def header_lines(report: StudyReport, url: str, command: str) -> list[tuple[str, str]]:
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
        at = f" at epoch {epoch_number(best.best_epoch)}" if best.best_epoch is not None else ""
        items.append(("best", f"trial {best.number}, {metric} = {format_number(best.value, significant=6)}{at}"))
    else:
        items.append(("best", "no completed trial yet"))
    label = f"baseline ({record.baseline_label})"
    baseline = record.baseline
    if metric in baseline:
        others = ", ".join(
            f"{k} {format_number(v, significant=6)}" for k, v in baseline.items() if k in record.components
        )
        value = format_number(baseline[metric], significant=6)
        items.append((label, f"{metric} = {value}" + (f" ({others})" if others else "")))
    else:
        items.append((label, "not recorded"))
    reference = reference_text(record, best.value if best is not None else None)
    if reference is not None:
        items.append(reference)
    if record.test_text:
        items.append(("evaluated (`tuner evaluate`)", record.test_text))
    if best is not None:
        from tuner.reports.confirmation import ranking_header

        said = ranking_header(report.confirmation, report.study.study_name, report.trains)
        if said is not None:
            items.append(said)
    items.append(("store", mask_url(url)))
    items.append(("generated by", f"`{command}` at {now()}"))
    return items


def report_command(study_names: Sequence[str], url: str, out_dir: Path, compare: bool = False) -> str:
    """The ``tuner report`` command line that writes these reports (the store's password masked)."""
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


def now() -> str:
    """The time a page is generated, UTC, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def safe_stem(name: str) -> str:
    """A file name for a study name (study names are free text in Optuna)."""
    stem = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name).strip("._")
    return stem or "study"
