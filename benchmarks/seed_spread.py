"""Benchmark: how noisy is the search itself? The recorded-curve table's repeated seeds, read with tuner's statistics.

The recorded-curve table (``benchmarks/data/pyannote_curves.json``) holds one run per configuration; ``--repeats``
of ``benchmarks/curve_table.py`` added more seeds for the eight hand-run settings and the 8 best configurations
of the grid (``repeats``). This reads them as ``tuner confirm`` reads a study (each run at its best validation
epoch, the trial's value):

* the seed spread of each repeated configuration: runs, mean, standard deviation, 95 % interval of the mean;
* the confirmed ranking (Welch's t-test against the best mean, Holm-corrected), and which configurations are
  really better than pyannote's default (Adam 1e-3, constant, batch 32, the whole model: the first hand-run
  setting), by the same test against it, Holm-corrected over the configurations compared with it;
* how often successive halving at rate 4 (the default study's pruner, replayed on the table over the held-out
  seeds 100-199 as ``benchmarks/search_strategies.py`` does) pruned a configuration that the repeats show
  indistinguishable from the best: pruning errors the single-seed curves cannot see.

    .venv/bin/python benchmarks/seed_spread.py    # seconds: reads the table, replays the default study
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import optuna
from _common import write_result
from search_strategies import TABLE, hand_settings, tuner_default
from search_strategies import _space as grid_space

from tuner.statistics import holm, rank_configurations, welch_test
from tuner.strategies.replay import CurveTable, replay

REPO = Path(__file__).resolve().parents[1]
KEYS = ("optimizer", "lr", "schedule", "batch_size", "unfrozen_layers")
DEFAULT = ("Adam", 0.001, "constant", 32, 3)


def _key(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(params[k] for k in KEYS)


def _label(key: tuple[Any, ...], names: dict[tuple[Any, ...], str]) -> str:
    text = f"{key[0]} {key[1]:g} {key[2]} b{key[3]} u{key[4]}"
    return f"{text} ({names[key]})" if key in names else text


def runs_by_configuration(table: dict[str, Any]) -> tuple[dict[tuple[Any, ...], list[float]], dict[Any, str]]:
    """Each repeated configuration's runs (the table's run first, then its repeats), each at its best epoch."""
    repeated = {_key(r["params"]) for r in table.get("repeats", [])}
    runs: dict[tuple[Any, ...], list[float]] = {}
    names: dict[tuple[Any, ...], str] = {}
    for row in [*table["rows"], *table.get("repeats", [])]:
        key = _key(row["params"])
        if key in repeated:
            runs.setdefault(key, []).append(min(epoch[0] for epoch in row["epochs"]))
            if row.get("name") and not row["name"].startswith("optimizer="):
                names[key] = row["name"]
    return runs, names


def selection_bias(runs: dict[tuple[Any, ...], list[float]], names: dict[Any, str]) -> dict[str, Any]:
    """How far the new seeds' mean lands from the table's recorded run (runs[0]), per configuration: for the
    grid's configurations (chosen for their recorded value) and for the hand-run settings (not chosen by it),
    each as the mean over configurations with its 95 % interval."""
    from tuner.statistics import summarize

    out = {}
    for group, keys in (
        ("grid_best", [k for k in runs if k not in names]),
        ("hand_run", [k for k in runs if k in names]),
    ):
        shifts = [statistics.fmean(runs[k][1:]) - runs[k][0] for k in keys]
        summary = summarize(shifts)
        out[group] = {"configurations": summary.n, "mean_shift": round(summary.mean, 5),
                      "interval_95": [round(summary.low, 5), round(summary.high, 5)]}  # fmt: skip
    return out


def _recording(studies: list[optuna.Study]) -> Any:
    """A study factory for :func:`replay` that keeps the studies it makes in ``studies``."""

    def factory(**kwargs: Any) -> optuna.Study:
        studies.append(optuna.create_study(**kwargs))
        return studies[-1]

    return factory


def pruning_errors(
    table_path: Path, indistinguishable: set[tuple[Any, ...]], repeated: set[tuple[Any, ...]], seeds: list[int]
) -> dict[str, Any]:
    """Replay the default study on the table for ``seeds``; count its pruned trials of repeated configurations and
    those of them the repeats show indistinguishable from the best."""
    table = CurveTable.load(table_path)
    strategy = tuner_default(REPO / "studies" / "pyannote_optim.py")
    hand = [table.key(e) for e in hand_settings()]
    budget = len(hand) * max(len(c) for c in table.curves.values())  # the hand grid's epochs, as the replay's
    goal = table.best_value(hand)
    pruned_repeated = pruned_good = seeds_with_error = 0
    for seed in seeds:
        studies: list[optuna.Study] = []
        sampler, pruner = strategy.make(seed)
        replay(
            table, strategy.space or grid_space(), sampler=sampler, pruner=pruner, budget_epochs=budget, goal=goal,
            seed=seed, prune_on=strategy.prune_on, enqueue=strategy.enqueue,
            study_factory=_recording(studies),
        )  # fmt: skip
        errors_here = 0
        for trial in studies[0].get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)):
            key = _key(trial.params | {"unfrozen_layers": trial.params.get("unfrozen_layers", 3)})
            if key in repeated:
                pruned_repeated += 1
                if key in indistinguishable:
                    pruned_good += 1
                    errors_here += 1
        seeds_with_error += errors_here > 0
    return {
        "seeds": len(seeds),
        "pruned_trials_of_repeated_configurations": pruned_repeated,
        "of_them_indistinguishable_from_the_best": pruned_good,
        "seeds_that_pruned_one": seeds_with_error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="100-199", help="replay seeds for the pruning count (default 100-199)")
    args = parser.parse_args()
    low, high = (int(x) for x in args.seeds.split("-"))
    table = json.loads(TABLE.read_text())
    runs, names = runs_by_configuration(table)
    if not runs:
        raise SystemExit(f"{TABLE} has no repeated runs: run benchmarks/curve_table.py --repeats 2 first")
    ranked = rank_configurations({_label(k, names): v for k, v in runs.items()}, "minimize")
    by_label = {_label(k, names): k for k in runs}
    indistinguishable = {by_label[r.name] for r in ranked if r.verdict.value in ("best", "indistinguishable")}

    # against pyannote's default, Holm over the configurations compared with it
    others = [k for k in runs if k != DEFAULT]
    adjusted = dict(zip(others, holm([welch_test(runs[k], runs[DEFAULT]) for k in others]), strict=True))
    default_mean = statistics.fmean(runs[DEFAULT])
    rows = []
    for r in ranked:
        key = by_label[r.name]
        p = adjusted.get(key, math.nan)
        versus = "reference" if key == DEFAULT else (
            "too few runs" if p != p else "indistinguishable" if p >= 0.05 else
            "better" if r.summary.mean < default_mean else "worse"
        )  # fmt: skip
        rows.append({
            "configuration": r.name, "runs": [round(v, 5) for v in runs[key]], "n": r.summary.n,
            "mean": round(r.summary.mean, 5), "sd": round(r.summary.sd, 5),
            "interval_95": [round(r.summary.low, 5), round(r.summary.high, 5)],
            "range": round(max(runs[key]) - min(runs[key]), 5), "vs_best": r.verdict.value,
            "vs_pyannote_default": versus, "p_vs_default_holm": None if p != p else round(p, 4),
        })  # fmt: skip
    sds = [row["sd"] for row in rows if row["n"] > 1]
    pruning = pruning_errors(TABLE, indistinguishable, set(runs), list(range(low, high + 1)))
    print(
        f"{'configuration':64} {'n':>2} {'mean':>7} {'sd':>7} {'95% interval':>18} {'vs best':>17} {'vs default':>17}"
    )
    for row in rows:
        interval = f"[{row['interval_95'][0]:.4f}, {row['interval_95'][1]:.4f}]"
        print(f"{row['configuration']:64} {row['n']:>2} {row['mean']:>7.4f} {row['sd']:>7.4f} {interval:>18} "
              f"{row['vs_best']:>17} {row['vs_pyannote_default']:>17}")  # fmt: skip
    better = [row["configuration"] for row in rows if row["vs_pyannote_default"] == "better"]
    write_result(
        "seed_spread",
        round(statistics.median(sds), 5),
        None,
        True,
        "DER (median over configurations of the seed standard deviation)",
        configurations=len(rows),
        runs_per_configuration=sorted({row["n"] for row in rows}),
        epoch_rule="each run at its best validation epoch (the trial's value)",
        seed_sd_range=[round(min(sds), 5), round(max(sds), 5)],
        indistinguishable_from_the_best=sum(row["vs_best"] == "indistinguishable" for row in rows),
        better_than_pyannote_default=better,
        pruning=pruning,
        new_seeds_minus_recorded_run=selection_bias(runs, names),
        rows=rows,
    )


if __name__ == "__main__":
    main()
