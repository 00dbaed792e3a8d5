"""Build the recorded-curve table: every configuration of the default search space, trained in full.

On the demo corpus, pyannote/segmentation-3.0 is fine-tuned through the real objective for every
combination of ``search_spaces/pyannote.yaml`` (optimizer x lr x schedule x batch size x unfrozen layers)
and for the eight hand-run settings (``search_spaces/hand_grid.yaml``, whole model trained), each for
``--epochs`` epochs without pruning. Every epoch's DER, its components, the losses and seconds are kept.

The table is itself a tuner study (every configuration enqueued once, no pruning) in its own store, so a
run can stop at any time and the next one resumes; ``--limit N`` runs at most N more configurations. After
each run the finished configurations are written to ``benchmarks/data/pyannote_curves.json``, the
compact table ``benchmarks/search_strategies.py`` replays (hand-run settings first, then the grid in a
fixed shuffled order, so a partial table already holds the yardstick and an even spread of the rest).

    .venv/bin/python benchmarks/curve_table.py                # build or resume, then write the table
    .venv/bin/python benchmarks/curve_table.py --limit 10     # ten more configurations this time
    .venv/bin/python benchmarks/curve_table.py --export-only  # write the table from the store
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import optuna
import yaml
from _common import command, machine

from tuner import StudySpec, run_study
from tuner.records import study_trials

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "benchmarks" / "data" / "pyannote_curves.json"
#: the table's configuration keys (weight decay follows the optimizer: torch's defaults)
KEYS = ("optimizer", "lr", "schedule", "batch_size", "unfrozen_layers")
#: per-epoch values kept, in this order
COLUMNS = ("DER", "Confusion", "FalseAlarm", "Miss", "loss/train", "loss/val", "seconds")
#: the hand runs trained the whole model (every block)
HAND_UNFROZEN = 3


def _space() -> dict[str, Any]:
    """The default search space, with the hand runs' batch sizes added (256 is not in it)."""
    space = yaml.safe_load((REPO / "search_spaces" / "pyannote.yaml").read_text())
    hand = yaml.safe_load((REPO / "search_spaces" / "hand_grid.yaml").read_text())
    batches = space["batch_size"]["choices"]
    space["batch_size"]["choices"] = sorted(set(batches) | {entry["batch_size"] for entry in hand})
    return space


def configurations() -> list[dict[str, Any]]:
    """The eight hand-run settings (with their names), then every grid point once, in a fixed shuffle."""
    grid_space = yaml.safe_load((REPO / "search_spaces" / "pyannote.yaml").read_text())
    hand = yaml.safe_load((REPO / "search_spaces" / "hand_grid.yaml").read_text())
    entries = [{**entry, "unfrozen_layers": HAND_UNFROZEN} for entry in hand]
    seen = {tuple(e[k] for k in KEYS) for e in entries}
    grid = [
        dict(zip(KEYS, values, strict=True)) for values in itertools.product(*(grid_space[k]["choices"] for k in KEYS))
    ]
    random.Random(0).shuffle(grid)
    entries += [g for g in grid if tuple(g[k] for k in KEYS) not in seen]
    return entries


def spec(epochs: int) -> StudySpec:
    entries = configurations()
    return StudySpec(
        name="pyannote_curve_table",
        objective="pyannote_segmentation",
        data="demo",
        pretrained="segmentation-3.0",
        search_space=_space(),
        warm_start=entries,
        sampler=optuna.samplers.RandomSampler(seed=0),  # draws nothing but AdamW's one weight decay
        pruner=optuna.pruners.NopPruner(),
        n_trials=len(entries),
        max_epochs=epochs,
        seed=0,
        description="Recorded-curve table: every configuration trained in full, for benchmarks/search_strategies.py",
    )


def export(storage: str, out: Path = TABLE) -> dict[str, Any]:
    """Write the finished configurations of the table study to ``out`` (compact JSON); returns the table."""
    study = optuna.load_study(study_name="pyannote_curve_table", storage=storage)
    record, trials = study_trials(study)
    rows = []
    for trial in trials:
        if trial.state != "COMPLETE":
            continue
        rows.append(
            {
                "params": {k: trial.config[k] for k in KEYS},
                "name": trial.warm_start,
                "seed": trial.seed,
                "epochs": [[_round(epoch.get(c)) for c in COLUMNS] for epoch in trial.epochs],
            }
        )
    source = dict(record.pretrained_source or {})
    table = {
        "objective": record.objective,
        "data": "demo",
        "pretrained": record.pretrained,
        "pretrained_sha256": next(
            (f["sha256"] for f in source.get("files", []) if f["file"] == "pytorch_model.bin"), None
        ),
        "metric": record.metric,
        "direction": record.direction,
        "max_epochs": record.max_epochs,
        "keys": list(KEYS),
        "columns": list(COLUMNS),
        "dimensions": {k: sorted({r["params"][k] for r in rows}, key=str) for k in KEYS},
        "baseline": {k: _round(v) for k, v in record.baseline.items()},
        "configurations": len(rows),
        "planned": len(configurations()),
        "command": ".venv/bin/python benchmarks/curve_table.py",
        "machine": machine(),
        "updated": time.strftime("%Y-%m-%d %H:%M"),
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, separators=(",", ":")) + "\n")
    return table


def _round(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, (int, float)) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=f"sqlite:///{REPO / 'storage' / 'curve_table.db'}")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per configuration (default 8)")
    parser.add_argument("--limit", type=int, help="run at most this many configurations now")
    parser.add_argument("--export-only", action="store_true", help="only write the table from the store")
    parser.add_argument("--device", help="auto (default), cpu, cuda, a GPU index")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.export_only:
        done = {"n": 0}

        def stop_after_limit(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            done["n"] += 1
            if args.limit is not None and done["n"] >= args.limit:
                study.stop()

        run_study(spec(args.epochs), args.storage, workdir=REPO / "storage", show_progress=False,
                  device=args.device, callbacks=[stop_after_limit])  # fmt: skip
    table = export(args.storage)
    print(f"{table['configurations']} of {table['planned']} configurations in {TABLE} ({command()})")


if __name__ == "__main__":
    main()
