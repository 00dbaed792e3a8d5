"""Benchmark: epochs a TPE + pruning study spends to reach the best DER of the eight hand-run settings.

On the demo diarization corpus, the eight hand-run settings (search_spaces/hand_grid.yaml) run
through the `pyannote_segmentation` objective of studies/pyannote_hand_grid.py (its search space, model
options and max_epochs, 6 epochs per setting) as a study whose warm start is the grid, 8 trials, no
pruning; the grid's best is the lowest best-epoch DER of the eight, its cost 8 x max_epochs epochs. The
grid gives no weight decay: it runs with ``--grid-weight-decay`` (default 0.0, the plain default of
Adam / RAdam / NAdam and of pyannote's own Adam(1e-3); the study fixes it). Then for each seed a study on
the same space, objective and max_epochs, no warm start, with the pruner and ``prune_on`` of the product's
study without warm start (``--tpe-study``, default studies/pyannote_optim.py) and a TPESampler(seed) with
its number of random startup trials, runs trial after trial until one epoch's DER <= the grid's best or
the study has spent the grid's epochs (an epoch budget, not a trial budget: pruned trials cost less).
Its epochs are counted in trial order (per-epoch records in the store; pruned and failed trials count the
epochs they ran) up to and including the first epoch whose DER <= the grid's best; fraction = that count /
the grid's epochs. A seed that never gets there is marked not reached and counts what it spent (at least
1.0: no better than the grid). Figure: the mean fraction over the seeds. Target: <= 0.25 (and every seed
reaches the grid's best). Every study runs through tuner's own runner (``run_study``) on an SQLite store.

    .venv/bin/python benchmarks/search_efficiency.py            # the figure (20-40 min on 2 quiet CPU cores)
    .venv/bin/python benchmarks/search_efficiency.py --quick    # a check: 2 epochs, 4 batches, seed 0

With ``--keep-store DIR`` the store stays in DIR, and the same command resumes an interrupted run
(studies already finished are read back; the interrupted one continues through tuner's own resume).

Writes benchmarks/results/search_efficiency.json (``--quick``: search_efficiency_quick.json; a side
experiment names its own with ``--result-name``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from _common import write_result

from tuner import StudySpec, load_study_file, run_study

logger = logging.getLogger("benchmarks.search_efficiency")

#: --quick: a check that everything runs, not a figure (the result file says which settings ran)
QUICK = {"max_epochs": 2, "seeds": [0], "trainer": {"limit_train_batches": 4}}


def epoch_metrics(trial: optuna.trial.FrozenTrial, metric: str) -> list[float]:
    """The metric of every epoch the trial ran, in order (its ``epoch/NNN`` records, else its reports)."""
    records = sorted((key, value) for key, value in trial.user_attrs.items() if key.startswith("epoch/"))
    if records:
        return [float(value.get(metric, math.nan)) for _, value in records]
    return [float(trial.intermediate_values[step]) for step in sorted(trial.intermediate_values)]


def trial_rows(study: optuna.Study, metric: str) -> list[dict[str, Any]]:
    """One row per trial, in trial order: name, state, parameters, per-epoch metric, best, seconds.

    A retry that resumed another trial's checkpoint carries that trial's epoch records: ``metric`` lists
    only the epochs it ran itself (``inherited`` says how many it took over), so no epoch counts twice.
    """
    rows = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if trial.state == optuna.trial.TrialState.WAITING:  # queued, never started (the study stopped first)
            continue
        resumed = trial.user_attrs.get("resumed_from") or {}
        inherited = int(resumed["epoch"]) + 1 if "epoch" in resumed else 0
        values = epoch_metrics(trial, metric)[inherited:]
        finite = [v for v in values if not math.isnan(v)]
        ran = (
            (trial.datetime_complete - trial.datetime_start).total_seconds()
            if trial.datetime_complete and trial.datetime_start
            else None
        )
        rows.append(
            {
                "trial": trial.number,
                "name": trial.user_attrs.get("warm_start"),
                "state": trial.state.name,
                "params": trial.params,
                "seed": trial.user_attrs.get("seed"),
                "epochs": len(values),
                "inherited": inherited or None,
                metric: [round(v, 4) for v in values],
                f"best_{metric}": round(min(finite), 4) if finite else None,
                "seconds": None if ran is None else round(ran, 1),
            }
        )
    return rows


def epochs_to_reach(rows: list[dict[str, Any]], metric: str, goal: float) -> tuple[int, bool, int | None, int | None]:
    """(epochs counted, reached, trial, epoch): epochs in trial order up to the first one with metric <= goal."""
    spent = 0
    for row in rows:
        for epoch, value in enumerate(row[metric]):
            spent += 1
            if value <= goal:
                return spent, True, row["trial"], epoch
    return spent, False, None, None


def timed_study(
    spec: StudySpec,
    url: str,
    workdir: str,
    done: Callable[[optuna.Study], bool] = lambda study: False,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> tuple[optuna.Study, dict[str, Any]]:
    """Run (or, in a kept store, resume unless ``done``) ``spec``; its wall time here and its trials' time in the
    store."""
    resumed = spec.name in optuna.get_all_study_names(url)
    started = time.perf_counter()
    if resumed and done(stored := optuna.load_study(study_name=spec.name, storage=url)):
        study = stored
    else:
        study = run_study(spec, url, workdir=workdir, callbacks=callbacks)
    wall = time.perf_counter() - started
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    in_trials = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    return study, {"resumed": resumed, "run_study_seconds": round(wall, 1), "trial_seconds": round(in_trials, 1)}


def describe(component: Any) -> str:
    """``TypeName(option=value, ...)`` of a sampler or pruner, from its scalar settings."""
    settings = {
        name.lstrip("_"): value
        for name, value in vars(component).items()
        if isinstance(value, (bool, int, float, str)) or value is None
    }
    return f"{type(component).__name__}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"


def stop_when_done(goal: float, budget: int, metric: str) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """A run_study callback: stop the study once an epoch reached ``goal`` or it spent ``budget`` epochs."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if is_done(trial_rows(study, metric), metric, goal, budget):
            study.stop()

    return callback


def is_done(rows: list[dict[str, Any]], metric: str, goal: float, budget: int) -> bool:
    spent, reached, _, _ = epochs_to_reach(rows, metric, goal)
    return reached or spent >= budget


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Epochs a seeded TPE + pruning study spends to reach the best DER of the eight hand-run "
        "settings, as a fraction of the grid's epochs (mean over seeds; target <= 0.25).",
        epilog="Every default comes from --study (objective, data, model options, search space, grid, "
        "max_epochs) or from --tpe-study (pruner, prune_on and TPE startup trials of a study without warm start).",
    )
    parser.add_argument(
        "--study",
        default="studies/pyannote_hand_grid.py",
        help="study file giving objective, data, options, search space, warm-start grid and max_epochs",
    )
    parser.add_argument(
        "--tpe-study",
        default="studies/pyannote_optim.py",
        help="study file whose pruner, prune_on and TPESampler n_startup_trials the TPE studies use "
        "(default: studies/pyannote_optim.py, the product's study without warm start)",
    )
    parser.add_argument("--max-epochs", type=int, help="epochs per trial, grid and TPE alike (default: the study's, 6)")
    parser.add_argument("--seeds", type=int, nargs="+", help="TPE studies to run, one per seed (default: 0 1 2)")
    parser.add_argument(
        "--epoch-budget",
        type=int,
        help="epochs each TPE study may spend before it counts as not reached (default: the grid's)",
    )
    parser.add_argument(
        "--grid-weight-decay",
        type=float,
        default=0.0,
        help=(
            "weight decay of the grid settings, which give none "
            "(default 0.0: Adam/RAdam/NAdam's and pyannote's default)"
        ),
    )
    parser.add_argument(
        "--tpe-startup-trials", type=int, help="TPESampler n_startup_trials (default: that of --tpe-study's sampler)"
    )
    parser.add_argument(
        "--workdir", default="storage", help="where the demo corpus lives or is generated (default: storage)"
    )
    parser.add_argument(
        "--keep-store",
        type=Path,
        help="keep the SQLite store in this folder instead of a temporary one; run again with the same "
        "folder to resume (finished studies are read back, an interrupted one continues)",
    )
    parser.add_argument(
        "--result-name",
        help="name of the result file in benchmarks/results (default: search_efficiency, "
        "with --quick search_efficiency_quick); a side experiment names its own",
    )
    parser.add_argument(
        "--note", default="", help="a remark recorded in the result file (e.g. why a study was resumed)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"a check, not the figure: {QUICK} (writes search_efficiency_quick.json)"
    )
    parser.add_argument("--target", type=float, default=0.25, help="target fraction (default 0.25)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    base = load_study_file(args.study)
    if base.warm_start is None:
        parser.error(f"{args.study} has no warm_start grid to compare with")
    trainer = dict(base.trainer)
    max_epochs = args.max_epochs or base.max_epochs
    seeds = args.seeds if args.seeds is not None else [0, 1, 2]
    if args.quick:
        max_epochs = args.max_epochs or QUICK["max_epochs"]
        seeds = args.seeds if args.seeds is not None else QUICK["seeds"]
        trainer.update(QUICK["trainer"])
    base = dataclasses.replace(base, max_epochs=max_epochs, trainer=trainer)
    product = load_study_file(args.tpe_study)
    pruner = product.pruner  # None: run_study's default, as for the product's study
    startup = args.tpe_startup_trials or getattr(product.sampler, "_n_startup_trials", None)
    if startup is None:
        parser.error(f"{args.tpe_study} has no TPESampler to take n_startup_trials from: pass --tpe-startup-trials")

    # the grid: every setting for max_epochs epochs (no pruning), weight decay fixed
    from tuner.runner import prepare_objective, pruning_value
    from tuner.study import load_warm_start

    objective, space = prepare_objective(base, args.workdir)
    grid_entries = load_warm_start(base, space)
    metric = objective.metric
    prune_on = pruning_value(product, objective)
    grid_spec = dataclasses.replace(
        base,
        name="hand_grid",
        fixed={**base.fixed, "weight_decay": args.grid_weight_decay},
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
        n_trials=len(grid_entries),
        seed=0,
        prune_on=None,  # no pruner: what it would read is moot
    )
    with tempfile.TemporaryDirectory(prefix="tuner-search-efficiency-") as tmp:
        store_dir = args.keep_store or Path(tmp)
        store_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{store_dir.resolve()}/search_efficiency.db"
        logger.info("grid: %d settings x %d epochs (store %s)", len(grid_entries), max_epochs, url)
        grid_study, grid_times = timed_study(grid_spec, url, args.workdir)
        grid_rows = trial_rows(grid_study, metric)
        unfinished = [r for r in grid_rows if r["state"] != "COMPLETE"]
        if unfinished or len(grid_rows) != len(grid_entries):
            raise SystemExit(f"the grid did not complete all {len(grid_entries)} settings: {unfinished}")
        grid_raw_best = min(min(v for v in r[metric] if not math.isnan(v)) for r in grid_rows)
        grid_epochs = sum(r["epochs"] for r in grid_rows)
        best_row = min(grid_rows, key=lambda r: r[f"best_{metric}"])
        logger.info(
            "grid best %s=%.4f (%s), %d epochs, %s", metric, grid_raw_best, best_row["name"], grid_epochs, grid_times
        )

        budget = args.epoch_budget or grid_epochs
        per_seed = []
        for seed in seeds:
            spec = dataclasses.replace(
                base,
                name=f"tpe_seed{seed}",
                warm_start=None,
                seed=seed,
                prune_on=prune_on,
                pruner=pruner,
                n_trials=budget,  # at least an epoch each: the epoch budget ends the study first
                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
            )
            logger.info(
                "TPE seed %d: trials of up to %d epochs until %s <= %.4f or %d epochs spent",
                seed,
                max_epochs,
                metric,
                grid_raw_best,
                budget,
            )
            study, times = timed_study(
                spec,
                url,
                args.workdir,
                done=lambda s: is_done(trial_rows(s, metric), metric, grid_raw_best, budget),
                callbacks=[stop_when_done(grid_raw_best, budget, metric)],
            )
            rows = trial_rows(study, metric)
            spent, reached, trial, epoch = epochs_to_reach(rows, metric, grid_raw_best)
            finite = [r[f"best_{metric}"] for r in rows if r[f"best_{metric}"] is not None]
            per_seed.append(
                {
                    "seed": seed,
                    # not reached: no better than the grid (it spent the budget; at least the grid's epochs)
                    "fraction": round((spent if reached else max(spent, grid_epochs)) / grid_epochs, 4),
                    "epochs_counted": spent,
                    "reached": reached,
                    "reached_at": None if not reached else {"trial": trial, "epoch": epoch},
                    f"best_{metric}": min(finite) if finite else None,
                    "epochs_total": sum(r["epochs"] for r in rows),
                    "trials": len(rows),
                    "pruned": sum(r["state"] == "PRUNED" for r in rows),
                    "failed": sum(r["state"] == "FAIL" for r in rows),
                    **times,
                    "trial_rows": rows,
                }
            )
            logger.info(
                "TPE seed %d: %s after %d epochs (fraction %.3f), best %s=%.4f, %s",
                seed,
                "reached" if reached else "NOT reached",
                spent,
                spent / grid_epochs,
                metric,
                per_seed[-1][f"best_{metric}"] or math.nan,
                times,
            )

    figure = round(statistics.fmean(s["fraction"] for s in per_seed), 4)
    all_reached = all(s["reached"] for s in per_seed)
    write_result(
        args.result_name or ("search_efficiency_quick" if args.quick else "search_efficiency"),
        figure,
        args.target,
        all_reached and figure <= args.target,
        "fraction of the grid's epochs",
        all_reached=all_reached,
        grid={
            f"best_{metric}": round(grid_raw_best, 4),
            "best_setting": best_row["name"],
            "epochs": grid_epochs,
            **grid_times,
            "settings": {r["name"]: r[f"best_{metric}"] for r in grid_rows},
            "trial_rows": grid_rows,
        },
        seeds=[{k: v for k, v in s.items() if k != "trial_rows"} for s in per_seed],
        tpe_trials={str(s["seed"]): s["trial_rows"] for s in per_seed},
        settings={
            "quick": args.quick,
            "study": args.study,
            "objective": base.objective,
            "data": objective.describe()["data"],
            "options": objective.describe()["options"],
            "search_space": str(base.search_space),
            "grid": str(base.warm_start),
            "grid_weight_decay": args.grid_weight_decay,
            "max_epochs": max_epochs,
            "trainer": trainer,
            "tpe_study": args.tpe_study,
            "epoch_budget": budget,
            "sampler": f"TPESampler(seed=<seed>, n_startup_trials={startup})",
            "pruner": describe(pruner) if pruner is not None else "tuner's default pruner",
            "prune_on": prune_on,
            "training_seeds": "trial k of a study trains with the study's seed + k (grid: seed 0)",
        },
        trial_seconds_total=round(grid_times["trial_seconds"] + sum(s["trial_seconds"] for s in per_seed), 1),
        note=args.note,
    )


if __name__ == "__main__":
    main()
