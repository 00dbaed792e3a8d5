"""Benchmark: the `make demo` study end to end (wall time, trials, pruning, best DER vs its starting point).

Runs `studies/pyannote_optim.py` on the demo corpus into a fresh SQLite store as `tuner run` does (the search,
then the confirmation the study file declares), then `tuner evaluate` of it on the test split (not part of
`make demo`: timed apart), and writes benchmarks/results/demo_study.json: minutes of each, the confirmed
ranking and the paired test interval. Target: search and confirmation finish within 15 minutes on 2 CPU
cores and the best DER is below its baseline's (segmentation-3.0 before fine-tuning, for the default study).

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
    parser.add_argument("--storage", help="a store without the study, kept afterwards (default: a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    spec = load_study_file(args.study)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.storage or f"sqlite:///{tmp}/bench.db"
        started = time.perf_counter()
        study = run_study(spec, url, workdir="storage", show_progress=False, callbacks=[DashboardPublisher()])
        minutes = (time.perf_counter() - started) / 60
        states = [t.state for t in study.trials]
        record = StudyRecord.of(study)
        baseline, label = record.baseline_value, record.baseline_label
        best = study.best_value
        epochs = sum(t.user_attrs.get("epochs_run", 0) for t in study.trials)
        search_minutes, ranking, evaluation, evaluate_minutes = minutes, None, None, None
        if spec.confirm:
            from tuner.confirm import confirm_study
            from tuner.evaluate import evaluate_study
            from tuner.reports.tables import ranking_rows

            top, seeds = int(spec.confirm.get("top", 2)), int(spec.confirm.get("seeds", 2))
            confirmed = confirm_study(spec, url, top=top, seeds=seeds, workdir="storage", show_progress=False)
            minutes = (time.perf_counter() - started) / 60
            ranking = [{k: _plain(v) for k, v in row.items()} for row in ranking_rows(confirmed)]
            started = time.perf_counter()
            evaluation = evaluate_study(spec.name, url, workdir="storage")
            evaluate_minutes = round((time.perf_counter() - started) / 60, 2)
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
        search_minutes=round(search_minutes, 2),
        confirm=spec.confirm,
        confirmed_ranking=ranking,
        evaluate_minutes=evaluate_minutes,
        evaluate={k: evaluation[k] for k in ("best", "baseline", "paired", "runs") if k in evaluation}
        if evaluation
        else None,
    )


def _plain(value: object) -> object:
    return round(value, 5) if isinstance(value, float) else value


if __name__ == "__main__":
    main()
