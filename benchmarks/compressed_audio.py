"""Benchmark: what a random training chunk of compressed audio costs, read as shipped or from tuner's decode cache.

A 30-minute conversation (tiled from the demo corpus's training files, as ``data_scale.py`` builds them) is
encoded to AAC in an ``.m4a`` with PyAV's encoder, as Kathbath ships its audio. Then, on the same file:

* the whole file decoded with PyAV (resampled to 16 kHz): seconds, and times faster than real time;
* random 10 s chunks read straight from the ``.m4a``: a PyAV seek to the packet before the chunk and a decode
  up to its end (what a loader without a cache would do), chunks per second;
* the same chunks read from the WAV tuner's ``DecodeCache`` writes once (a soundfile seek + read), chunks per
  second; and the cache's cost: its first call (decode + write) and a later one (a look-up).

Each rate is the median of ``--repeats`` runs of ``--chunks`` chunks, with its range. No target: the figure is
how many times faster the cached read is than seeking in the compressed file, the measurement behind decoding
each file once (``tuner.data.compressed``).

    .venv/bin/python benchmarks/compressed_audio.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_result

REPO = Path(__file__).resolve().parents[1]
RATE = 16000
CHUNK_SECONDS = 10.0


def seek_decode_chunk(path: Path, start: float, seconds: float) -> np.ndarray:
    """Samples ``start`` to ``start + seconds`` of a compressed file by seeking in it and decoding from there."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        container.seek(int(start / stream.time_base), stream=stream, any_frame=False, backward=True)
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=RATE)
        pieces, first = [], None
        for frame in container.decode(stream):
            if first is None:
                first = float(frame.pts * frame.time_base)
            pieces += [piece.to_ndarray()[0] for piece in resampler.resample(frame)]
            if first + sum(len(p) for p in pieces) / RATE >= start + seconds:
                break
    samples = np.concatenate(pieces)
    offset = round((start - (first or 0.0)) * RATE)
    return samples[offset : offset + int(seconds * RATE)]


def rate(read: Any, starts: list[float]) -> float:
    began = time.perf_counter()
    for start in starts:
        read(start)
    return len(starts) / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "storage" / "data_scale")
    parser.add_argument("--chunks", type=int, default=200, help="random 10 s chunks per run (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each reading (default 3)")
    args = parser.parse_args()

    import soundfile as sf

    sys.path.insert(0, str(Path(__file__).parent))
    from data_scale import FILE_SECONDS, build_corpus

    from tuner.data.compressed import DecodeCache, decode
    from tuner.data.demo import ensure_diarization_corpus
    from tuner.testing.audio import encode

    demo = ensure_diarization_corpus(args.workdir / "demo" / "diarization", seed=0)
    database = build_corpus(args.workdir / "long_0.5h", 0.5, demo)
    wav = next((database.parent / "train" / "wav").glob("*.wav"))
    m4a = args.workdir / "compressed" / f"{wav.stem}.m4a"
    if not m4a.is_file():
        m4a.parent.mkdir(parents=True, exist_ok=True)
        waveform, _ = sf.read(wav, dtype="float32")
        encode(m4a, waveform, RATE)
    seconds = sf.info(str(wav)).duration
    began = time.perf_counter()
    decode(m4a, RATE)
    decode_seconds = time.perf_counter() - began

    with tempfile.TemporaryDirectory() as folder:
        cache = DecodeCache(folder, RATE)
        began = time.perf_counter()
        cached = cache.path(m4a)
        first_call = time.perf_counter() - began
        began = time.perf_counter()
        DecodeCache(folder, RATE).path(m4a)  # another process: the index note, no decode
        later_call = time.perf_counter() - began
        rng = np.random.default_rng(0)
        seek_rates, cached_rates = [], []
        for _ in range(args.repeats):
            starts = [float(s) for s in rng.uniform(0, FILE_SECONDS - CHUNK_SECONDS - 1, args.chunks)]
            seek_rates.append(rate(lambda s: seek_decode_chunk(m4a, s, CHUNK_SECONDS), starts))
            cached_rates.append(
                rate(lambda s: sf.read(cached, start=int(s * RATE), frames=int(CHUNK_SECONDS * RATE)), starts)
            )
        # where a seek lands against the whole decode: the offset that best aligns a chunk with the cached WAV
        probe = seek_decode_chunk(m4a, 600.0, 1.0)
        whole, _ = sf.read(cached, start=600 * RATE - 2048, frames=RATE + 4096, dtype="float32")
        delay = int(np.argmax([np.dot(probe[: RATE // 2], whole[d : d + RATE // 2]) for d in range(4096)])) - 2048

    def spread(values: list[float]) -> dict[str, float]:
        return {name: round(f(values), 1) for name, f in (("median", statistics.median), ("min", min), ("max", max))}

    seek, cached_read = spread(seek_rates), spread(cached_rates)
    write_result(
        "compressed_audio",
        round(cached_read["median"] / seek["median"], 1),
        None,
        False,
        f"times more 10 s chunks per second from the decode cache's WAV than by seeking in the .m4a "
        f"(medians of {args.repeats} runs of {args.chunks} chunks)",
        file_minutes=round(seconds / 60, 1),
        m4a_mb=round(m4a.stat().st_size / 1e6, 1),
        whole_decode_s=round(decode_seconds, 2),
        whole_decode_x_real_time=round(seconds / decode_seconds, 1),
        seek_decode_chunks_per_s=seek,
        cached_wav_chunks_per_s=cached_read,
        cache_first_call_s=round(first_call, 2),
        cache_later_call_ms=round(1000 * later_call, 2),
        seek_offset_samples=delay,
        runs=args.repeats,
        chunks_per_run=args.chunks,
    )


if __name__ == "__main__":
    main()
