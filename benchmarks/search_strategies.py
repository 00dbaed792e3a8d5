"""Benchmark: search strategies side by side, replayed on the recorded-curve table.

The table (``benchmarks/data/pyannote_curves.json``, built by ``benchmarks/curve_table.py``) holds every
configuration of ``search_spaces/pyannote.yaml`` and the eight hand-run settings fine-tuning
pyannote/segmentation-3.0 on the demo corpus, each trained in full. Each strategy runs as an Optuna study
whose objective replays the table (:class:`tuner.strategies.replay.ReplayObjective`: samplers and pruners run
unchanged, each recorded epoch reported to the trial), for many seeds, under the hand grid's budget (its 8
settings x the table's epochs). Per seed: the epochs (and seconds) spent until an epoch's DER is at or below
the hand grid's best, as a fraction of the hand grid's (a seed that never gets there counts what it spent:
at least 1.0), and the best DER within the budget.

Strategies: ``hand_grid`` (the eight settings in their order, no pruning: the yardstick), ``random``
(RandomSampler, no pruning), ``random_asha`` (random + successive halving with Optuna's defaults, as Ray
Tune's default ASHA), ``optuna_default`` (TPESampler() + MedianPruner()), ``hyperband`` (TPE +
HyperbandPruner, as Optuna's documentation recommends), ``tuner_default`` (exactly what
``studies/pyannote_optim.py`` declares: its sampler, pruner, prune_on and warm start, read from it).

Choose on seeds 0-49 (``--seeds 0-49``), report on the held-out seeds 100-199 (the default).

    .venv/bin/python benchmarks/search_strategies.py                 # held-out seeds 100-199 (a few minutes)
    .venv/bin/python benchmarks/search_strategies.py --seeds 0-49 --result-name search_strategies_design
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from _common import RESULTS, write_result

from tuner import SearchSpace, load_study_file
from tuner.objectives.pyannote import PyannoteSegmentation
from tuner.strategies.replay import CurveTable, SeedRun, replay

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "benchmarks" / "data" / "pyannote_curves.json"
TARGET = 0.25
HAND_UNFROZEN = 3  # the hand runs trained the whole model


@dataclass
class Strategy:
    name: str
    make: Callable[[int], tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]]
    enqueue: Sequence[dict[str, Any]] = ()
    prune_on: str | None = None
    space: SearchSpace | None = None  # default: the study's


def hand_settings() -> list[dict[str, Any]]:
    entries = yaml.safe_load((REPO / "search_spaces" / "hand_grid.yaml").read_text())
    return [{**{k: v for k, v in e.items() if k != "name"}, "unfrozen_layers": HAND_UNFROZEN} for e in entries]


def _space(with_hand_batches: bool = False) -> SearchSpace:
    content = yaml.safe_load((REPO / "search_spaces" / "pyannote.yaml").read_text())
    if with_hand_batches:
        batches = set(content["batch_size"]["choices"]) | {e["batch_size"] for e in hand_settings()}
        content["batch_size"]["choices"] = sorted(batches)
    return SearchSpace.from_dict(content, extra=PyannoteSegmentation.params, source="search_spaces/pyannote.yaml")


def tuner_default(study_file: Path) -> Strategy:
    """The sampler, pruner, prune_on and warm start ``study_file`` declares, re-seeded for each seed."""
    from tuner.study import load_warm_start

    spec = load_study_file(study_file)
    space = spec.load_search_space(PyannoteSegmentation.params)
    warm = [dict(e.params) for e in load_warm_start(spec, space)]

    def make(seed: int) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
        return reseeded(spec.sampler, seed), copy.deepcopy(spec.pruner)

    return Strategy("tuner_default", make, enqueue=warm, prune_on=spec.prune_on, space=space)


def reseeded(sampler: optuna.samplers.BaseSampler, seed: int) -> optuna.samplers.BaseSampler:
    """A fresh copy of ``sampler`` drawing from ``seed`` (tuner's samplers take ``seed``; Optuna's are rebuilt)."""
    if hasattr(sampler, "reseeded"):
        return sampler.reseeded(seed)
    from tuner.store.optuna_internals import reseeded_optuna_sampler

    return reseeded_optuna_sampler(sampler, seed)


def strategies(table: CurveTable, study_file: Path) -> dict[str, Strategy]:
    epochs = max(len(c) for c in table.curves.values())
    return {
        "hand_grid": Strategy(
            "hand_grid",
            lambda seed: (optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner()),
            enqueue=hand_settings(),
            space=_space(with_hand_batches=True),
        ),
        "random": Strategy(
            "random", lambda seed: (optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner())
        ),
        "random_asha": Strategy(
            "random_asha",
            lambda seed: (optuna.samplers.RandomSampler(seed=seed), optuna.pruners.SuccessiveHalvingPruner()),
        ),
        "optuna_default": Strategy(
            "optuna_default", lambda seed: (optuna.samplers.TPESampler(seed=seed), optuna.pruners.MedianPruner())
        ),
        "hyperband": Strategy(
            "hyperband",
            lambda seed: (
                optuna.samplers.TPESampler(seed=seed),
                optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3),
            ),
        ),
        "tuner_default": tuner_default(study_file),
    }


def run_strategy(
    strategy: Strategy, table: CurveTable, seeds: Sequence[int], budget: int, goal: float, grid_seconds: float
) -> dict[str, Any]:
    runs: list[SeedRun] = []
    space = strategy.space or _space()
    for seed in seeds:
        sampler, pruner = strategy.make(seed)
        runs.append(
            replay(
                table,
                space,
                sampler=sampler,
                pruner=pruner,
                budget_epochs=budget,
                goal=goal,
                seed=seed,
                prune_on=strategy.prune_on,
                enqueue=strategy.enqueue,
            )
        )
    fractions = [max(r.epochs_to_goal / budget, 0.0 if r.reached else 1.0) for r in runs]
    seconds = [max(r.seconds_to_goal / grid_seconds, 0.0 if r.reached else 1.0) for r in runs]
    best = [r.best_at_budget for r in runs]
    return {
        "median_fraction": round(statistics.median(fractions), 4),
        "mean_fraction": round(statistics.fmean(fractions), 4),
        "median_seconds_fraction": round(statistics.median(seconds), 4),
        "mean_seconds_fraction": round(statistics.fmean(seconds), 4),
        "reached_fraction": round(sum(r.reached for r in runs) / len(runs), 4),
        "best_at_budget_median": round(statistics.median(best), 5),
        "seeds": len(runs),
        "anytime_median": [round(statistics.median(r.anytime[i] for r in runs), 5) for i in range(budget)],
        "anytime_q25": [round(_quantile([r.anytime[i] for r in runs], 0.25), 5) for i in range(budget)],
        "anytime_q75": [round(_quantile([r.anytime[i] for r in runs], 0.75), 5) for i in range(budget)],
        "per_seed": [
            {"seed": r.seed, "fraction": f, "reached": r.reached, "best": r.best_at_budget, "trials": r.trials}
            for r, f in zip(runs, fractions, strict=True)
        ],
    }


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        start, _, end = part.partition("-")
        seeds += list(range(int(start), int(end or start) + 1))
    return seeds


def plot(results: dict[str, dict[str, Any]], budget: int, goal: float, path: Path) -> None:
    """The anytime curves: best DER against epochs spent, median and 25-75 % band per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.8), dpi=110)
    x = list(range(1, budget + 1))
    for name, result in results.items():
        style = {"linewidth": 2.6} if name == "tuner_default" else {"linewidth": 1.3}
        (line,) = axes.plot(x, result["anytime_median"], label=name, **style)
        axes.fill_between(x, result["anytime_q25"], result["anytime_q75"], color=line.get_color(), alpha=0.12)
    axes.axhline(goal, color="gray", linestyle="--", linewidth=1)
    axes.text(budget, goal, " hand grid's best", va="bottom", ha="right", color="gray", fontsize=8)
    axes.set_xlabel("epochs spent (the hand grid's budget)")
    axes.set_ylabel("best dev DER so far (median, 25-75 %)")
    axes.set_title("Search strategies on the recorded curves (segmentation-3.0, demo corpus)")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--seeds", default="100-199", help="e.g. 100-199 (held out: the default) or 0-49")
    parser.add_argument("--strategies", default="", help="comma-separated names (default: every strategy)")
    parser.add_argument(
        "--study", type=Path, default=REPO / "studies" / "pyannote_optim.py", help="tuner_default's study file"
    )
    parser.add_argument("--result-name", default="search_strategies")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    table = CurveTable.load(args.table)
    raw = json.loads(args.table.read_text())
    hand = [table.key(e) for e in hand_settings()]
    missing = [k for k in hand if k not in table.curves]
    if missing:
        raise SystemExit(f"the table lacks hand-run settings {missing}: build it first (benchmarks/curve_table.py)")
    epochs = max(len(c) for c in table.curves.values())
    budget = len(hand) * epochs
    goal = table.best_value(hand)
    grid_seconds = sum(e.get("seconds", 0.0) for k in hand for e in table.curves[k])
    oracle = table.oracle_epochs(goal)
    chosen = strategies(table, args.study)
    names = [n for n in args.strategies.split(",") if n] or list(chosen)
    seeds = _seeds(args.seeds)
    started = time.perf_counter()
    results = {name: run_strategy(chosen[name], table, seeds, budget, goal, grid_seconds) for name in names}
    RESULTS.mkdir(parents=True, exist_ok=True)
    figure = RESULTS / f"{args.result_name}.png"
    plot(results, budget, goal, figure)
    searchers = {n: r for n, r in results.items() if n not in ("hand_grid", "tuner_default")}
    tuner = results.get("tuner_default")
    leads = tuner is not None and all(tuner["median_fraction"] < r["median_fraction"] for r in searchers.values())
    figure_value = tuner["median_fraction"] if tuner else float("nan")
    write_result(
        args.result_name,
        figure_value,
        TARGET,
        bool(tuner) and figure_value <= TARGET and leads and tuner["best_at_budget_median"] <= goal,
        "fraction of the hand grid's epochs (median, held-out seeds)",
        leads_every_strategy=leads,
        seeds=args.seeds,
        budget_epochs=budget,
        hand_grid_best=goal,
        hand_grid_best_setting=table.names.get(min(hand, key=lambda k: min(e[table.metric] for e in table.curves[k]))),
        oracle_epochs=oracle,
        oracle_fraction=round(oracle / budget, 4) if oracle else None,
        table={
            "path": str(args.table.relative_to(REPO)),
            "configurations": len(table.curves),
            "epochs": epochs,
            "baseline": raw.get("baseline"),
            "machine": raw.get("machine"),
        },
        strategies={
            n: {k: v for k, v in r.items() if not k.startswith(("anytime", "per_seed"))} for n, r in results.items()
        },
        anytime={n: r["anytime_median"] for n, r in results.items()},
        per_seed={n: r["per_seed"] for n, r in results.items()},
        figure_file=str(figure.relative_to(REPO)),
        seconds=round(time.perf_counter() - started, 1),
    )


if __name__ == "__main__":
    main()
