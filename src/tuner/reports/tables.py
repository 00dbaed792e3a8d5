"""Tables rebuilt from the store alone: the trials of a study (``tuner run``'s closing table and every report's
trial table), the studies of a store (``tuner studies``), and the rich table the command line prints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tuner.direction import rank_key
from tuner.store.records import StudyRecord, TrialRecord, study_trials
from tuner.text import format_number

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
    "sort_rows",
    "trains",
    "param_columns",
]

#: configuration columns shown for every objective (the knobs of the hand-run settings)
PARAM_COLUMNS = ("optimizer", "schedule", "batch_size", "lr", "weight_decay", "unfrozen_layers")


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial (:func:`trial_row`), sorted by the metric (best first), unscored trials last."""
    record, trials = study_trials(study)
    return sort_rows([trial_row(trial, record) for trial in trials], record)


def trial_row(trial: TrialRecord, study: StudyRecord) -> dict[str, Any]:
    """Number, state, configuration, epochs run, best epoch, metric and components at the best epoch."""
    best = trial.best
    row: dict[str, Any] = {"trial": trial.number, "state": trial.state}
    row.update({name: trial.config.get(name) for name in param_columns(study)})
    row["epochs"] = trial.epochs_run
    row["best_epoch"] = trial.best_epoch
    row[study.metric] = best.get(study.metric)
    row.update({name: best.get(name) for name in study.components})
    return row


def sort_rows(rows: list[dict[str, Any]], study: StudyRecord) -> list[dict[str, Any]]:
    """``rows`` best first by the study's metric; rows without a finite one last, in trial order."""

    rank = rank_key(study.direction)

    def key(row: dict[str, Any]) -> tuple[int, float]:
        value = row[study.metric]
        if not isinstance(value, (int, float)) or not math.isfinite(value):
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


def rich_table(rows: Sequence[dict[str, Any]], title: str | None = None) -> Table:
    """A rich table of ``rows`` (columns from the first row)."""
    from rich.table import Table

    table = Table(title=title or None, show_lines=False)
    if not rows:
        table.add_column("(empty)")
        return table
    for column in rows[0]:
        table.add_column(
            str(column),
            justify="right" if column not in _LEFT else "left",
        )
    for row in rows:
        table.add_row(*(format_number(v) for v in row.values()))
    return table
