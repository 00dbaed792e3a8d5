"""Compressed audio for tests and benchmarks, written with PyAV's own encoders (no FFmpeg on the system)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

__all__ = ["ENCODERS", "encode", "compressed_copy"]

#: extension -> (PyAV container format, encoder)
ENCODERS = {
    ".m4a": ("mp4", "aac"),
    ".aac": ("adts", "aac"),
    ".mp3": ("mp3", "libmp3lame"),
    ".opus": ("opus", "libopus"),
}


def encode(path: str | Path, waveform: np.ndarray, sample_rate: int) -> Path:
    """Write ``waveform`` (float32, (channels, time) or (time,)) to ``path`` in the format its extension
    names (:data:`ENCODERS`), at ``sample_rate``, with the codec's default bit rate."""
    import av

    path = Path(path)
    container_format, codec = ENCODERS[path.suffix.lower()]
    samples = np.atleast_2d(np.asarray(waveform, dtype=np.float32))
    layout = {1: "mono", 2: "stereo"}[samples.shape[0]]
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=sample_rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def compressed_copy(corpus: str | Path, out: str | Path, extension: str = ".m4a") -> Path:
    """A copy of a speaker-verification corpus (``<split>/<speaker>/<utterance>.wav`` and trial lists) whose
    utterances are ``extension`` files, as Kathbath ships them; the trial lists name the new files."""
    import soundfile as sf

    corpus, out = Path(corpus), Path(out)
    shutil.copytree(corpus, out, ignore=shutil.ignore_patterns("*.wav"))
    for wav in sorted(corpus.rglob("*.wav")):
        waveform, sample_rate = sf.read(wav, dtype="float32", always_2d=True)
        encode((out / wav.relative_to(corpus)).with_suffix(extension), waveform.T, sample_rate)
    for trials in sorted(out.glob("trials/*.txt")):
        trials.write_text(trials.read_text().replace(".wav", extension))
    return out
