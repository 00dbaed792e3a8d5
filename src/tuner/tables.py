"""Tables rebuilt from the store alone: trials of a study, and the studies of a store."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from rich.table import Table

__all__ = ["PARAM_COLUMNS", "epoch_rows", "rich_table", "study_rows", "trial_columns", "trial_rows"]

#: configuration columns shown for every objective (seed 001's knobs)
PARAM_COLUMNS = ("optimizer", "schedule", "batch_size", "lr", "weight_decay", "unfrozen_layers")


def epoch_rows(trial: optuna.trial.FrozenTrial) -> list[dict[str, Any]]:
    """The per-epoch records of ``trial``, in epoch order (``{"epoch": k, metric..., components...}``)."""
    rows = []
    for key in sorted(k for k in trial.user_attrs if k.startswith("epoch/")):
        rows.append({"epoch": int(key.split("/")[1]), **trial.user_attrs[key]})
    return rows


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: number, state, configuration, epochs run, best epoch, metric and components
    at the best epoch; sorted by the metric (best first), unfinished trials last."""
    attrs = study.user_attrs
    metric = attrs.get("metric", "value")
    components = attrs.get("components", [])
    maximize = attrs.get("direction") == "maximize"
    param_columns = _param_columns(attrs)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        config = trial.user_attrs.get("config", trial.params)
        epochs = epoch_rows(trial)
        best_epoch = _best_epoch(epochs, metric, maximize)
        best = next((e for e in epochs if e["epoch"] == best_epoch), {})
        row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name}
        row.update({name: config.get(name) for name in param_columns})
        row["epochs"] = len(epochs)
        row["best_epoch"] = best_epoch
        row[metric] = best.get(metric)
        row.update({name: best.get(name) for name in components})
        rows.append(row)

    def key(row: dict[str, Any]) -> tuple[int, float]:
        value = row[metric]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (1, 0.0)
        return (0, -value if maximize else value)

    return sorted(rows, key=key)


def _param_columns(attrs: dict[str, Any]) -> list[str]:
    # the common knobs, then the objective's own searched ones (a loss, a margin, a clip value)
    return [
        *PARAM_COLUMNS,
        *(k for k in attrs.get("search_space", {}) if k not in PARAM_COLUMNS and k != "warmup_epochs"),
    ]


def trial_columns(study: optuna.Study) -> list[str]:
    """The columns of :func:`trial_rows` (also for a study without trials): trial, state, configuration,
    epochs, best_epoch, metric, components."""
    attrs = study.user_attrs
    return [
        "trial",
        "state",
        *_param_columns(attrs),
        "epochs",
        "best_epoch",
        attrs.get("metric", "value"),
        *attrs.get("components", []),
    ]


def _best_epoch(epochs: Sequence[dict[str, Any]], metric: str, maximize: bool) -> int | None:
    scored = [e for e in epochs if isinstance(e.get(metric), (int, float)) and not math.isnan(e[metric])]
    if not scored:
        return None
    pick = max if maximize else min
    return pick(scored, key=lambda e: e[metric])["epoch"]


def study_rows(storage: Any) -> list[dict[str, Any]]:
    """One row per study in ``storage``: name, objective, trial counts by state, best value."""
    import optuna

    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=True):
        if "::lock:" in summary.study_name:  # a worker's momentary lock (tuner._queue.study_lock)
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        states = [t.state for t in study.get_trials(deepcopy=False)]
        best = summary.best_trial
        rows.append(
            {
                "study": summary.study_name,
                "objective": summary.user_attrs.get("objective", "?"),
                "metric": summary.user_attrs.get("metric", "value"),
                "direction": summary.direction.name.lower(),
                "trials": len(states),
                "complete": sum(s == optuna.trial.TrialState.COMPLETE for s in states),
                "pruned": sum(s == optuna.trial.TrialState.PRUNED for s in states),
                "failed": sum(s == optuna.trial.TrialState.FAIL for s in states),
                "running": sum(s == optuna.trial.TrialState.RUNNING for s in states),
                "best": best.value if best is not None else None,
                "best_trial": best.number if best is not None else None,
            }
        )
    return rows


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.4f}"
    return str(value)


def rich_table(rows: Sequence[dict[str, Any]], title: str = "") -> Table:
    """A rich table of ``rows`` (columns from the first row)."""
    from rich.table import Table

    table = Table(title=title or None, show_lines=False)
    if not rows:
        table.add_column("(empty)")
        return table
    for column in rows[0]:
        table.add_column(
            str(column),
            justify="right"
            if column not in ("state", "optimizer", "schedule", "study", "objective", "params")
            else "left",
        )
    for row in rows:
        table.add_row(*(format_value(v) for v in row.values()))
    return table
