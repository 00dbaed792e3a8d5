"""Strict readers and writers for RTTM (speaker turns) and UEM (evaluated regions) files.

Readers never guess: any malformed line raises :class:`~tuner.errors.DataError` naming the file, the
line number and the offending line, and saying what a valid line looks like.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tuner.data._text import read_text_lines
from tuner.errors import DataError

__all__ = ["Turn", "read_rttm", "read_uem", "read_uem_records", "write_rttm", "write_uem"]

_RTTM_EXPECTED = "'SPEAKER <uri> <channel> <onset> <duration> <NA> <NA> <speaker> <NA> <NA>'"
_UEM_EXPECTED = "'<uri> <channel> <start> <end>'"
# NIST RTTM record types other than SPEAKER: skipped silently (they carry no speaker turn).
_OTHER_RTTM_TYPES = frozenset(
    {
        "SEGMENT",
        "NOSCORE",
        "NO_RT_METADATA",
        "LEXEME",
        "NON-LEX",
        "NON-SPEECH",
        "FILLER",
        "EDIT",
        "IP",
        "CB",
        "A/P",
        "SU",
        "STRING",
        "SPKR-INFO",
    }
)


@dataclass(frozen=True)
class Turn:
    """One speaker turn: ``speaker`` talks in file ``uri`` from ``start`` for ``duration`` seconds.

    ``line`` is the RTTM line it was read from (None when not read from a file); it is used in error
    messages only and takes no part in comparisons.
    """

    uri: str
    start: float
    duration: float
    speaker: str
    line: int | None = field(default=None, compare=False, repr=False)

    @property
    def end(self) -> float:
        """End time in seconds."""
        return self.start + self.duration


class _LineError(Exception):
    """Internal: why one line is malformed (turned into a DataError with file/line context)."""


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _LineError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _LineError(f"{name} {text!r} is not a finite number")
    return value


_NO_COMMENTS = "comment lines are not part of the format and pyannote.database cannot read them"


def _parse_rttm_fields(fields: list[str], lineno: int) -> Turn | None:
    if fields[0].startswith("#"):
        raise _LineError(_NO_COMMENTS)
    if len(fields) > 10:
        raise _LineError(f"expected at most 10 fields, got {len(fields)}")
    if fields[0] != "SPEAKER":
        if fields[0] in _OTHER_RTTM_TYPES:
            return None
        raise _LineError(f"unknown record type {fields[0]!r} (speaker turns are 'SPEAKER' records)")
    if len(fields) < 8:
        raise _LineError(f"expected at least 8 fields, got {len(fields)}")
    onset = _number(fields[3], "onset")
    duration = _number(fields[4], "duration")
    if onset < 0:
        raise _LineError(f"onset {fields[3]!r} is negative")
    if duration <= 0:
        raise _LineError(f"duration {fields[4]!r} is not positive")
    return Turn(uri=fields[1], start=onset, duration=duration, speaker=fields[7], line=lineno)


def read_rttm(path: str | Path) -> list[Turn]:
    """Read the SPEAKER turns of an RTTM file, in file order (blank lines allowed, other record types
    such as SPKR-INFO skipped). Lines pyannote.database could not read are errors naming ``file:line``."""
    turns: list[Turn] = []
    for lineno, line in enumerate(read_text_lines(path, "RTTM file"), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            turn = _parse_rttm_fields(fields, lineno)
        except _LineError as exc:
            raise DataError(
                f"{path}:{lineno}: malformed RTTM line {line!r}: {exc}. "
                f"Expected {_RTTM_EXPECTED}; fix or delete this line."
            ) from None
        if turn is not None:
            turns.append(turn)
    return turns


def _parse_uem_fields(fields: list[str]) -> tuple[str, float, float]:
    if fields[0].startswith("#"):
        raise _LineError(_NO_COMMENTS)
    if len(fields) != 4:
        raise _LineError(f"expected 4 fields, got {len(fields)}")
    start = _number(fields[2], "start")
    end = _number(fields[3], "end")
    if start < 0:
        raise _LineError(f"start {fields[2]!r} is negative")
    if end <= start:
        raise _LineError(f"end {fields[3]!r} is not after start {fields[2]!r}")
    return fields[0], start, end


def read_uem(path: str | Path) -> list[tuple[str, float, float]]:
    """Read a UEM file as ``(uri, start, end)`` regions, in file order (blank lines allowed)."""
    return [(uri, start, end) for _, uri, start, end in read_uem_records(path)]


def read_uem_records(path: str | Path) -> list[tuple[int, str, float, float]]:
    """Read a UEM file as ``(line, uri, start, end)`` records, in file order (blank lines allowed)."""
    regions: list[tuple[int, str, float, float]] = []
    for lineno, line in enumerate(read_text_lines(path, "UEM file"), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            regions.append((lineno, *_parse_uem_fields(fields)))
        except _LineError as exc:
            raise DataError(
                f"{path}:{lineno}: malformed UEM line {line!r}: {exc}. "
                f"Expected {_UEM_EXPECTED}; fix or delete this line."
            ) from None
    return regions


def _check_token(value: str, name: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{name} {value!r} must be non-empty and contain no whitespace")


def write_rttm(path: str | Path, turns: Iterable[Turn]) -> None:
    """Write ``turns`` as RTTM SPEAKER lines (times with 3 decimals), creating parent directories."""
    lines = []
    for turn in turns:
        _check_token(turn.uri, "uri")
        _check_token(turn.speaker, "speaker")
        lines.append(f"SPEAKER {turn.uri} 1 {turn.start:.3f} {turn.duration:.3f} <NA> <NA> {turn.speaker} <NA> <NA>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")


def write_uem(path: str | Path, uri: str, start: float, end: float) -> None:
    """Write a one-region UEM file (``uri 1 start end``), creating parent directories."""
    _check_token(uri, "uri")
    if not 0 <= start < end:
        raise ValueError(f"UEM region must satisfy 0 <= start < end, got start={start}, end={end}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{uri} 1 {start:.3f} {end:.3f}\n", encoding="utf-8")
