"""Live confirmation of the search-strategy replay: strategies through the real objective, not the table.

``tuner_default`` and ``optuna_default`` (as ``benchmarks/search_strategies.py`` defines them) each run as a
real tuner study fine-tuning segmentation-3.0 on the demo corpus, one worker, for a few seeds, under the hand
grid's budget (its 8 settings x the table's 8 epochs = 64 epochs: no trial starts once that is spent; the
trial running then finishes, and its epochs past the budget are not counted). Per seed: the epochs spent
until an epoch's DER is at or below the hand grid's best in the table (a seed that never gets there counts
at least 1.0) and the best DER within the budget, beside the replay's figures for the same strategy.

Each (strategy, seed) is its own study in ``storage/search_strategies_live.db``: an interrupted run resumes
(finished seeds are read back, not re-run). Results: ``benchmarks/results/search_strategies_live.json``,
rewritten after each seed.

    .venv/bin/python benchmarks/search_strategies_live.py                      # seeds 0-2 (about 25 min a seed
    .venv/bin/python benchmarks/search_strategies_live.py --seeds 0 --strategies tuner_default   # on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
from pathlib import Path
from typing import Any

import optuna
from _common import RESULTS, write_result
from search_strategies import REPO, TABLE, _seeds, hand_settings, strategies

from tuner import load_study_file, run_study
from tuner.store.records import study_trials
from tuner.strategies.replay import CurveTable

STORE = REPO / "storage" / "search_strategies_live.db"


def _spent(study: optuna.Study) -> int:
    return sum(len(t.epochs) for t in study_trials(study)[1])


def run_seed(name: str, seed: int, budget: int, goal: float, url: str, study_file: Path) -> dict[str, Any]:
    """One live study of strategy ``name`` for ``seed``; its figures (read back if it already ran)."""
    table = CurveTable.load(TABLE)
    strategy = strategies(table, study_file)[name]
    sampler, pruner = strategy.make(seed)
    base = load_study_file(study_file)
    spec = dataclasses.replace(
        base,
        name=f"live_{name}_seed{seed}",
        sampler=sampler,
        pruner=pruner,
        warm_start=[dict(e) for e in strategy.enqueue] or None,
        prune_on=strategy.prune_on,
        n_trials=budget,  # more than fit: the budget callback ends the study
        seed=seed,
        description=f"live confirmation of the replay: strategy {name}, seed {seed}, {budget}-epoch budget",
    )

    def stop_at_budget(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if _spent(study) >= budget:
            study.stop()

    try:
        study = optuna.load_study(study_name=spec.name, storage=url)
    except KeyError:  # not run yet
        study = None
    if study is None or _spent(study) < budget:
        study = run_study(spec, url, workdir=REPO / "storage", show_progress=False, callbacks=[stop_at_budget])
    epochs = [e for t in sorted(study_trials(study)[1], key=lambda t: t.number) for e in t.epochs]
    values = [e["DER"] for e in epochs[:budget]]
    reached = next((k + 1 for k, v in enumerate(values) if v <= goal), None)
    return {
        "seed": seed,
        "reached": reached is not None,
        "fraction": round(reached / budget, 4) if reached is not None else max(1.0, len(values) / budget),
        "best_at_budget": round(min(values), 5) if values else None,
        "epochs_counted": len(values),
        "trials": sum(t.state in ("COMPLETE", "PRUNED") for t in study_trials(study)[1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--strategies", default="tuner_default,optuna_default")
    parser.add_argument("--storage", default=f"sqlite:///{STORE}")
    parser.add_argument("--study", type=Path, default=REPO / "studies" / "pyannote_optim.py")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    table = CurveTable.load(TABLE)
    hand = [table.key(e) for e in hand_settings()]
    budget = len(hand) * max(len(c) for c in table.curves.values())
    goal = table.best_value(hand)
    replayed = json.loads((RESULTS / "search_strategies.json").read_text())["strategies"]
    path = RESULTS / "search_strategies_live.json"
    done: dict[str, list[dict[str, Any]]] = json.loads(path.read_text()).get("per_seed", {}) if path.exists() else {}
    for seed in _seeds(args.seeds):
        for name in args.strategies.split(","):
            if any(r["seed"] == seed for r in done.get(name, [])):
                continue
            done.setdefault(name, []).append(run_seed(name, seed, budget, goal, args.storage, args.study))
            summary = {
                n: {
                    "median_fraction": statistics.median(r["fraction"] for r in runs),
                    "reached_fraction": round(sum(r["reached"] for r in runs) / len(runs), 3),
                    "best_at_budget_median": statistics.median(r["best_at_budget"] for r in runs),
                    "seeds": len(runs),
                    "replay": {k: replayed.get(n, {}).get(k) for k in ("median_fraction", "best_at_budget_median")},
                }
                for n, runs in done.items()
            }
            tuner = summary.get("tuner_default", {})
            write_result(
                "search_strategies_live",
                tuner.get("median_fraction", float("nan")),
                0.25,
                tuner.get("median_fraction", 1.0) <= 0.25,
                "fraction of the hand grid's epochs (median over the live seeds)",
                budget_epochs=budget,
                hand_grid_best=goal,
                strategies=summary,
                per_seed=done,
            )


if __name__ == "__main__":
    main()
