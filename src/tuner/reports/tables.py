"""Tables rebuilt from the store alone: the trials of a study (``tuner run``'s closing table and every report's
trial table), the studies of a store (``tuner studies``), and the rich table the command line prints."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tuner.direction import rank_key
from tuner.store.records import StudyRecord, TrialRecord, study_trials
from tuner.text import epoch_number, format_number

if TYPE_CHECKING:
    import optuna
    from rich.table import Table

    from tuner.confirm import ConfirmedRanking

__all__ = [
    "PARAM_COLUMNS",
    "rich_table",
    "study_rows",
    "store_study_rows",
    "trial_columns",
    "trial_rows",
    "trial_row",
    "rows_of",
    "uses",
    "sort_rows",
    "trains",
    "param_columns",
]

#: configuration columns shown for every objective (the knobs of the hand-run settings)
PARAM_COLUMNS = ("optimizer", "schedule", "batch_size", "lr", "weight_decay", "unfrozen_layers")


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial (:func:`trial_row`), sorted by the metric (best first), unscored trials last."""
    record, trials = study_trials(study)
    return sort_rows(rows_of(trials, record), record)


def rows_of(trials: Sequence[TrialRecord], study: StudyRecord) -> list[dict[str, Any]]:
    """:func:`trial_row` of each trial; a failed trial that a retry replaced says which (``FAIL, see #k``)."""
    replaced_by: dict[int, int] = {}
    for trial in trials:  # a retry names the original; a chain of retries ends at the last one
        if trial.retried_from is not None:
            replaced_by[trial.retried_from] = trial.number
    rows = []
    for trial in trials:
        row = trial_row(trial, study)
        if trial.state == "FAIL" and trial.number in replaced_by:
            row["state"] = f"FAIL, see #{replaced_by[trial.number]}"
        rows.append(row)
    return rows


def trial_row(trial: TrialRecord, study: StudyRecord) -> dict[str, Any]:
    """Number, state, configuration (None for a parameter the trial does not use: a ``when`` left unmet),
    epochs run and best epoch (a study that trains), metric and components at the best epoch."""
    best = trial.best
    row: dict[str, Any] = {"trial": trial.number, "state": trial.state}
    row.update(
        {name: trial.config.get(name) if uses(study, name, trial.config) else None for name in param_columns(study)}
    )
    if trains(study):
        row["epochs"] = trial.epochs_run
        row["best_epoch"] = epoch_number(trial.best_epoch)
    row[study.metric] = best.get(study.metric)
    row.update({name: best.get(name) for name in study.components})
    return row


def uses(study: StudyRecord, name: str, config: Mapping[str, Any]) -> bool:
    """Whether a trial of ``config`` uses parameter ``name``: not when its ``when`` condition (a margin
    only for the losses that have one) is unmet."""
    spec = study.search_space.get(name)
    when = spec.get("when") if isinstance(spec, Mapping) else None
    return not when or all(config.get(other) in values for other, values in when.items())


def sort_rows(rows: list[dict[str, Any]], study: StudyRecord) -> list[dict[str, Any]]:
    """``rows`` best first by the study's metric; then rows ranked apart, in trial order: those without a
    finite metric, failed trials (a failure's last value is not a result) and, for a study that trains
    nothing, pruned trials (their metric covers only the items evaluated before the pruning)."""

    rank = rank_key(study.direction)
    partial = () if trains(study) else ("PRUNED",)

    def key(row: dict[str, Any]) -> tuple[int, float]:
        value = row[study.metric]
        state = str(row.get("state", ""))
        if not isinstance(value, (int, float)) or not math.isfinite(value) or state.startswith("FAIL"):
            return (2, 0.0)
        if state in partial:
            return (1, 0.0)
        return (0, rank(value))

    return sorted(rows, key=key)


def trains(study: StudyRecord) -> bool:
    """Whether the study's trials train a model (the common knobs apply, epochs count); a pipeline study's
    space holds none of them. A study that recorded no space is taken to train."""
    return not study.search_space or any(k in study.search_space for k in PARAM_COLUMNS)


def param_columns(study: StudyRecord) -> list[str]:
    """The common knobs (for a study that trains), then the objective's own searched ones (a loss, a
    margin, a clip value, a pipeline's clustering threshold)."""
    own = [k for k in study.search_space if k not in PARAM_COLUMNS and k != "warmup_epochs"]
    return [*PARAM_COLUMNS, *own] if trains(study) else own


def trial_columns(study: optuna.Study | StudyRecord) -> list[str]:
    """The columns of :func:`trial_rows` (also for a study without trials): trial, state, configuration,
    epochs and best_epoch (a study that trains), metric, components."""
    record = study if isinstance(study, StudyRecord) else StudyRecord.of(study)
    epochs = ["epochs", "best_epoch"] if trains(record) else []
    return ["trial", "state", *param_columns(record), *epochs, record.metric, *record.components]


def study_rows(storage: Any) -> list[dict[str, Any]]:
    """One row per study in ``storage`` (an RDB storage, or a :class:`tuner.store.sql.StoreReader`): name,
    objective, trial counts by state, best value.

    Nothing reads the trials themselves: the database counts them (:func:`tuner.store.sql.trial_counts`) and
    finds the best one, so a store of studies of 10,000 trials lists in well under a second.
    """
    import optuna

    from tuner.store import sql
    from tuner.store.lock import is_old_lock_study

    counts = sql.trial_counts(storage)
    rows = []
    for study_id, name in sql.study_ids(storage):
        if is_old_lock_study(name):
            continue
        directions = sql.study_directions(storage, study_id)
        maximize = bool(directions) and directions[0] == optuna.study.StudyDirection.MAXIMIZE
        record = StudyRecord.from_attrs(
            name, sql.study_user_attrs(storage, study_id), "maximize" if maximize else "minimize"
        )
        best = sql.ranked_trial(storage, study_id, maximize) if len(directions) == 1 else None
        best_trial = sql.read_trial(storage, study_id, best[1]) if best is not None else None
        states = counts.get(study_id, {})
        rows.append(
            {
                "study": name,
                "objective": record.objective or "?",
                "metric": record.metric,
                "direction": record.direction,
                "trials": sum(states.values()),
                "complete": states.get(optuna.trial.TrialState.COMPLETE.name, 0),
                "pruned": states.get(optuna.trial.TrialState.PRUNED.name, 0),
                "failed": states.get(optuna.trial.TrialState.FAIL.name, 0),
                "running": states.get(optuna.trial.TrialState.RUNNING.name, 0),
                "best": best_trial.value if best_trial is not None else None,
                "best_trial": best_trial.number if best_trial is not None else None,
            }
        )
    return rows


def store_study_rows(url: str) -> list[dict[str, Any]]:
    """:func:`study_rows` of the store at ``url``, read through its SQL engine alone
    (:func:`tuner.store.connect.open_reader`); through Optuna's storage (:func:`tuner.store.connect.open_storage`, and
    its errors) when that fails: a store without Optuna's tables yet, or one that cannot be reached."""
    import sqlalchemy.exc

    from tuner.store.connect import open_reader, open_storage

    reader = open_reader(url)
    if reader is not None:
        try:
            return study_rows(reader)
        except sqlalchemy.exc.SQLAlchemyError:
            pass
        finally:
            reader.engine.dispose()
    return study_rows(open_storage(url, heartbeat=False))


def ranking_rows(ranking: ConfirmedRanking) -> list[dict[str, Any]]:
    """One row per confirmed configuration (best mean first), then the starting point: runs, mean, standard
    deviation, the 95 % interval of the mean, and the verdicts against the best mean and the reference."""
    rows: list[dict[str, Any]] = []
    for rank, row in enumerate(ranking.rows, start=1):
        summary = row.summary
        assert summary is not None
        interval = "-" if summary.n < 2 else f"[{format_number(summary.low)}, {format_number(summary.high)}]"
        rows.append(
            {
                "rank": rank,
                "configuration": row.label + (" (reference)" if row.reference else ""),
                "runs": summary.n,
                "mean": summary.mean,
                "sd": summary.sd if summary.n > 1 else None,
                "95% interval": interval,
                "vs best": row.verdict,
                "vs reference": row.versus_reference,
            }
        )
    if ranking.baseline is not None:
        rows.append(
            {
                "rank": "-",
                "configuration": f"{ranking.baseline_label} (starting point)",
                "runs": 1,
                "mean": ranking.baseline,
                "sd": None,
                "95% interval": "-",
                "vs best": ranking.starting_point,
                "vs reference": "-",
            }
        )
    return rows


#: text columns, aligned left (numbers align right)
_LEFT = (
    "state", "optimizer", "schedule", "study", "objective", "params", "name", "kind", "release", "from", "here",
    "configuration", "95% interval", "vs best", "vs reference",
)  # fmt: skip


#: shorter headers for the common columns, so a study's table fits 100 columns with every value whole
_SHORT_HEADERS = {
    "optimizer": "optim", "schedule": "sched", "batch_size": "batch", "weight_decay": "wd",
    "unfrozen_layers": "unfrozen", "best_epoch": "best\nepoch",
}  # fmt: skip


def _header(column: str) -> str:
    """The column's header: its short name, else its name with a multi-word one on two lines."""
    return _SHORT_HEADERS.get(column) or str(column).replace("_", " ").replace(" ", "\n", 1)


def _widths(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> dict[str, int]:
    """Each column's width with its header (each line of it) and every cell whole."""
    return {
        column: max([len(line) for line in _header(column).splitlines()] + [len(row[i]) for row in cells])
        for i, column in enumerate(columns)
    }


def fit_columns(
    columns: Sequence[str], cells: Sequence[Sequence[str]], width: int, keep: Sequence[str] = ()
) -> list[str]:
    """The columns that fit ``width`` characters with every header and cell whole (one space between
    columns): the rightmost ones not in ``keep`` are left out first, as many as needed."""
    widths = _widths(columns, cells)
    shown = list(columns)
    while sum(widths[c] for c in shown) + len(shown) - 1 > width:
        droppable = [c for c in shown if c not in keep]
        if not droppable:
            break
        shown.remove(droppable[-1])
    return shown


def rich_table(
    rows: Sequence[dict[str, Any]], title: str | None = None, *, width: int | None = None, keep: Sequence[str] = ()
) -> Table:
    """A rich table of ``rows`` (columns from the first row; floats to 4 significant digits, ``-`` for None).

    With ``width`` (the console's), the table fits it: every value stays whole and the rightmost columns not
    in ``keep`` are left out as needed, named in the caption; where the kept ones are still too wide, the widest
    text column (a configuration) wraps onto more lines, its words whole.
    """
    from rich import box
    from rich.table import Table

    # columns one space apart (the box's blank vertical line), no padding, no outer edge
    table = Table(title=title or None, box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False)
    if not rows:
        table.add_column("(empty)")
        return table
    columns = list(rows[0])
    cells = [[format_number(row.get(c), significant=4) for c in columns] for row in rows]
    shown = columns if width is None else fit_columns(columns, cells, width, keep)
    left_out = [c for c in columns if c not in shown]
    if left_out:
        table.caption = f"left out to fit {width} columns: {', '.join(left_out)} (`tuner report` shows every column)"
    widths = {column: wide for column, wide in _widths(columns, cells).items() if column in shown}
    excess = sum(widths.values()) + len(shown) - 1 - (width or 0)
    texts = [c for c in shown if c in _LEFT]
    wrapped = max(texts, key=lambda c: widths[c]) if width is not None and excess > 0 and texts else None
    if wrapped is not None:  # the kept columns alone are too wide: the longest text wraps (at least 20 characters)
        widths[wrapped] = max(20, widths[wrapped] - excess)
    for column in shown:
        table.add_column(
            _header(column), justify="left" if column in _LEFT else "right", no_wrap=column != wrapped,
            min_width=widths[column], max_width=widths[column] if column == wrapped else None,
        )  # fmt: skip
    index = [columns.index(c) for c in shown]
    for row in cells:
        table.add_row(*(row[i] for i in index))
    return table
