"""What the pages say of a study's confirmation (:mod:`tuner.confirm`): the confirmed ranking as a table and a
figure (each configuration's mean with its 95 % interval, its runs as dots), or, for a study that has none, that
its ranking rests on single runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

    from tuner.confirm import ConfirmedRanking

__all__ = ["confirmation_of", "ranking_header", "ranking_figure", "RANKING"]

#: the title of the confirmed ranking's section and figure
RANKING = "Confirmed ranking"


def confirmation_of(study: optuna.Study) -> ConfirmedRanking | None:
    """The confirmed ranking of ``study`` from its companion study in the same store; None without one."""
    import optuna

    from tuner.confirm import confirmation_name, confirmed_ranking
    from tuner.store.optuna_internals import storage_of

    if study.study_name.endswith(confirmation_name("")):
        return None  # a companion study itself
    try:
        companion = optuna.load_study(study_name=confirmation_name(study.study_name), storage=storage_of(study))
    except KeyError:
        return None
    ranking = confirmed_ranking(study, companion)
    return ranking if ranking.rows else None


def ranking_header(ranking: ConfirmedRanking | None, study_name: str, trains: bool) -> tuple[str, str] | None:
    """The header line saying what the study's ranking rests on (None for a study that trains nothing: the
    same configuration gives the same result whatever the seed)."""
    if not trains:
        return None
    if ranking is None:
        return (
            "ranking",
            f"from single runs (one training run per configuration): `tuner confirm {study_name}` repeats the best "
            "configurations with new seeds",
        )
    best = ranking.rows[0]
    summary = best.summary
    assert summary is not None
    return ("confirmed", f"{len(ranking.rows)} configurations x {summary.n} runs; see the confirmed ranking below")


def ranking_figure(ranking: ConfirmedRanking) -> go.Figure:
    """Each confirmed configuration's mean with its 95 % interval (bars), its runs as dots, and the starting point
    as a dashed line."""
    import plotly.graph_objects as go

    labels = [row.label + (" (reference)" if row.reference else "") for row in ranking.rows]
    means, low, high = [], [], []
    for row in ranking.rows:
        summary = row.summary
        assert summary is not None
        means.append(summary.mean)
        spread = summary.n > 1
        low.append(summary.mean - summary.low if spread else 0.0)
        high.append(summary.high - summary.mean if spread else 0.0)
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=means,
            y=labels,
            mode="markers",
            marker={"symbol": "diamond", "size": 11},
            error_x={"type": "data", "symmetric": False, "array": high, "arrayminus": low},
            name="mean, 95 % interval",
        )
    )
    dots: dict[str, list[Any]] = {"x": [], "y": [], "text": []}
    for label, row in zip(labels, ranking.rows):
        for value, source in zip(row.runs, row.sources):
            dots["x"].append(value)
            dots["y"].append(label)
            dots["text"].append(source)
    figure.add_trace(go.Scatter(x=dots["x"], y=dots["y"], text=dots["text"], mode="markers", opacity=0.6, name="runs"))
    if ranking.baseline is not None:
        figure.add_vline(
            x=ranking.baseline, line_dash="dash", annotation_text=f"{ranking.baseline_label} (starting point)"
        )
    figure.update_layout(
        title=f"{RANKING} by {ranking.metric} ({ranking.direction}; {ranking.epoch_rule})",
        xaxis_title=ranking.metric,
        yaxis={"autorange": "reversed"},  # best mean on top
        template="plotly_white",
        height=max(320, 90 * len(labels) + 160),
    )
    return figure
