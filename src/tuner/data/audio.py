"""Audio input through soundfile (FFmpeg and torchcodec are not needed anywhere in tuner)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner.errors import DataError

__all__ = ["AudioInfo", "audio_info", "read_audio", "WaveformCache"]

_CONVERT_HINT = (
    "tuner reads audio with soundfile (wav, flac, ogg); convert other formats first, e.g. "
    "`ffmpeg -i in.m4a -ac 1 -ar 16000 out.wav` (or `sox in.mp3 -r 16000 -c 1 out.wav`)"
)


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def audio_info(path: str | Path, expected_sample_rate: int | None = None) -> AudioInfo:
    """Header of ``path``, checked: it exists, soundfile can read it, it is not empty."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path}. Check the corpus paths or regenerate the list.")
    try:
        info = sf.info(str(path))
    except Exception as error:  # soundfile raises its own LibsndfileError / RuntimeError
        raise DataError(f"cannot read audio file {path}: {error}. {_CONVERT_HINT}.") from None
    if info.frames == 0:
        raise DataError(f"audio file {path} is empty (0 samples): re-export it or remove it from the corpus.")
    if expected_sample_rate is not None and info.samplerate != expected_sample_rate:
        raise DataError(
            f"audio file {path} is {info.samplerate} Hz but {expected_sample_rate} Hz is expected: "
            f"resample it (e.g. `sox in.wav -r {expected_sample_rate} out.wav`)."
        )
    return AudioInfo(path, int(info.samplerate), int(info.frames), int(info.channels))


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """``(waveform, sample_rate)`` with waveform float32 of shape (channel, time)."""
    import soundfile as sf

    audio_info(path)
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        raise DataError(f"cannot decode audio file {path}: {error}. The file may be truncated; {_CONVERT_HINT}.") from None
    return np.ascontiguousarray(data.T), int(sample_rate)


class WaveformCache:
    """Decoded files kept in memory up to ``max_bytes`` (least recently used go first)."""

    def __init__(self, max_bytes: int = 2 * 1024**3, pad_samples: int = 0) -> None:
        self.max_bytes = max_bytes
        self.pad_samples = pad_samples
        self._items: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()
        self._bytes = 0

    def get(self, path: str | Path) -> tuple[np.ndarray, int]:
        key = str(path)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        waveform, sample_rate = read_audio(key)
        if self.pad_samples:
            waveform = np.pad(waveform, ((0, 0), (0, self.pad_samples)))
        self._items[key] = (waveform, sample_rate)
        self._bytes += waveform.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (evicted, _) = self._items.popitem(last=False)
            self._bytes -= evicted.nbytes
        return waveform, sample_rate
