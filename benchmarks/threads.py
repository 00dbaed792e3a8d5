"""Benchmark: a worker's training step beside another job, with torch's default threads and with its share.

Two processes train the same PyanNet (segmentation-3.0's architecture, batches of ``--batch`` 10 s chunks of
random audio) on this machine: the measured worker times ``--steps`` training steps (forward, backward, Adam)
while a competitor trains without pause, as a second tuner worker or another job would. Three settings, each in
fresh processes:

* ``alone``: the worker alone, with torch's default threads (every core);
* ``default``: beside the competitor, both with torch's default threads (what tuner did before ``--threads``);
* ``shared``: beside the competitor, each with its share of the cores (cores / 2, at least 1: what tuner
  now sets by default when two workers run on one machine).

Each figure is the median step time over ``--repeats`` runs of ``--steps`` steps, with its range; the figure
is the slowdown beside the competitor with the default threads divided by that with the share.

    .venv/bin/python benchmarks/threads.py
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import write_result

REPO = Path(__file__).resolve().parents[1]


def step_times(threads: int, steps: int, batch: int, forever: bool = False) -> list[float]:
    """Seconds of each of ``steps`` PyanNet training steps with ``threads`` torch threads (or train until killed)."""
    import torch

    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    torch.set_num_threads(threads)
    from tuner import quiet

    with quiet.ignoring(quiet.TORCHCODEC_MISSING):
        from pyannote.audio.models.segmentation import PyanNet

    torch.manual_seed(0)
    model = PyanNet(sincnet={"stride": 10}, lstm={"hidden_size": 128, "num_layers": 4, "bidirectional": True,
                    "monolithic": True, "dropout": 0.0}, linear={"hidden_size": 128, "num_layers": 2})  # fmt: skip
    from pyannote.audio.core.task import Problem, Resolution, Specifications

    model.specifications = Specifications(
        problem=Problem.MULTI_LABEL_CLASSIFICATION, resolution=Resolution.FRAME, duration=10.0,
        classes=["a", "b", "c"],
    )  # fmt: skip
    model.build()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    waveforms = torch.randn(batch, 1, 160000)
    times: list[float] = []
    while forever or len(times) < steps:
        began = time.perf_counter()
        optimizer.zero_grad()
        model(waveforms).mean().backward()
        optimizer.step()
        times.append(time.perf_counter() - began)
    return times


def measure(setting: str, steps: int, batch: int) -> float:
    """Median step seconds of one run of ``setting`` (fresh processes)."""
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // 2) if setting == "shared" else cores
    competitor = None
    if setting != "alone":
        competitor = multiprocessing.get_context("spawn").Process(target=step_times, args=(threads, 0, batch, True))
        competitor.start()
        time.sleep(5.0)  # the competitor's model built and training
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(threads), "--steps", str(steps), "--batch", str(batch)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    finally:
        if competitor is not None:
            competitor.terminate()
            competitor.join()
    times = json.loads(out.stdout.strip().splitlines()[-1])
    return statistics.median(times[1:])  # the first step warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="steps timed per run (the first is dropped)")
    parser.add_argument("--batch", type=int, default=4, help="10 s chunks per batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(step_times(args.child, args.steps, args.batch)))
        return
    sys.path.insert(0, str(REPO / "src"))
    runs: dict[str, list[float]] = {"alone": [], "default": [], "shared": []}
    for _ in range(args.repeats):  # interleaved, so that a change in the machine's load touches all three
        for setting in runs:
            runs[setting].append(measure(setting, args.steps, args.batch))
            print(f"{setting}: {runs[setting][-1]:.2f} s a step", flush=True)

    def spread(values: list[float]) -> dict[str, Any]:
        return {"median_s": round(statistics.median(values), 3), "min_s": round(min(values), 3),
                "max_s": round(max(values), 3)}  # fmt: skip

    alone = statistics.median(runs["alone"])
    slow_default = statistics.median(runs["default"]) / alone
    slow_shared = statistics.median(runs["shared"]) / alone
    cores = len(os.sched_getaffinity(0))
    write_result(
        "threads",
        round(slow_default / slow_shared, 2),
        1.0,
        slow_default / slow_shared > 1.0,
        f"times the slowdown beside a competing job with torch's default threads over that with the share "
        f"(medians of {args.repeats} runs of {args.steps - 1} steps each)",
        cores=cores,
        threads_default=cores,
        threads_shared=max(1, cores // 2),
        batch=args.batch,
        step_alone=spread(runs["alone"]),
        step_beside_default_threads=spread(runs["default"]),
        step_beside_shared_threads=spread(runs["shared"]),
        slowdown_default_threads=round(slow_default, 2),
        slowdown_shared_threads=round(slow_shared, 2),
        runs=args.repeats,
    )


if __name__ == "__main__":
    main()
