"""Audio input: soundfile for WAV, FLAC and Ogg, PyAV (:mod:`tuner.data.compressed`) for AAC, MP3 and Opus;
FFmpeg and torchcodec are not needed anywhere in tuner."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuner.errors import DataError

if TYPE_CHECKING:
    from tuner.data.compressed import DecodeCache

__all__ = ["AudioInfo", "audio_info", "read_audio", "SeekableWaveform", "WaveformCache"]

_CONVERT_HINT = (
    "tuner reads wav, flac and ogg with soundfile and .m4a, .mp4, .aac, .mp3 and .opus with PyAV; convert other "
    "formats first, e.g. `ffmpeg -i in.wma -ac 1 -ar 16000 out.wav` (or `sox in.aiff -r 16000 -c 1 out.wav`)"
)


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    frames: int
    channels: int
    format: str = ""  # soundfile's names: "WAV", "FLAC", "OGG", ...; PyAV's container for compressed files
    subtype: str = ""  # "PCM_16", "FLOAT", "VORBIS", ...; PyAV's codec ("aac", "mp3float", "opus")
    compressed: bool = False  # decoded with PyAV (tuner.data.compressed); frames are the container's estimate

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    @property
    def seeks_exactly(self) -> bool:
        """Whether soundfile reads any span of this file by seeking to its first sample: uncompressed PCM
        or float samples in a WAV-like or AIFF container, and FLAC (lossless, sample-accurate seeks). Lossy
        formats (Ogg Vorbis or Opus, MP3) are left to a whole-file decode."""
        return self.format in _SEEKABLE_FORMATS and self.subtype in _SEEKABLE_SUBTYPES


_SEEKABLE_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "FLAC"})
_SEEKABLE_SUBTYPES = frozenset({"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"})


def audio_info(path: str | Path, expected_sample_rate: int | None = None) -> AudioInfo:
    """Header of ``path``, checked: it exists, soundfile can read it, it is complete (not truncated) and
    not empty, and it is at ``expected_sample_rate`` when one is given.

    A compressed file (:data:`~tuner.data.compressed.COMPRESSED_EXTENSIONS`) gets its container's header,
    read by PyAV, and no rate check: it is decoded at the model's rate (:class:`~tuner.data.compressed.DecodeCache`).
    """
    import soundfile as sf

    from tuner.data import compressed

    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path}. Check the corpus paths or regenerate the list.")
    if path.stat().st_size == 0:
        raise DataError(f"audio file {path} is empty (0 bytes): re-export it or remove it from the corpus.")
    if compressed.is_compressed(path):
        rate, channels, seconds, container, codec = compressed.probe(path)
        if seconds <= 0:
            raise DataError(f"compressed audio file {path} declares no duration: re-export it or remove it.")
        return AudioInfo(path, rate, round(seconds * rate), channels, container, codec, compressed=True)
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
    return AudioInfo(
        path, int(info.samplerate), int(info.frames), int(info.channels), str(info.format), str(info.subtype)
    )


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
    """``(waveform, sample_rate)`` with waveform float32 of shape (channel, time); compressed files are
    decoded with PyAV at their own rate."""
    import soundfile as sf

    from tuner.data import compressed

    if compressed.is_compressed(path):
        return compressed.decode(path)
    audio_info(path)
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        raise DataError(
            f"cannot decode audio file {path}: {error}. The file may be truncated; {_CONVERT_HINT}."
        ) from None
    return np.ascontiguousarray(data.T), int(sample_rate)


class SeekableWaveform:
    """A file's (channels, samples) float32 waveform that reads only the time slices asked of it.

    It stands in for the in-memory tensor of pyannote's ``{"waveform", "sample_rate"}`` files: ``Audio.crop``
    uses ``waveform.shape`` and ``waveform[:, start:end]`` alone, so a training or validation chunk costs a
    soundfile seek and a read of its own samples, not a decode of the whole file, and nothing holds the
    corpus's audio. ``shape`` is ``(channels, frames + pad_samples)``: the ``pad_samples`` zeros past the
    end are those :class:`WaveformCache` adds (``Audio.crop`` rejects a chunk that ends exactly at the last
    sample). The values are those of a whole-file read (``read_audio``), zeros past the end.

    Only files soundfile seeks exactly (:attr:`AudioInfo.seeks_exactly`: PCM or float WAV/AIFF, FLAC) are
    read this way; :meth:`WaveformCache.for_crops` decodes other formats whole, as before. The header is read
    once; each slice opens the file anew, so the object is small and pickles (DataLoader workers).
    """

    def __init__(self, path: str | Path, pad_samples: int = 0, info: AudioInfo | None = None) -> None:
        info = info or audio_info(path)
        self.path = str(path)
        self.sample_rate, self.frames, self.channels = info.sample_rate, info.frames, info.channels
        self.pad_samples = pad_samples

    @property
    def shape(self) -> tuple[int, int]:
        return (self.channels, self.frames + self.pad_samples)

    def __repr__(self) -> str:
        return f"SeekableWaveform({self.path!r}, shape={self.shape}, sample_rate={self.sample_rate})"

    def __getitem__(self, key: Any) -> Any:
        """``waveform[channels, start:stop]`` (a step of 1) as a torch float32 tensor, like a tensor's slice."""
        import torch

        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], slice)):
            raise TypeError(f"SeekableWaveform reads time slices: index it as [:, start:stop], not [{key!r}]")
        channels, span = key
        start, stop, step = span.indices(self.shape[1])
        if step != 1:
            raise TypeError(f"SeekableWaveform reads contiguous samples: slice step {step} is not supported")
        data = torch.from_numpy(self.read(start, max(stop, start)))
        return data if isinstance(channels, slice) and channels == slice(None) else data[channels]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start`` to ``stop`` (0 <= start <= stop), float32 (channels, stop - start): those of the
        file, then zeros past its end."""
        import soundfile as sf

        out = np.zeros((self.channels, stop - start), dtype=np.float32)
        end = min(stop, self.frames)
        if start < end:
            try:
                data, _ = sf.read(self.path, start=start, stop=end, dtype="float32", always_2d=True)
            except Exception as error:
                raise DataError(f"cannot read samples {start}-{end} of audio file {self.path}: {error}.") from None
            if len(data) != end - start:
                raise DataError(
                    f"audio file {self.path} holds fewer samples than its header promises ({self.frames}): "
                    f"{len(data)} read of {start}-{end}. {_TRUNCATED_HINT}."
                )
            out[:, : end - start] = data.T
        return out


class WaveformCache:
    """Decoded files kept in memory up to ``max_bytes`` (least recently used go first); :meth:`for_crops`
    decodes into it only the files that cannot be read a chunk at a time. With ``decoded``, compressed
    files are read from their WAV in that :class:`~tuner.data.compressed.DecodeCache` (decoded on first use)."""

    #: the default budget of decoded audio
    DEFAULT_BYTES = 2 * 1024**3

    def __init__(
        self, max_bytes: int = DEFAULT_BYTES, pad_samples: int = 0, decoded: DecodeCache | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.pad_samples = pad_samples
        self.decoded = decoded
        self._items: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()
        self._bytes = 0
        self._seekable: dict[str, SeekableWaveform | None] = {}

    @property
    def nbytes(self) -> int:
        """Bytes of decoded audio held now."""
        return self._bytes

    def for_crops(self, path: str | Path) -> tuple[Any, int]:
        """``(waveform, sample_rate)`` to cut chunks from, for pyannote's ``Audio.crop``: a
        :class:`SeekableWaveform` (the file's header, kept; each slice read from disk) where soundfile seeks
        the format exactly, else the whole file decoded into this cache, as a torch tensor (Ogg, MP3).
        Both are padded with ``pad_samples`` zeros and hold the same values."""
        import torch

        key = str(self.decoded.path(path) if self.decoded else path)
        if key not in self._seekable:
            info = audio_info(key)
            self._seekable[key] = SeekableWaveform(key, self.pad_samples, info) if info.seeks_exactly else None
        seekable = self._seekable[key]
        if seekable is not None:
            return seekable, seekable.sample_rate
        waveform, sample_rate = self.get(key)
        return torch.from_numpy(waveform), sample_rate

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (into a DataLoader worker) without its decoded audio: each process fills its own, up to
        ``max_bytes``, so a worker does not start with a copy of the training process's."""
        state = dict(self.__dict__)
        state["_items"], state["_bytes"] = OrderedDict(), 0
        return state

    def get(self, path: str | Path) -> tuple[np.ndarray, int]:
        key = str(self.decoded.path(path) if self.decoded else path)
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
