"""Compressed audio (AAC in ``.m4a`` / ``.mp4`` / ``.aac``, MP3, Opus) read as shipped, through PyAV.

PyAV's wheels carry FFmpeg's libraries, so nothing is needed on the system. A random training chunk of a
compressed file would cost a seek to the packet before it and a decode from there (measured by
``benchmarks/compressed_audio.py``), so :class:`DecodeCache` decodes each file once, whole, into a 16-bit PCM
WAV at the model's sample rate, under a cache folder (``<workdir>/cache/decoded``) and named by a hash of the
file's bytes: a copied or renamed file is not decoded again, an edited one is. Chunks are then read from the
WAV with a seek like any other file (:class:`tuner.data.audio.SeekableWaveform`).

The samples are those ``ffmpeg -i FILE -ar RATE out.wav`` writes: every decoded sample in order (an encoder's
priming samples are dropped where the container says so, as FFmpeg does), resampled by FFmpeg's resampler,
rounded to 16 bits. What PyAV cannot open or decode is a :class:`~tuner.errors.DataError` that names the file
and says how to convert it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tuner.errors import DataError

__all__ = ["COMPRESSED_EXTENSIONS", "is_compressed", "probe", "decode", "DecodeCache"]

logger = logging.getLogger(__name__)

COMPRESSED_EXTENSIONS = frozenset({".m4a", ".mp4", ".aac", ".mp3", ".opus"})
"""Extensions (lower case) of the compressed formats tuner decodes with PyAV (soundfile reads the others)."""

_CONVERT_HINT = (
    "If the file plays elsewhere, convert it to wav once, e.g. `ffmpeg -i in.m4a -ac 1 -ar 16000 out.wav`, "
    "and give tuner the wav"
)


def is_compressed(path: str | Path) -> bool:
    """Whether ``path`` is a format tuner decodes with PyAV (by its extension)."""
    return Path(path).suffix.lower() in COMPRESSED_EXTENSIONS


def _open(path: Path) -> Any:
    import av

    try:
        container = av.open(str(path))
    except Exception as error:  # av.error.InvalidDataError, FileNotFoundError, ...
        raise DataError(f"cannot open compressed audio file {path}: {error}. {_CONVERT_HINT}.") from None
    if not container.streams.audio:
        container.close()
        raise DataError(f"{path} holds no audio stream (a video or an empty container). {_CONVERT_HINT}.")
    return container


def probe(path: str | Path) -> tuple[int, int, float, str, str]:
    """``(sample_rate, channels, seconds, container, codec)`` from the header of a compressed file (nothing
    is decoded; the duration is the container's, to a frame)."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.audio[0]
        context = stream.codec_context
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000  # av.time_base
        else:
            seconds = 0.0
        return int(context.sample_rate), int(context.channels), seconds, str(container.format.name), str(context.name)


def decode(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """``(waveform, sample_rate)``: the whole file decoded, float32 of shape (channels, time), resampled to
    ``sample_rate`` when one is given (else at the file's own rate)."""
    import av

    path = Path(path)
    pieces: list[np.ndarray] = []
    with _open(path) as container:
        stream = container.streams.audio[0]
        rate = sample_rate or int(stream.codec_context.sample_rate)
        resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
        try:
            for frame in container.decode(stream):
                pieces += [piece.to_ndarray() for piece in resampler.resample(frame)]
            pieces += [piece.to_ndarray() for piece in resampler.resample(None)]
        except Exception as error:  # av.error.InvalidDataError and kin: a damaged or cut file
            raise DataError(
                f"cannot decode compressed audio file {path}: {error} (damaged or cut short?). {_CONVERT_HINT}."
            ) from None
    if not pieces or sum(piece.shape[1] for piece in pieces) == 0:
        raise DataError(f"compressed audio file {path} decodes to no samples: re-export it or remove it.")
    return np.ascontiguousarray(np.concatenate(pieces, axis=1), dtype=np.float32), rate


def _content_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """``write(temporary_path)`` then rename onto ``target``: a reader never sees half a file, and a failed
    write leaves nothing behind."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


class DecodeCache:
    """Compressed files decoded once into WAVs under ``folder``, at ``sample_rate`` (or each file's own).

    :meth:`path` returns a path soundfile reads for any audio file: the file itself unless it is compressed,
    else its decoded WAV (decoding it the first time). Safe with several processes: each WAV and each index
    entry is written under a temporary name and renamed, so two workers decoding one file at once only
    repeat work.
    """

    def __init__(self, folder: str | Path, sample_rate: int | None = None) -> None:
        self.folder = Path(folder)
        self.sample_rate = sample_rate
        self._known: dict[Path, Path] = {}  # source -> decoded WAV, found in this process

    def __repr__(self) -> str:
        return f"DecodeCache({str(self.folder)!r}, sample_rate={self.sample_rate})"

    def path(self, source: str | Path) -> Path:
        """A path soundfile can read for ``source`` (see the class)."""
        return self._resolve(Path(source))[0]

    def paths(self, sources: Iterable[str | Path], what: str = "files") -> list[Path]:
        """:meth:`path` of each source, with a progress line every 10 s while decoding."""
        files = [Path(source) for source in sources]
        out: list[Path] = []
        started = last = time.monotonic()
        decoded = 0
        for done, source in enumerate(files, start=1):
            path, fresh = self._resolve(source)
            out.append(path)
            decoded += fresh
            if fresh and time.monotonic() - last > 10:
                last = time.monotonic()
                logger.info("decoding compressed %s into %s: %d of %d", what, self.folder, done, len(files))
        if decoded:
            logger.info(
                "decoded %d compressed %s once into %s (%.0f s); later runs read them from there",
                decoded,
                what,
                self.folder,
                time.monotonic() - started,
            )
        return out

    def _resolve(self, source: Path) -> tuple[Path, bool]:
        """``(readable path, whether it was decoded now)``."""
        if not is_compressed(source):
            return source, False
        if source in self._known:
            return self._known[source], False
        if not source.is_file():
            raise DataError(f"audio file not found: {source}. Check the corpus paths or regenerate the list.")
        target = self.folder / f"{self._key(source)}.{self.sample_rate or 'native'}.wav"
        fresh = not target.is_file()
        if fresh:
            self._decode_into(source, target)
        self._known[source] = target
        return target, fresh

    def _key(self, source: Path) -> str:
        """The hash of ``source``'s bytes, remembered by (path, size, modification time) so an unchanged file
        is not read again to hash it."""
        stat = source.stat()
        identity = f"{source.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
        note = self.folder / "index" / hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()
        try:
            return note.read_text().strip()
        except OSError:
            pass
        key = _content_hash(source)
        note.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(note, lambda temporary: temporary.write_text(key))
        return key

    def _decode_into(self, source: Path, target: Path) -> None:
        import soundfile as sf

        waveform, rate = decode(source, self.sample_rate)
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(
            target, lambda temporary: sf.write(str(temporary), waveform.T, rate, subtype="PCM_16", format="WAV")
        )
        logger.debug("decoded %s into %s", source, target)
