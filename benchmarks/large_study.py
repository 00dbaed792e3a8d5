"""Benchmark: a study of 10,000 trials reported, listed, exported and browsed in seconds, and a worker's
store cost per trial the same at 10,000 trials as at 100.

Stores: a SQLite file and a database on a throwaway PostgreSQL server (tuner.testing.postgres), each holding
one study built by ``tuner.testing.large_study.build_study``: trials recorded by tuner's own record writers
without training (six searched parameters; 70 % pruned after 2-4 epochs, the rest 10 epochs; ``loss/val``
reported every epoch), with what workers leave for optuna-dashboard (trial notes, study note, figures).
For 1,000 and 10,000 trials, each command runs as a user runs it, in a fresh process (median of
``--repeats``):

- ``report_s``: ``tuner report STUDY --storage URL --out DIR`` (md, csv, epochs csv, html);
- ``studies_s``: ``tuner studies --storage URL``;
- ``export_s``: ``tuner export STUDY --storage URL --out FILE``;
- ``dashboard_first_load_s``: ``tuner dashboard --storage URL`` is started; once it answers, the two
  requests the browser makes to open the study (``/api/studies``, then ``/api/studies/<id>?after=0``)
  are timed together, on that fresh server.

Per-trial store cost: a worker process runs ``run_study`` on the study (1 worker; ``--worker-trials`` more
trials, a random sampler and no pruner, so that neither's own computation is counted) with training
replaced by a stand-in that drives tuner's own per-epoch callbacks (``TrialReporter``: the epoch record,
Optuna's report and pruning check; ``EpochCheckpoint``: a 4 kB checkpoint to the artifact folder and its
record) through ``--epochs`` epochs. Everything else is the real worker: the queue, ask (heartbeat, stale
trial check), suggest, the trial's records, tell, the dashboard note, the garbage collection after each
trial. The cost of a trial is the time between two consecutive trials' callbacks (median, the first left
out: it includes the worker's first read of the study); ``per_trial_overhead_ratio`` is that at 10,000
trials over that at 100.

Targets (10,000 trials, 2 cores): report <= 10 s (the figure), studies <= 1 s, export <= 1 s, dashboard
first load <= 3 s, per-trial ratio <= 1.5; ``meets_target`` is all of them on SQLite (PostgreSQL beside).

    .venv/bin/python benchmarks/large_study.py                  # about 8 minutes on 2 cores
    .venv/bin/python benchmarks/large_study.py --quick          # 100 and 1,000 trials, 1 repeat

Writes benchmarks/results/large_study.json (``--quick``: large_study_quick.json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _common import write_result

logger = logging.getLogger("benchmarks.large_study")

BIN = Path(sys.executable).parent
STUDY = "large"
TARGETS = {
    "report_s": 10.0,
    "studies_s": 1.0,
    "export_s": 1.0,
    "dashboard_first_load_s": 3.0,
    "per_trial_overhead_ratio": 1.5,
}


# ------------------------------------------------------------------------------------------ commands


def _timed(argv: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYANNOTE_METRICS_ENABLED": "false", "COLUMNS": "200"}
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dashboard_first_load(url: str, cwd: Path) -> tuple[float, int]:
    """Seconds for the browser's first two requests on a fresh `tuner dashboard`, and the bytes they got."""
    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "tuner"), "dashboard", "--storage", url, "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/meta", timeout=5) as response:
                    response.read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tuner dashboard did not start") from None
                time.sleep(0.1)
        started = time.perf_counter()
        with urllib.request.urlopen(f"{base}/api/studies", timeout=600) as response:
            listing = response.read()
        study_id = json.loads(listing)["study_summaries"][0]["study_id"]
        with urllib.request.urlopen(f"{base}/api/studies/{study_id}?after=0", timeout=600) as response:
            detail = response.read()
        seconds = time.perf_counter() - started
        trials = len(json.loads(detail)["trials"])
        if trials == 0:
            raise RuntimeError("the dashboard returned no trials")
        return seconds, len(listing) + len(detail)
    finally:
        server.terminate()
        server.wait(timeout=30)


def measure_commands(url: str, repeats: int, work: Path) -> dict[str, Any]:
    """report, studies, export and the dashboard's first load on the store at ``url`` (medians)."""
    out = work / "reports"
    times: dict[str, list[float]] = {key: [] for key in ("report_s", "studies_s", "export_s", "dashboard_first_load_s")}
    sizes: dict[str, int] = {}
    for _ in range(repeats):
        times["report_s"].append(
            _timed([str(BIN / "tuner"), "report", STUDY, "--storage", url, "--out", str(out)], work)
        )
        times["studies_s"].append(_timed([str(BIN / "tuner"), "studies", "--storage", url], work))
        times["export_s"].append(
            _timed([str(BIN / "tuner"), "export", STUDY, "--storage", url, "--out", str(work / "best.yaml")], work)
        )
        seconds, size = dashboard_first_load(url, work)
        times["dashboard_first_load_s"].append(seconds)
        sizes["dashboard_response_bytes"] = size
    for name in ("md", "csv", "epochs.csv", "html"):
        sizes[f"report_{name.replace('.', '_')}_bytes"] = (out / f"{STUDY}.{name}").stat().st_size
    result: dict[str, Any] = {key: round(statistics.median(values), 3) for key, values in times.items()}
    result["runs"] = {key: [round(v, 3) for v in values] for key, values in times.items()}
    result.update(sizes)
    return result


# ------------------------------------------------------------------------------------------ the worker


def _stand_in_fit(epochs: int) -> Any:
    """A replacement for ``tuner.training.fit.fit`` that trains nothing but drives tuner's per-epoch callbacks
    (the trial's ``TrialReporter`` and the runner's ``EpochCheckpoint``) through ``epochs`` epochs of records
    shaped like real ones."""
    from tuner.testing.large_study import trial_records
    from tuner.training.fit import FitResult
    from tuner.training.reporting import TrialReporter

    def fit(objective: Any, config: Any, seed: int, max_epochs: int, *, trial: Any = None, callbacks: Any = (),
            prune_on: str | None = None, **_: Any) -> Any:  # fmt: skip
        # the records as the objective's epoch_metrics() would have made them from what Lightning logged
        recorded = SimpleNamespace(metric=objective.metric, direction=objective.direction, epoch_metrics=dict)
        reporter = TrialReporter(recorded, trial, prune_on=prune_on)
        values = config.as_dict()
        history = trial_records(trial.number, values, random.Random(seed), max_epochs, min(epochs, max_epochs))
        trainer = SimpleNamespace(
            sanity_checking=False,
            current_epoch=0,
            should_stop=False,
            max_epochs=max_epochs,
            optimizers=[SimpleNamespace(param_groups=[{"lr": values["lr"]}])],
            callback_metrics={},
            save_checkpoint=lambda path: Path(path).write_bytes(bytes(4096)),
        )
        module = SimpleNamespace()
        for epoch, record in enumerate(history):
            trainer.current_epoch = epoch
            reporter.on_train_epoch_start(trainer, module)
            trainer.callback_metrics = {k: v for k, v in record.items() if k not in ("lr", "seconds")}
            reporter.on_train_epoch_end(trainer, module)
            for callback in callbacks:
                callback.on_train_epoch_end(trainer, module)
            if trainer.should_stop:
                break
        info = {"parameters": 0, "trainable": 0, "device": "cpu"}
        return FitResult(reporter.history, reporter.best_epoch, reporter.pruned_at, info)

    return fit


def worker(url: str, trials: int, epochs: int, folder: Path) -> dict[str, Any]:
    """Run ``trials`` trials of the study at ``url`` as one worker (see the module docstring); their costs."""
    import optuna

    from tuner import StudySpec, runner
    from tuner.objectives.base import get_objective_class
    from tuner.reports.publish import DashboardPublisher
    from tuner.search_space import SearchSpace
    from tuner.testing.large_study import SEARCH_SPACE, STUDY_VALUES

    objective = get_objective_class(STUDY_VALUES["objective"])(None, workdir=folder)  # no data: nothing trains
    space = SearchSpace.from_dict(SEARCH_SPACE, source="tuner.testing.large_study")
    runner.prepare_objective = lambda spec, *_, **__: (objective, space)  # type: ignore[assignment]
    runner.fit = _stand_in_fit(epochs)  # type: ignore[assignment]
    spec = StudySpec(
        name=STUDY,
        objective=STUDY_VALUES["objective"],
        search_space=SEARCH_SPACE,
        data=None,
        sampler=optuna.samplers.RandomSampler(seed=1),
        pruner=optuna.pruners.NopPruner(),
        prune_on=STUDY_VALUES["prune_on"],
        max_epochs=10,
    )
    stamps: list[float] = []
    started = time.perf_counter()
    runner.run_study(
        spec,
        url,
        n_trials=trials,
        workdir=folder,
        show_progress=False,
        device="cpu",
        artifacts=folder / "artifacts",
        # as `tuner run`: the optuna-dashboard notes are part of a worker's store cost
        callbacks=[DashboardPublisher(), lambda study, trial: stamps.append(time.perf_counter())],
    )
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    return {
        "per_trial_s": round(statistics.median(intervals), 4),
        "per_trial_mean_s": round(statistics.mean(intervals), 4),
        "first_trial_s": round(stamps[0] - started, 3),
        "trials": len(stamps),
    }


def measure_worker(url: str, trials: int, epochs: int, work: Path) -> dict[str, Any]:
    """:func:`worker` in a fresh process (as a worker joining the study)."""
    env = {**os.environ, "PYANNOTE_METRICS_ENABLED": "false"}
    argv = [sys.executable, __file__, "--worker", url, "--worker-trials", str(trials), "--epochs", str(epochs)]
    done = subprocess.run([*argv, "--work", str(work)], env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"the worker failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ main


def measure_backend(
    name: str, new_url: Any, sizes: list[int], small: int, args: argparse.Namespace, work: Path
) -> dict:
    from tuner.testing.large_study import build_study

    result: dict[str, Any] = {"by_trials": {}, "per_trial": {}}
    for n in sizes:
        url = new_url(f"s{n}")
        started = time.perf_counter()
        build_study(url, STUDY, n, seed=0)
        built = time.perf_counter() - started
        logger.info("%s: built %d trials in %.1f s", name, n, built)
        folder = work / f"{name}_{n}"
        folder.mkdir()
        result["by_trials"][str(n)] = measure_commands(url, args.repeats, folder)
        result["by_trials"][str(n)]["build_s"] = round(built, 1)
        logger.info("%s, %d trials: %s", name, n, result["by_trials"][str(n)])
        if n == sizes[-1]:
            result["per_trial"][str(n)] = measure_worker(url, args.worker_trials, args.epochs, folder)
    url = new_url(f"w{small}")
    build_study(url, STUDY, small, seed=0)
    folder = work / f"{name}_w{small}"
    folder.mkdir()
    result["per_trial"][str(small)] = measure_worker(url, args.worker_trials, args.epochs, folder)
    large, base = result["per_trial"][str(sizes[-1])], result["per_trial"][str(small)]
    result["per_trial_overhead_ratio"] = round(large["per_trial_s"] / base["per_trial_s"], 3)
    logger.info("%s per trial: %s", name, result["per_trial"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 10000], help="study sizes to measure")
    parser.add_argument("--small", type=int, default=100, help="the study size the per-trial cost is compared with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker-trials", type=int, default=30, help="trials the worker runs at each size")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each of the worker's trials")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 trials, one repeat, 10 worker trials")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(worker(args.worker, args.worker_trials, args.epochs, args.work)))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.quick:
        args.trials, args.repeats, args.worker_trials = [100, 1000], 1, 10
    sizes = sorted(args.trials)
    measures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tuner-large-") as tmp:
        work = Path(tmp)
        if "sqlite" in args.backends:
            (work / "sqlite").mkdir()
            measures["sqlite"] = measure_backend(
                "sqlite", lambda n: f"sqlite:///{work / 'sqlite' / f'{n}.db'}", sizes, args.small, args, work
            )
        if "postgresql" in args.backends:
            from tuner.testing.postgres import LocalPostgres

            with LocalPostgres() as server:
                measures["postgresql"] = measure_backend(
                    "postgresql", server.new_database, sizes, args.small, args, work
                )
    largest = str(sizes[-1])

    def headline(backend: dict[str, Any]) -> dict[str, float]:
        at = backend["by_trials"][largest]
        values = {key: at[key] for key in ("report_s", "studies_s", "export_s", "dashboard_first_load_s")}
        return {**values, "per_trial_overhead_ratio": backend["per_trial_overhead_ratio"]}

    primary = "sqlite" if "sqlite" in measures else "postgresql"
    summary: dict[str, Any] = {**headline(measures[primary])}
    for backend in measures:
        if backend != primary:
            summary[backend] = headline(measures[backend])
    meets = {key: summary[key] <= target for key, target in TARGETS.items()}
    write_result(
        "large_study_quick" if args.quick else "large_study",
        figure=summary["report_s"],
        target=TARGETS["report_s"],
        meets_target=all(meets.values()),
        unit=f"s (tuner report at {largest} trials, {primary})",
        trials=sizes,
        measures=summary,
        targets=TARGETS,
        meets=meets,
        details=measures,
        worker={"trials": args.worker_trials, "epochs": args.epochs, "compared_with": args.small},
    )


if __name__ == "__main__":
    main()
