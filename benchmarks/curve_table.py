"""Build the recorded-curve table: every configuration of the default search space, trained in full.

On the demo corpus, pyannote/segmentation-3.0 is fine-tuned through the real objective for every
combination of ``search_spaces/pyannote.yaml`` (optimizer x lr x schedule x batch size x unfrozen layers)
and for the eight hand-run settings (``search_spaces/hand_grid.yaml``, whole model trained), each for
``--epochs`` epochs without pruning. Every epoch's DER, its components, the losses and seconds are kept.

The table is itself a tuner study (every configuration enqueued once, no pruning) in its own store, so a
run can stop at any time and the next one resumes; ``--limit N`` runs at most N more configurations. After
each configuration the finished ones are written to ``benchmarks/data/pyannote_curves.json``, the compact
table ``benchmarks/search_strategies.py`` replays (hand-run settings first, then the grid in a fixed
shuffled order, so a partial table already holds the yardstick and an even spread of the rest). The file is
the durable record: a configuration it already holds in full is not trained again (a lost or new store
resumes from it), and rows it holds beyond the current grid (an earlier, wider grid) are kept.

    .venv/bin/python benchmarks/curve_table.py                # build or resume, then write the table
    .venv/bin/python benchmarks/curve_table.py --limit 10     # ten more configurations this time
    .venv/bin/python benchmarks/curve_table.py --export-only  # write the table from the store
    .venv/bin/python benchmarks/curve_table.py --repeats 2    # 2 more seeds for the eight + the 8 best

``--repeats N`` trains again, with seeds ``REPEAT_SEED + i`` (the same N for every configuration: common
random numbers), the eight hand-run settings (the first is pyannote's default) and the 8 best configurations of
the grid by their recorded value; each finished run is added to the table's ``repeats`` at once, so a stopped
run resumes where it was. The table's own rows stay one run per configuration (what the replay samples).
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
from tuner.store.records import study_trials

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "benchmarks" / "data" / "pyannote_curves.json"
#: the table's configuration keys (weight decay follows the optimizer: torch's defaults)
KEYS = ("optimizer", "lr", "schedule", "batch_size", "unfrozen_layers")
#: per-epoch values kept, in this order
COLUMNS = ("DER", "Confusion", "FalseAlarm", "Miss", "loss/train", "loss/val", "seconds")
#: the hand runs trained the whole model (every block)
HAND_UNFROZEN = 3
#: repeated runs use seeds REPEAT_SEED, REPEAT_SEED + 1, ...: never a table row's (its trial number)
REPEAT_SEED = 1000
#: how many of the grid's best configurations are repeated, beside the eight hand-run settings
REPEAT_BEST = 8


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


def recorded(path: Path, epochs: int) -> list[dict[str, Any]]:
    """The rows of the table file at ``path`` that hold all ``epochs`` epochs (none if there is no file)."""
    if not path.exists():
        return []
    return [row for row in json.loads(path.read_text())["rows"] if len(row["epochs"]) >= epochs]


def _key(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(params[k] for k in KEYS)


def missing(done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The configurations not among the rows ``done``."""
    have = {_key(row["params"]) for row in done}
    return [e for e in configurations() if _key(e) not in have]


def spec(epochs: int, done: list[dict[str, Any]]) -> StudySpec:
    """The table study: every configuration not yet in ``done`` (the rows already recorded), enqueued."""
    entries = missing(done)
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


def export(storage: str, epochs: int, out: Path = TABLE) -> dict[str, Any]:
    """Write the rows already in ``out`` and the finished configurations of the table study to ``out``
    (compact JSON, in the order of :func:`configurations`, then rows of an earlier grid); returns the table."""
    previous = json.loads(out.read_text()) if out.exists() else {}
    try:
        study = optuna.load_study(study_name="pyannote_curve_table", storage=storage)
    except KeyError:  # nothing trained in this store: the file holds every row there is
        if not previous:
            raise SystemExit(f"no table study in {storage} and no {out}: run without --export-only") from None
        return previous
    record, trials = study_trials(study)
    rows = list(recorded(out, epochs))
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
    order = {_key(e): i for i, e in enumerate(configurations())}
    unique = {_key(row["params"]): row for row in rows}
    rows = sorted(unique.values(), key=lambda row: order.get(_key(row["params"]), len(order)))
    source = dict(record.pretrained_source or {})
    previous_repeats = previous.get("repeats", [])
    table = {
        "objective": record.objective,
        "data": "demo",
        "pretrained": record.pretrained,
        "pretrained_sha256": next(
            (f["sha256"] for f in source.get("files", []) if f["file"] == "pytorch_model.bin"),
            previous.get("pretrained_sha256"),
        ),
        "metric": record.metric,
        "direction": record.direction,
        "max_epochs": record.max_epochs,
        "keys": list(KEYS),
        "columns": list(COLUMNS),
        "dimensions": {k: sorted({r["params"][k] for r in rows}, key=str) for k in KEYS},
        "baseline": {k: _round(v) for k, v in record.baseline.items()} or previous.get("baseline", {}),
        "configurations": len(rows),
        "planned": len(configurations()),
        "planned_recorded": sum(_key(row["params"]) in order for row in rows),
        "command": ".venv/bin/python benchmarks/curve_table.py",
        "machine": machine(),
        "updated": time.strftime("%Y-%m-%d %H:%M"),
        "rows": rows,
        "repeats": previous_repeats,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, separators=(",", ":")) + "\n")
    return table


def repeat_plan(table: dict[str, Any], repeats: int) -> list[tuple[dict[str, Any], int]]:
    """The (row, seed) runs ``--repeats`` asks for that the table's ``repeats`` lacks: every chosen
    configuration's first repeat seed, then every second one, so a partial run already covers them all."""
    order = {_key(e): i for i, e in enumerate(configurations())}
    hand = [row for row in table["rows"] if row.get("name") and order.get(_key(row["params"]), 99) < 8]
    grid = [row for row in table["rows"] if _key(row["params"]) in order and row not in hand]
    sign = 1 if table["direction"] == "minimize" else -1
    best = sorted(grid, key=lambda row: sign * _row_value(row))[:REPEAT_BEST]
    have = {(_key(r["params"]), r["seed"]) for r in table.get("repeats", [])}
    return [
        (row, REPEAT_SEED + i)
        for i in range(repeats)
        for row in hand + best
        if (_key(row["params"]), REPEAT_SEED + i) not in have
    ]


def _row_value(row: dict[str, Any]) -> float:
    """A row's value as its trial's: the best epoch's DER (the table is for minimized DER)."""
    return min(epoch[0] for epoch in row["epochs"])


def run_repeats(table: dict[str, Any], repeats: int, epochs: int, device: str | None, out: Path = TABLE) -> None:
    """Train the runs :func:`repeat_plan` lists through the objective's own training (no pruning, ``epochs``
    each), adding each to ``out``'s ``repeats`` as it finishes."""
    from tuner.runner import prepare_objective
    from tuner.search_space import TrialConfig
    from tuner.training.fit import fit

    plan = repeat_plan(table, repeats)
    logging.info("%d repeated runs to train", len(plan))
    if not plan:
        return
    objective, _ = prepare_objective(spec(epochs, []), workdir=REPO / "storage")  # the table study's objective
    for done, (row, seed) in enumerate(plan, 1):
        params = dict(row["params"])
        weight_decay = 1e-2 if params["optimizer"] == "AdamW" else 0.0  # torch's defaults, as in the space
        config = TrialConfig.from_params({**params, "weight_decay": weight_decay})
        result = fit(objective, config, seed, epochs, device=device)
        current = json.loads(out.read_text())
        current.setdefault("repeats", []).append(
            {
                "params": params,
                "name": row.get("name"),
                "seed": seed,
                "epochs": [[_round(result.history[e].get(c)) for c in COLUMNS] for e in sorted(result.history)],
            }
        )
        out.write_text(json.dumps(current, separators=(",", ":")) + "\n")
        logging.info("repeat %d/%d done: %s seed %d", done, len(plan), row.get("name") or params, seed)


def _round(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, (int, float)) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=f"sqlite:///{REPO / 'storage' / 'curve_table.db'}")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per configuration (default 8)")
    parser.add_argument("--limit", type=int, help="run at most this many configurations now")
    parser.add_argument("--export-only", action="store_true", help="only write the table from the store")
    parser.add_argument("--device", help="auto (default), cpu, cuda, a GPU index")
    parser.add_argument(
        "--repeats", type=int, default=0, help="then N more seeds of the eight hand-run settings and the 8 best"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.export_only:
        done = {"n": 0}

        def after_each(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            export(args.storage, args.epochs)  # nothing finished is lost if the run stops
            done["n"] += 1
            if args.limit is not None and done["n"] >= args.limit:
                study.stop()

        done_rows = recorded(TABLE, args.epochs)
        if missing(done_rows):
            study_spec = spec(args.epochs, done_rows)
            run_study(study_spec, args.storage, workdir=REPO / "storage", show_progress=False,
                      device=args.device, callbacks=[after_each])  # fmt: skip
    table = export(args.storage, args.epochs)
    if args.repeats:
        run_repeats(table, args.repeats, args.epochs, args.device)
        table = json.loads(TABLE.read_text())
        print(f"{len(table['repeats'])} repeated runs in {TABLE}")
    print(
        f"{table['planned_recorded']} of {table['planned']} planned configurations (and "
        f"{table['configurations'] - table['planned_recorded']} of an earlier grid) in {TABLE} ({command()})"
    )


if __name__ == "__main__":
    main()
