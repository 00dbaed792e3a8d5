"""Benchmark: the `make demo` study end to end (wall time, trials, pruning, best DER vs its starting point).

Runs `studies/pyannote_optim.py` on the demo corpus into a fresh SQLite store and writes
benchmarks/results/demo_study.json. Target: the study finishes within 15 minutes on 2 CPU cores and its
best DER is below its baseline's (segmentation-3.0 before fine-tuning, for the default study).

    .venv/bin/python benchmarks/demo_study.py [--study studies/pyannote_optim.py]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import optuna
from _common import write_result

from tuner import load_study_file, run_study
from tuner.reports.publish import DashboardPublisher
from tuner.store.records import StudyRecord


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="studies/pyannote_optim.py")
    parser.add_argument("--target-minutes", type=float, default=15.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    spec = load_study_file(args.study)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        started = time.perf_counter()
        study = run_study(spec, url, workdir="storage", show_progress=False, callbacks=[DashboardPublisher()])
        minutes = (time.perf_counter() - started) / 60
        states = [t.state for t in study.trials]
        record = StudyRecord.of(study)
        baseline, label = record.baseline_value, record.baseline_label
        best = study.best_value
        epochs = sum(t.user_attrs.get("epochs_run", 0) for t in study.trials)
    write_result(
        "demo_study",
        round(minutes, 2),
        args.target_minutes,
        minutes <= args.target_minutes and best < baseline,
        "minutes",
        trials=len(states),
        complete=states.count(optuna.trial.TrialState.COMPLETE),
        pruned=states.count(optuna.trial.TrialState.PRUNED),
        epochs=epochs,
        best_DER=round(best, 4),
        baseline_DER=round(baseline, 4),
        baseline=label,
    )


if __name__ == "__main__":
    main()
