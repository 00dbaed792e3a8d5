"""Benchmark: does the diarization objective's data path keep its pace as the corpus grows to tens of hours?

Builds diarization corpora of ``--hours`` (default 1, 10, 50) in the pyannote folder layout under ``--workdir``
(not committed; about 115 MB an hour): 30-minute files tiled from the demo corpus's training conversations (their
speech and their RTTM turns, shifted), the demo development files for validation. For each size, in a fresh
process (so that peak memory is that size's):

* the training loader's chunks per second, through the real objective (segmentation-3.0's task, batch 32, 10 s
  chunks) and Lightning's loop, with the model's training step replaced by a no-op so that only the loading is
  timed; for 0 and 1 loader workers and the default number on this machine;
* the reference: random 10 s chunks read straight from the same files with soundfile (seek + read);
* peak memory (the process, and its loader workers).

Targets: at the largest size the loader keeps at least 0.8 of its smallest-size throughput and at least 0.5 of
the soundfile reference per worker; peak memory grows by less than 300 MB from the smallest size to the largest.

    .venv/bin/python benchmarks/data_scale.py                       # 1, 10 and 50 hours
    .venv/bin/python benchmarks/data_scale.py --hours 1,8 --batches 30
    .venv/bin/python benchmarks/data_scale.py --hours 1,50 --output benchmarks/results/gpu_data_scale.json

``--output PATH`` writes the result there instead of benchmarks/results/data_scale.json (the committed figure).
``--pretrained none`` times the same loader for an untrained PyanNet (where segmentation-3.0 cannot be fetched:
no package index), with segmentation-3.0's task shape: 10 s chunks, 3 speakers per chunk, 2 per frame.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_result

REPO = Path(__file__).resolve().parents[1]
FILE_SECONDS = 1800.0  # 30-minute files, as meetings are
CHUNK_SECONDS = 10.0
BATCH = 32
#: segmentation-3.0's task, given to an untrained PyanNet (``--pretrained none``) so that it loads the same chunks
SEGMENTATION_3_TASK = {"duration": CHUNK_SECONDS, "max_speakers_per_chunk": 3, "max_speakers_per_frame": 2}


def build_corpus(root: Path, hours: float, demo: Path) -> Path:
    """A pyannote-layout corpus of ``hours`` of 30-minute training files tiled from ``demo``'s training files;
    returns its database.yml (kept, and reused when complete)."""
    import soundfile as sf

    database = root / "database.yml"
    marker = root / "corpus.json"
    n_files = max(1, round(hours * 3600 / FILE_SECONDS))
    if marker.exists() and json.loads(marker.read_text()).get("files") == n_files:
        return database
    sources = sorted((demo / "train" / "wav").glob("*.wav"))
    for sub in ("train/wav", "train/rttm", "train/uem"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    uris = []
    for index in range(n_files):
        uri = f"long_{index:04d}"
        uris.append(uri)
        offset, turns = 0.0, []
        with sf.SoundFile(root / "train" / "wav" / f"{uri}.wav", "w", samplerate=16000, channels=1,
                          subtype="PCM_16") as out:  # fmt: skip
            k = index * 7
            while offset < FILE_SECONDS:
                source = sources[k % len(sources)]
                data, _ = sf.read(source, dtype="int16")
                out.write(data)
                rttm = demo / "train" / "rttm" / f"{source.stem}.rttm"
                for line in rttm.read_text().splitlines():
                    parts = line.split()
                    start, duration, speaker = float(parts[3]), float(parts[4]), parts[7]
                    turns.append(f"SPEAKER {uri} 1 {offset + start:.3f} {duration:.3f} <NA> <NA> {speaker} <NA> <NA>")
                offset += len(data) / 16000
                k += 1
        (root / "train" / "rttm" / f"{uri}.rttm").write_text("\n".join(turns) + "\n")
        (root / "train" / "uem" / f"{uri}.uem").write_text(f"{uri} 1 0.000 {offset:.3f}\n")
    (root / "train.txt").write_text("\n".join(uris) + "\n")
    for name in ("dev",):  # validation: the demo's development files
        for sub in ("wav", "rttm", "uem"):
            target = root / name / sub
            target.mkdir(parents=True, exist_ok=True)
            for path in (demo / name / sub).iterdir():
                (target / path.name).write_bytes(path.read_bytes())
    (root / "dev.txt").write_text((demo / "dev.txt").read_text())
    database.write_text(
        'Databases:\n  Long:\n    - "train/wav/{uri}.wav"\n    - "dev/wav/{uri}.wav"\n'
        "Protocols:\n  Long:\n    SpeakerDiarization:\n      Default:\n        scope: file\n"
        '        train:\n          uri: "train.txt"\n          annotation: "train/rttm/{uri}.rttm"\n'
        '          annotated: "train/uem/{uri}.uem"\n        development:\n          uri: "dev.txt"\n'
        '          annotation: "dev/rttm/{uri}.rttm"\n          annotated: "dev/uem/{uri}.uem"\n'
    )
    marker.write_text(json.dumps({"files": n_files, "hours": n_files * FILE_SECONDS / 3600}))
    return database


def soundfile_rate(root: Path, chunks: int = 640, seed: int = 0) -> float:
    """Random 10 s chunks per second read with a soundfile seek + read from the corpus's training files."""
    import soundfile as sf

    files = sorted((root / "train" / "wav").glob("*.wav"))
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for _ in range(chunks):
        path = files[rng.integers(len(files))]
        start = int(rng.integers(0, int((FILE_SECONDS - CHUNK_SECONDS) * 16000)))
        sf.read(path, start=start, frames=int(CHUNK_SECONDS * 16000), dtype="float32")
    return chunks / (time.perf_counter() - started)


def loader_rate(
    database: Path, workers: int, batches: int, workdir: Path, pretrained: str = "segmentation-3.0"
) -> float:
    """Training chunks per second of the objective's own loader through Lightning's loop (no-op steps)."""
    import lightning.pytorch as pl
    from typing_extensions import override

    from tuner.objectives.pyannote import PyannoteSegmentation
    from tuner.search_space import TrialConfig
    from tuner.training.fit import attach_optimization, make_trainer

    options: dict[str, Any] = {"num_workers": workers}
    if pretrained == "none":
        options.update(SEGMENTATION_3_TASK)
    checkpoint = None if pretrained == "none" else pretrained
    objective = PyannoteSegmentation(f"{database}:Long.SpeakerDiarization.Default", checkpoint, options,
                                     workdir=workdir)  # fmt: skip
    objective.setup()
    config = TrialConfig(batch_size=BATCH)
    inputs = objective.build(config, seed=0)
    model = inputs.module
    attach_optimization(model, objective, config, max_epochs=1)
    weight = next(model.parameters())
    model.training_step = lambda batch, batch_idx: weight.sum() * 0.0  # only the loading is timed

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        @override
        def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, i: int) -> None:
            self.times.append(time.perf_counter())

    clock = Clock()
    trainer = make_trainer("cpu", max_epochs=1, limit_train_batches=batches + 1, limit_val_batches=0,
                           num_sanity_val_steps=0, enable_checkpointing=False, callbacks=[clock])  # fmt: skip
    trainer.fit(model)
    spans = clock.times[1:]  # from the first batch on: workers started, first batch ready
    return (len(spans) - 1) * BATCH / (spans[-1] - spans[0])


def measure(hours: float, workdir: Path, batches: int, pretrained: str = "segmentation-3.0") -> dict[str, Any]:
    """One size, in this process: the corpus, the rates and peak memory."""
    from tuner.data.demo import ensure_diarization_corpus
    from tuner.data.loading import default_num_workers

    demo = ensure_diarization_corpus(workdir / "demo" / "diarization", seed=0)
    database = build_corpus(workdir / f"long_{hours:g}h", hours, demo)
    counts = sorted({0, 1, default_num_workers()})
    row: dict[str, Any] = {"hours": hours, "files": len(list((database.parent / "train" / "wav").glob("*.wav")))}
    row["soundfile_chunks_per_s"] = round(soundfile_rate(database.parent), 1)
    for workers in counts:
        rate = loader_rate(database, workers, batches, workdir, pretrained)
        row[f"loader_chunks_per_s_{workers}_workers"] = round(rate, 1)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    row["peak_rss_workers_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", default="1,10,50", help="corpus sizes in hours (default 1,10,50)")
    parser.add_argument("--workdir", type=Path, default=REPO / "storage" / "data_scale")
    parser.add_argument("--batches", type=int, default=40, help="batches of 32 chunks timed per measurement")
    parser.add_argument(
        "--pretrained",
        default="segmentation-3.0",
        help="the model whose task loads the chunks: a known name or a checkpoint path (default segmentation-3.0, "
        "in <workdir>/pretrained, fetched there when missing), or 'none': an untrained PyanNet, 10 s chunks",
    )
    parser.add_argument(
        "--output", type=Path, help="result file (default benchmarks/results/data_scale.json, the committed figure)"
    )
    parser.add_argument("--measure", type=float, help=argparse.SUPPRESS)  # one size, in a child process
    args = parser.parse_args()
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.workdir, args.batches, args.pretrained)))
        return
    rows = []
    for hours in (float(h) for h in args.hours.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--measure", str(hours), "--workdir", str(args.workdir),
             "--batches", str(args.batches), "--pretrained", args.pretrained], check=False, capture_output=True,
            text=True,
        )  # fmt: skip
        if out.returncode != 0:  # say why (the child's output is captured)
            sys.stderr.write(out.stdout[-2000:] + out.stderr[-6000:])
            raise SystemExit(f"measuring {hours:g} h failed (exit status {out.returncode})")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    first, last = rows[0], rows[-1]
    keep = last["loader_chunks_per_s_0_workers"] / first["loader_chunks_per_s_0_workers"]
    per_reference = last["loader_chunks_per_s_0_workers"] / last["soundfile_chunks_per_s"]
    growth = last["peak_rss_mb"] + last["peak_rss_workers_mb"] - first["peak_rss_mb"] - first["peak_rss_workers_mb"]
    write_result(
        "data_scale",
        round(keep, 3),
        0.8,
        keep >= 0.8 and per_reference >= 0.5 and growth < 300,
        f"of the {first['hours']:g} h loader throughput kept at {last['hours']:g} h (0 workers)",
        path=args.output,
        loader_vs_soundfile_at_largest=round(per_reference, 3),
        peak_memory_growth_mb=round(growth, 1),
        batch=BATCH,
        chunk_seconds=CHUNK_SECONDS,
        batches_timed=args.batches,
        pretrained=args.pretrained,
        rows=rows,
    )


if __name__ == "__main__":
    main()
