"""Audio input through soundfile (FFmpeg and torchcodec are not needed anywhere in tuner)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """Header of ``path``, checked: it exists, soundfile can read it, it is complete (not truncated) and
    not empty, and it is at ``expected_sample_rate`` when one is given."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path}. Check the corpus paths or regenerate the list.")
    if path.stat().st_size == 0:
        raise DataError(f"audio file {path} is empty (0 bytes): re-export it or remove it from the corpus.")
    try:
        info = sf.info(str(path))
    except Exception as error:  # soundfile raises its own LibsndfileError / RuntimeError
        reason = str(error).rstrip(".")
        kind = _container(path)
        if kind is not None:  # a format soundfile reads, so the file itself is damaged, not its format
            raise DataError(
                f"audio file {path} is a {kind} file whose header is damaged or cut short ({reason}). "
                f"{_TRUNCATED_HINT}."
            ) from None
        raise DataError(f"cannot read audio file {path}: {reason}. {_CONVERT_HINT}.") from None
    _check_complete(path, info)
    if info.frames == 0:
        raise DataError(f"audio file {path} is empty (0 samples): re-export it or remove it from the corpus.")
    if expected_sample_rate is not None and info.samplerate != expected_sample_rate:
        raise DataError(
            f"audio file {path} is {info.samplerate} Hz but {expected_sample_rate} Hz is expected: "
            f"resample it (e.g. `sox in.wav -r {expected_sample_rate} out.wav`)."
        )
    return AudioInfo(path, int(info.samplerate), int(info.frames), int(info.channels))


_TRUNCATED_HINT = (
    "The file was cut short (an interrupted copy, download or export): copy or export it again, or remove it "
    "from the corpus"
)


#: first bytes of the containers soundfile reads (RIFF and RF64 also hold AVI, WebP, ...: WAVE is checked)
_MAGIC = {b"RIFF": "WAV", b"RF64": "WAV", b"fLaC": "FLAC", b"OggS": "Ogg"}


def _container(path: Path) -> str | None:
    """The container ``path`` starts as (``WAV``, ``FLAC``, ``Ogg``), from its first bytes, or None."""
    with path.open("rb") as handle:
        head = handle.read(12)
    kind = _MAGIC.get(head[:4])
    if kind == "WAV" and head[8:12] != b"WAVE":
        return None
    return kind


def _wav_data_chunk(path: Path) -> tuple[int, int] | None:
    """``(offset, size)`` of the samples a RIFF/WAVE header declares, or None (not RIFF, or a size left
    unknown by a streaming writer). Reads the chunk headers only."""
    with path.open("rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        for _ in range(64):  # fmt, fact, LIST, ... come before data; more than a few chunks is unusual
            handle.seek(offset)
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                return (offset + 8, size) if 0 < size < 0xFFFFFFFF else None
            offset += 8 + size + (size & 1)
    return None


def _check_complete(path: Path, info: Any) -> None:
    """Raise DataError if ``path`` holds fewer samples than its header promises (a truncated file).

    soundfile silently shortens a truncated WAV to what is there, and reports a truncated FLAC's full
    length but fails to decode its end: WAV headers are compared with the file size (no sample is
    read), other formats get their last samples decoded.
    """
    import soundfile as sf

    if info.format in ("WAV", "WAVEX"):
        chunk = _wav_data_chunk(path)
        if chunk is None:
            return
        offset, declared = chunk
        available = max(path.stat().st_size - offset, 0)
        if available < declared:
            raise DataError(
                f"audio file {path} is truncated: its header promises {declared} bytes of samples but the file "
                f"holds only {available} ({info.frames} samples, {info.duration:.2f} s). {_TRUNCATED_HINT}."
            )
        return
    try:
        with sf.SoundFile(str(path)) as handle:
            handle.seek(max(handle.frames - 64, 0))
            decoded = len(handle.read(64, dtype="float32"))
    except Exception as error:  # libsndfile: "Internal psf_fseek() failed", "flac decoder lost sync", ...
        raise DataError(
            f"audio file {path} is truncated or corrupt: its header promises {info.frames} samples "
            f"({info.duration:.2f} s) but its end cannot be decoded ({error}). {_TRUNCATED_HINT}."
        ) from None
    if decoded < min(64, info.frames):
        raise DataError(
            f"audio file {path} is truncated: its header promises {info.frames} samples ({info.duration:.2f} s) "
            f"but its last ones cannot be decoded. {_TRUNCATED_HINT}."
        )


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """``(waveform, sample_rate)`` with waveform float32 of shape (channel, time)."""
    import soundfile as sf

    audio_info(path)
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        raise DataError(
            f"cannot decode audio file {path}: {error}. The file may be truncated; {_CONVERT_HINT}."
        ) from None
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
