"""Speech-separation corpora in the LibriMix format (mixture + clean sources + optional noise).

Two CSV formats are read, told apart by their header:

* LibriMix metadata (``metadata/mixture_<split>_mix_<both|clean>.csv``)::

      mixture_ID,mixture_path,source_1_path,source_2_path[,source_3_path][,noise_path],length

  ``length`` is the number of samples of every file of the row.
* SpeechBrain's LibriMix CSV (``recipes/LibriMix/separation/prepare_data.py``)::

      ID,duration,mix_wav,s1_wav,s2_wav[,s3_wav][,noise_wav]

  Other columns (SpeechBrain writes ``*_format`` and ``*_opts`` ones) are ignored. ``duration`` must be a
  number but is not checked against the audio: SpeechBrain's own script writes a dummy ``1.0`` there.

Paths may be absolute; relative paths are resolved against ``root`` when given, else against the folder
holding the CSV (the demo corpus of :mod:`tuner.data.demo.separation` writes them that way, e.g.
``../wav8k/min/train/mix_both/<ID>.wav``). Paths are normalised lexically (``a/../b`` -> ``b``; symbolic
links are not resolved), so both CSVs of the demo corpus name the same files. An empty
``noise_path``/``noise_wav`` means "no noise file"; SpeechBrain CSVs give no length (``Mixture.length`` is
None). Every problem is a :class:`~tuner.errors.DataError` naming the CSV, and the line where there is one.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuner.data._text import reading
from tuner.data.audio import audio_info, read_audio
from tuner.errors import DataError

__all__ = [
    "SUPPORTED_SAMPLE_RATES",
    "LIBRIMIX_HEADER",
    "SPEECHBRAIN_HEADER",
    "Mixture",
    "read_mixture_csv",
    "check_mixtures",
    "load_mixture",
    "random_segment",
]

logger = logging.getLogger(__name__)

SUPPORTED_SAMPLE_RATES = (8000, 16000)
"""Sample rates of separation corpora (LibriMix's wav8k and wav16k)."""
LIBRIMIX_HEADER = "mixture_ID,mixture_path,source_1_path,source_2_path[,source_3_path][,noise_path],length"
"""The LibriMix metadata header accepted by :func:`read_mixture_csv` (length in samples)."""
SPEECHBRAIN_HEADER = "ID,duration,mix_wav,s1_wav,s2_wav[,s3_wav][,noise_wav]"
"""The SpeechBrain LibriMix header accepted by :func:`read_mixture_csv` (``*_format``/``*_opts`` ignored)."""

_LIBRIMIX_SOURCE = re.compile(r"source_(\d+)_path")
_SPEECHBRAIN_SOURCE = re.compile(r"s(\d+)_wav")


@dataclass(frozen=True)
class Mixture:
    """One row of a separation CSV: a mixture, its clean sources (in order) and its noise (or None).

    ``length`` is the number of samples given by a LibriMix CSV (None for SpeechBrain CSVs). ``line`` is the
    CSV line the row ends on (None when not read from a CSV); it is used in error messages only.
    """

    id: str
    mixture: Path
    sources: tuple[Path, ...]
    noise: Path | None
    length: int | None
    line: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class _Layout:
    """Column indices of one CSV format."""

    name: str
    id: int
    mixture: int
    sources: tuple[int, ...]
    noise: int | None
    length: int  # the length (LibriMix) or duration (SpeechBrain) column
    length_in_samples: bool
    columns: tuple[str, ...]


def _sources(header: list[str], pattern: re.Pattern[str]) -> tuple[int, ...] | None:
    """Indices of the numbered source columns 1..k (k >= 2, no gap, no duplicate), else None."""
    numbered: dict[int, int] = {}
    for index, name in enumerate(header):
        match = pattern.fullmatch(name)
        if match:
            number = int(match.group(1))
            if number in numbered:
                return None
            numbered[number] = index
    if len(numbered) < 2 or sorted(numbered) != list(range(1, len(numbered) + 1)):
        return None
    return tuple(numbered[n] for n in sorted(numbered))


def _layout(header: list[str], path: Path) -> _Layout:
    names = [name.strip() for name in header]
    position = {name: i for i, name in enumerate(names)}
    if "mixture_ID" in position and "mixture_path" in position and "length" in position:
        sources = _sources(names, _LIBRIMIX_SOURCE)
        known = {"mixture_ID", "mixture_path", "length", "noise_path"}
        extra = [n for n in names if n not in known and not _LIBRIMIX_SOURCE.fullmatch(n)]
        if sources is not None and not extra and len(position) == len(names):
            return _Layout(
                "LibriMix",
                position["mixture_ID"],
                position["mixture_path"],
                sources,
                position.get("noise_path"),
                position["length"],
                True,
                tuple(names),
            )
    elif {"ID", "duration", "mix_wav"} <= set(position):
        sources = _sources(names, _SPEECHBRAIN_SOURCE)
        if sources is not None and len(position) == len(names):
            return _Layout(
                "SpeechBrain",
                position["ID"],
                position["mix_wav"],
                sources,
                position.get("noise_wav"),
                position["duration"],
                False,
                tuple(names),
            )
    hint = ""
    if "mixture_ID" in position and "mixture_path" not in position:
        hint = (
            " It looks like a LibriMix mixing-parameters file (e.g. metadata/libri2mix_*.csv); pass the "
            "mixture list instead (metadata/mixture_<split>_mix_both.csv or _mix_clean.csv)."
        )
    raise DataError(
        f"{path}: unknown separation CSV header {','.join(names)!r}.{hint} Expected either the LibriMix metadata "
        f"header {LIBRIMIX_HEADER!r} (length in samples) or SpeechBrain's LibriMix header {SPEECHBRAIN_HEADER!r} "
        "(duration in seconds; *_format/*_opts columns ignored), with at least 2 sources numbered from 1 and no gap."
    )


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """``(line, fields)`` of every non-blank CSV record, the header first."""
    try:
        with reading(path, "separation CSV"), path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            return [(reader.line_num, row) for row in reader if any(f.strip() for f in row)]
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc}); fix the quoting of the file.") from None


def read_mixture_csv(path: str | Path, root: str | Path | None = None) -> list[Mixture]:
    """Read a LibriMix or SpeechBrain separation CSV (see the module docstring); check every file exists.

    Relative paths resolve against ``root`` if given, else against the CSV's folder. Raises
    :class:`DataError` for an unknown header, an empty CSV, a row with the wrong number of fields, a
    non-numeric length/duration, a duplicate ID, a missing file, or rows with different numbers of sources.
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    records = _read_rows(path)
    if not records:
        raise DataError(
            f"{path}: the CSV is empty; expected the header {LIBRIMIX_HEADER!r} or {SPEECHBRAIN_HEADER!r} "
            "followed by one row per mixture."
        )
    layout = _layout(records[0][1], path)
    where_rel = f"relative paths are read relative to {base}" + (
        "" if root is not None else " (the CSV's folder; pass root= to change it)"
    )
    mixtures: list[Mixture] = []
    seen_ids: dict[str, int] = {}
    existing: set[Path] = set()
    n_sources: int | None = None
    first_line = 0

    def resolve(value: str, column: str, line: int, mixture_id: str) -> Path:
        candidate = Path(value)
        full = Path(os.path.normpath(candidate if candidate.is_absolute() else base / candidate))
        if full not in existing:
            if not full.is_file():
                how = (
                    "an absolute path in the CSV: was it written on another machine? Rewrite its prefix or "
                    "regenerate the CSV"
                    if candidate.is_absolute()
                    else f"{where_rel}: check that the CSV was written for this location, or regenerate it"
                )
                raise DataError(
                    f"{path}:{line}: mixture {mixture_id!r}: {column} file not found: {full} ({how}). "
                    "Check also that the corpus is complete."
                )
            existing.add(full)
        return full

    for line, row in records[1:]:
        where = f"{path}:{line}"
        if len(row) != len(layout.columns):
            raise DataError(
                f"{where}: expected {len(layout.columns)} comma-separated fields ({','.join(layout.columns)}), got "
                f"{len(row)}; fix or delete this row."
            )
        row = [f.strip() for f in row]
        mixture_id = row[layout.id]
        if not mixture_id:
            raise DataError(f"{where}: empty {layout.columns[layout.id]}; every row needs a mixture ID.")
        if mixture_id in seen_ids:
            raise DataError(
                f"{where}: mixture ID {mixture_id!r} already used on line {seen_ids[mixture_id]}; IDs must be unique."
            )
        seen_ids[mixture_id] = line
        length_name, length_text = layout.columns[layout.length], row[layout.length]
        length: int | None = None
        try:
            value = float(length_text)
            if not np.isfinite(value) or value <= 0:
                raise ValueError
            if layout.length_in_samples:
                length = int(length_text)
        except ValueError:
            unit = "a positive whole number of samples" if layout.length_in_samples else "a positive number of seconds"
            raise DataError(
                f"{where}: mixture {mixture_id!r}: {length_name} {length_text!r} is not {unit}; fix this row."
            ) from None
        source_columns = [i for i in layout.sources if row[i]]
        if source_columns != list(layout.sources[: len(source_columns)]):
            raise DataError(
                f"{where}: mixture {mixture_id!r}: a source column is empty before a filled one; fill "
                "source columns in order."
            )
        if n_sources is None:
            n_sources, first_line = len(source_columns), line
        elif len(source_columns) != n_sources:
            raise DataError(
                f"{where}: mixture {mixture_id!r} has {len(source_columns)} sources but the row on line "
                f"{first_line} has {n_sources}; all mixtures of a CSV must have the same number of sources."
            )
        if n_sources < 2:
            raise DataError(f"{where}: mixture {mixture_id!r} has {n_sources} source(s); separation needs at least 2.")
        if not row[layout.mixture]:
            raise DataError(f"{where}: mixture {mixture_id!r}: empty {layout.columns[layout.mixture]}.")
        mixture = resolve(row[layout.mixture], layout.columns[layout.mixture], line, mixture_id)
        sources = tuple(resolve(row[i], layout.columns[i], line, mixture_id) for i in source_columns)
        noise = None
        if layout.noise is not None and row[layout.noise]:
            noise = resolve(row[layout.noise], layout.columns[layout.noise], line, mixture_id)
        mixtures.append(Mixture(mixture_id, mixture, sources, noise, length, line))
    if not mixtures:
        raise DataError(f"{path}: the CSV has a header but no mixtures; add one row per mixture.")
    logger.debug("%s: %d mixtures of %d sources (%s format)", path, len(mixtures), n_sources, layout.name)
    return mixtures


def _where(csv_path: Path | str, m: Mixture) -> str:
    return f"{csv_path}:{m.line}: mixture {m.id!r}" if m.line is not None else f"{csv_path}: mixture {m.id!r}"


def check_mixtures(
    mixtures: Sequence[Mixture],
    csv_path: str | Path,
    expected_sample_rate: int | None = None,
) -> dict[str, Any]:
    """Open every file header of ``mixtures`` (read from ``csv_path``) and check the corpus is usable.

    Every file must be mono, at 8000 or 16000 Hz (``expected_sample_rate`` if given; the same rate for the
    whole corpus), and every file of a row exactly as long as its mixture and as ``length`` when given.
    Returns ``{"mixtures": n, "sources": k, "sample_rate": sr, "hours": h}`` (h: total mixture duration).
    """
    if expected_sample_rate is not None and expected_sample_rate not in SUPPORTED_SAMPLE_RATES:
        raise ValueError(f"expected_sample_rate must be one of {SUPPORTED_SAMPLE_RATES}, got {expected_sample_rate}")
    if not mixtures:
        raise DataError(f"{csv_path}: no mixtures to check; the CSV must list at least one mixture.")
    corpus_rate: tuple[int, str] | None = None  # (rate, where it was first seen)
    n_sources = len(mixtures[0].sources)
    total_frames = 0
    for m in mixtures:
        where = _where(csv_path, m)
        if len(m.sources) != n_sources:
            raise DataError(f"{where}: has {len(m.sources)} sources but mixture {mixtures[0].id!r} has {n_sources}.")
        files = [("mixture", m.mixture)] + [(f"source {i}", p) for i, p in enumerate(m.sources, 1)]
        if m.noise is not None:
            files.append(("noise", m.noise))
        mixture_frames = None
        for role, file in files:
            try:
                info = audio_info(file)
            except DataError as exc:
                raise DataError(f"{where}: {role}: {exc}") from None
            if info.sample_rate not in SUPPORTED_SAMPLE_RATES or (
                expected_sample_rate is not None and info.sample_rate != expected_sample_rate
            ):
                target = expected_sample_rate or (corpus_rate[0] if corpus_rate else 8000)
                wanted = (
                    f"{expected_sample_rate} Hz is expected"
                    if expected_sample_rate
                    else "8000 or 16000 Hz is supported"
                )
                raise DataError(
                    f"{where}: {role} file {file} is {info.sample_rate} Hz but {wanted}. Resample every file of the "
                    f"corpus to one rate, e.g. `sox in.wav -r {target} out.wav` or `ffmpeg -i in.wav -ar {target} "
                    "out.wav` (or use LibriMix's wav8k/wav16k folders)."
                )
            if corpus_rate is None:
                corpus_rate = (info.sample_rate, f"{file}")
            elif info.sample_rate != corpus_rate[0]:
                raise DataError(
                    f"{where}: {role} file {file} is {info.sample_rate} Hz but {corpus_rate[1]} is "
                    f"{corpus_rate[0]} Hz; "
                    f"all files of a corpus must share one sample rate: resample them, e.g. "
                    f"`sox in.wav -r {corpus_rate[0]} out.wav`."
                )
            if info.channels != 1:
                raise DataError(
                    f"{where}: {role} file {file} has {info.channels} channels; separation corpora must be mono: "
                    "downmix it, e.g. `sox in.wav -c 1 out.wav`."
                )
            if mixture_frames is None:
                mixture_frames = info.frames
                if m.length is not None and info.frames != m.length:
                    raise DataError(
                        f"{where}: mixture file {file} has {info.frames} samples but the CSV gives length {m.length}; "
                        "fix the length column or regenerate the mixture."
                    )
            elif info.frames != mixture_frames:
                raise DataError(
                    f"{where}: {role} file {file} has {info.frames} samples but the mixture {m.mixture} has "
                    f"{mixture_frames}; every file of a row must have exactly the same length (LibriMix 'min' mode): "
                    "regenerate or trim the files."
                )
        total_frames += mixture_frames or 0
    assert corpus_rate is not None
    summary = {
        "mixtures": len(mixtures),
        "sources": n_sources,
        "sample_rate": corpus_rate[0],
        "hours": total_frames / corpus_rate[0] / 3600,
    }
    logger.info(
        "%s: %d mixtures of %d sources at %d Hz, %.2f h",
        csv_path,
        summary["mixtures"],
        n_sources,
        corpus_rate[0],
        summary["hours"],
    )
    return summary


def _mono(waveform: np.ndarray, file: Path, m: Mixture) -> np.ndarray:
    if waveform.shape[0] != 1:
        raise DataError(f"mixture {m.id!r}: {file} has {waveform.shape[0]} channels; separation corpora must be mono.")
    return waveform[0]


def load_mixture(m: Mixture) -> tuple[np.ndarray, np.ndarray, int]:
    """``(mixture (time,), sources (k, time), sample_rate)`` as float32 (the noise file is not read)."""
    mix, rate = read_audio(m.mixture)
    mixture = _mono(mix, m.mixture, m)
    sources = []
    for file in m.sources:
        waveform, source_rate = read_audio(file)
        waveform = _mono(waveform, file, m)
        if source_rate != rate:
            raise DataError(f"mixture {m.id!r}: {file} is {source_rate} Hz but the mixture {m.mixture} is {rate} Hz.")
        if len(waveform) != len(mixture):
            raise DataError(
                f"mixture {m.id!r}: {file} has {len(waveform)} samples but the mixture {m.mixture} has {len(mixture)}."
            )
        sources.append(waveform)
    return mixture, np.stack(sources), rate


def random_segment(
    mix: np.ndarray,
    sources: np.ndarray,
    num_samples: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The same random window of ``num_samples`` of ``mix`` (time,) and ``sources`` (k, time).

    Shorter inputs are returned whole, zero-padded at the end (no random number is drawn then). The
    results are new arrays of the inputs' dtypes.
    """
    mix, sources = np.asarray(mix), np.asarray(sources)
    if mix.ndim != 1 or sources.ndim != 2 or sources.shape[1] != mix.shape[0]:
        raise ValueError(
            f"expected mix (time,) and sources (k, time) of one length, got {mix.shape} and {sources.shape}"
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    n = len(mix)
    if n <= num_samples:
        return np.pad(mix, (0, num_samples - n)), np.pad(sources, ((0, 0), (0, num_samples - n)))
    start = int(rng.integers(0, n - num_samples + 1))
    return mix[start : start + num_samples].copy(), sources[:, start : start + num_samples].copy()
