"""Benchmark: completed trials per hour with 1, 2 and 4 `tuner run` workers on one PostgreSQL study.

The trials' work does not compete for this machine's 2 cores: each trial is the synthetic objective (a
small MLP, real per-epoch reports and checkpoints) whose epochs sleep a fixed time standing in for GPU
work, so the figure measures the store and the coordination of the workers. A throwaway PostgreSQL server
(tuner.testing.postgres) holds one fresh database per worker count; the k workers are started at once on
one study with the same trial budget. Trials per hour are counted over the store's window (first trial
started to last trial completed); the wall clock including process start-up is reported beside it.
Figure: trials/hour of 4 workers / trials/hour of 1. Target: >= 3.6.

    .venv/bin/python benchmarks/workers.py [--trials 64] [--epochs 3] [--sleep 2] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from _common import write_result

from tuner.testing.postgres import LocalPostgres

logger = logging.getLogger("benchmarks.workers")

REPO = Path(__file__).resolve().parents[1]
TUNER = Path(sys.executable).parent / "tuner"
#: a small problem: an epoch's compute is a few milliseconds besides its sleep
OPTIONS = {"n_train": 256, "n_val": 128, "n_features": 16, "hidden": [32, 32, 32]}

STUDY = """\
import optuna

from tuner import StudySpec

study = StudySpec(
    name="workers", objective="synthetic", data=None, search_space={space!r},
    options={options!r}, fixed={{"batch_size": 128}},
    pruner=optuna.pruners.NopPruner(),  # every trial runs all its epochs: the same work per trial
    n_trials={trials}, max_epochs={epochs}, seed=0,
)
"""


def run_workers(server: LocalPostgres, k: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Start ``k`` workers at once on a fresh database; the study read back as counts and rates."""
    url = server.new_database(f"workers_{k}")
    study_file = folder / f"workers_{k}.py"
    options = {**OPTIONS, "sleep_per_epoch": args.sleep}
    space = str(REPO / "search_spaces" / "synthetic.yaml")
    study_file.write_text(STUDY.format(space=space, options=options, trials=args.trials, epochs=args.epochs))
    env = {
        **os.environ,
        "PYANNOTE_METRICS_ENABLED": "false",
        "TUNER_ARTIFACTS": str(folder / f"artifacts_{k}"),
        "OMP_NUM_THREADS": "1",  # one thread per worker, as one worker per GPU would use
    }
    logs = [folder / f"workers_{k}.{i}.log" for i in range(k)]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    processes = []
    for log in logs:
        with open(log, "wb") as out:
            processes.append(
                subprocess.Popen(
                    [str(TUNER), "run", str(study_file), "--storage", url],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=folder,
                )
            )
    codes = [p.wait() for p in processes]
    wall = time.perf_counter() - started
    for code, log in zip(codes, logs):
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"a worker of {k} exited with status {code}; the end of {log}:\n{tail}")

    trials = optuna.load_study(study_name="workers", storage=url).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    states = {state.name.lower(): sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
    window = (max(t.datetime_complete for t in complete) - min(t.datetime_start for t in trials)).total_seconds()
    per_trial = sorted((t.datetime_complete - t.datetime_start).total_seconds() for t in complete)
    result = {
        "workers": k,
        "budget": args.trials,
        "trials": len(trials),
        **{state: n for state, n in states.items() if n},
        "overshoot": len(complete) - args.trials,
        "store_window_s": round(window, 1),
        "trials_per_hour": round(len(complete) / window * 3600, 1),
        "wall_s": round(wall, 1),
        "wall_trials_per_hour": round(len(complete) / wall * 3600, 1),
        "median_trial_s": round(per_trial[len(per_trial) // 2], 2),  # of which epochs x sleep is sleep
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],  # 1-min, before and after: other jobs
    }
    logger.info("%d worker(s): %s", k, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64, help="trial budget of each study (default 64)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds of sleep per epoch (default 2)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker counts (default 1 2 4)")
    parser.add_argument("--target", type=float, default=3.6, help="target speed-up of the most workers over 1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if 1 not in args.workers:
        parser.error("--workers must include 1 (the figure is a ratio to one worker)")

    with LocalPostgres() as server, tempfile.TemporaryDirectory(prefix="tuner-workers-") as tmp:
        runs = {k: run_workers(server, k, args, Path(tmp)) for k in sorted(set(args.workers))}
        startup = server.startup_seconds
    most = max(runs)
    speedup = runs[most]["trials_per_hour"] / runs[1]["trials_per_hour"]
    write_result(
        "workers",
        round(speedup, 2),
        args.target,
        speedup >= args.target,
        f"x trials/hour of {most} workers vs 1",
        per_workers=list(runs.values()),
        speedups={k: round(r["trials_per_hour"] / runs[1]["trials_per_hour"], 2) for k, r in runs.items()},
        wall_speedups={
            k: round(r["wall_trials_per_hour"] / runs[1]["wall_trials_per_hour"], 2) for k, r in runs.items()
        },
        trial_work=(
            f"{args.epochs} epochs x {args.sleep} s sleep + a {OPTIONS['hidden']} MLP on {OPTIONS['n_train']} samples"
        ),
        postgres_startup_s=round(startup or 0.0, 2),
    )


if __name__ == "__main__":
    main()
