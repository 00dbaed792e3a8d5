"""Speaker material for the demo corpora, cut from the real speech sample shipped with pyannote.audio.

The sample (``pyannote/audio/sample/sample.wav``, 30 s, 16 kHz, two speakers) is located without
importing pyannote.audio. Extra "speakers" are made by speed perturbation (resampling, as in Kaldi or
SpeechBrain): it changes both tempo and pitch, so each factor yields a voice that sounds like a new
speaker. The level helpers at the end (fades, gains, noise floor, peak limit) are shared by the demo
generators. Everything here is pure numpy/scipy and deterministic.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from tuner.data.annotations import Turn, read_rttm
from tuner.errors import DataError

__all__ = [
    "TRAIN_FACTORS",
    "DEV_FACTORS",
    "TEST_FACTORS",
    "sample_dir",
    "load_sample",
    "speaker_segments",
    "perturb",
    "build_speaker_pool",
    "speaker_voices",
    "speaker_id",
    "format_factors",
    "check_speech_length",
    "fade",
    "rms",
    "gain_to",
    "add_noise_floor",
    "limit_peak",
]

MIN_SEGMENT_DURATION = 0.3
"""Single-speaker pieces shorter than this (seconds) are dropped."""
FADE = 0.01
"""Seconds of the raised-cosine fade at both ends of a piece (see :func:`fade`)."""

# Speaker splits of the verification and separation corpora (the diarization corpus has its own).
TRAIN_FACTORS: tuple[float, ...] = (0.80, 0.85, 0.91, 0.95, 1.05, 1.10, 1.17, 1.25)
"""Speed factors of train speakers (on top of the two original speakers)."""
DEV_FACTORS: tuple[float, ...] = (0.87, 1.07, 1.19)
"""Speed factors of dev speakers (originals excluded): none is heard in train or test."""
TEST_FACTORS: tuple[float, ...] = (0.83, 1.03, 1.14)
"""Speed factors of test speakers (originals excluded): none is heard in train or dev."""


def sample_dir() -> Path:
    """Directory holding ``sample.wav`` and ``sample.rttm`` inside the installed pyannote.audio."""
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "pyannote.audio is not installed, so its speech sample (pyannote/audio/sample/sample.wav) "
            "cannot be found; install pyannote.audio in this environment."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "sample"


@functools.lru_cache(maxsize=1)
def _load_sample_cached() -> tuple[np.ndarray, int, tuple[Turn, ...]]:
    directory = sample_dir()
    wav, rttm = directory / "sample.wav", directory / "sample.rttm"
    try:
        waveform, sample_rate = sf.read(wav, dtype="float32", always_2d=True)
    except (OSError, sf.LibsndfileError) as exc:
        raise DataError(
            f"{wav}: cannot read pyannote.audio's speech sample ({exc}); reinstall pyannote.audio."
        ) from None
    waveform = np.ascontiguousarray(waveform.mean(axis=1, dtype=np.float32))
    waveform.setflags(write=False)
    return waveform, int(sample_rate), tuple(read_rttm(rttm))


def load_sample() -> tuple[np.ndarray, int, list[Turn]]:
    """Return ``(waveform, sample_rate, turns)`` of the pyannote.audio sample (mono float32, 16 kHz)."""
    waveform, sample_rate, turns = _load_sample_cached()
    return waveform.copy(), sample_rate, list(turns)


def speaker_id(label: str) -> str:
    """Short pool id of an RTTM speaker label: ``speaker90`` -> ``spk90``."""
    return "spk" + label[len("speaker") :] if label.startswith("speaker") else label


def _subtract(start: float, end: float, others: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Parts of ``[start, end)`` not covered by any interval in ``others``."""
    pieces = [(start, end)]
    for o_start, o_end in others:
        nxt = []
        for p_start, p_end in pieces:
            if o_end <= p_start or o_start >= p_end:
                nxt.append((p_start, p_end))
                continue
            if o_start > p_start:
                nxt.append((p_start, o_start))
            if o_end < p_end:
                nxt.append((o_end, p_end))
        pieces = nxt
    return pieces


def speaker_segments(
    waveform: np.ndarray | None = None,
    sample_rate: int | None = None,
    turns: Iterable[Turn] | None = None,
    *,
    min_duration: float = MIN_SEGMENT_DURATION,
) -> dict[str, list[np.ndarray]]:
    """Cut ``waveform`` into single-speaker pieces following ``turns``, keyed by :func:`speaker_id`.

    Stretches where another speaker's turn overlaps are removed; pieces shorter than ``min_duration``
    seconds are dropped. Defaults to the pyannote.audio sample. Keys are sorted; pieces are in time order.
    """
    if waveform is None or sample_rate is None or turns is None:
        s_wave, s_rate, s_turns = load_sample()
        waveform = s_wave if waveform is None else waveform
        sample_rate = s_rate if sample_rate is None else sample_rate
        turns = s_turns if turns is None else turns
    turns = sorted(turns, key=lambda t: (t.start, t.end, t.speaker))
    pieces: dict[str, list[tuple[float, float]]] = {}
    for turn in turns:
        others = [(o.start, o.end) for o in turns if o.speaker != turn.speaker]
        for start, end in _subtract(turn.start, turn.end, others):
            if end - start >= min_duration:
                pieces.setdefault(speaker_id(turn.speaker), []).append((start, end))
    segments: dict[str, list[np.ndarray]] = {}
    for spk in sorted(pieces):
        for start, end in sorted(pieces[spk]):
            a, b = round(start * sample_rate), min(round(end * sample_rate), len(waveform))
            if (b - a) >= min_duration * sample_rate:
                segments.setdefault(spk, []).append(np.array(waveform[a:b], dtype=np.float32))
    return segments


def _ratio(factor: float) -> Fraction:
    if not (np.isfinite(factor) and 0.5 <= factor <= 2.0):
        raise ValueError(f"speed factor must be within [0.5, 2.0], got {factor}")
    return Fraction(factor).limit_denominator(100)


def perturb(waveform: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """Speed-perturb ``waveform`` by ``factor`` (>1: faster and higher-pitched), keeping ``sample_rate``.

    The signal is resampled by the rational approximation ``1/factor`` (``scipy.signal.resample_poly``)
    and played back at the original rate, so duration scales by ``1/factor`` and pitch by ``factor``.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    ratio = _ratio(factor)
    waveform = np.asarray(waveform, dtype=np.float32)
    if ratio == 1:
        return waveform.copy()
    out = resample_poly(waveform, up=ratio.denominator, down=ratio.numerator)
    return np.asarray(out, dtype=np.float32)


def _factor_suffix(factor: float) -> str:
    return f"_sp{factor:.2f}"


def build_speaker_pool(
    factors: Iterable[float] = (),
    *,
    include_original: bool = True,
    min_duration: float = MIN_SEGMENT_DURATION,
    sample_rate: int | None = None,
) -> dict[str, list[np.ndarray]]:
    """Pool of single-speaker pieces: the real sample speakers plus one speed-perturbed copy per factor.

    Ids are ``spk90``, ``spk91`` (originals, left out if ``include_original`` is false) and
    ``spk90_sp0.90`` etc. The pool is at ``sample_rate`` (default: the sample's rate, 16 kHz), resampled
    after the speed perturbation; keys are sorted.
    """
    waveform, source_rate, turns = load_sample()
    base = speaker_segments(waveform, source_rate, turns, min_duration=min_duration)
    pool: dict[str, list[np.ndarray]] = {}
    for spk in sorted(base):
        if include_original:
            pool[spk] = [s.copy() for s in base[spk]]
        for factor in sorted(set(float(f) for f in factors)):
            if factor == 1.0:
                continue
            pool[spk + _factor_suffix(factor)] = [perturb(s, source_rate, factor) for s in base[spk]]
    if sample_rate is not None and sample_rate != source_rate:
        ratio = Fraction(sample_rate, source_rate)
        for spk, pieces in pool.items():
            pool[spk] = [
                np.asarray(resample_poly(p, ratio.numerator, ratio.denominator), dtype=np.float32) for p in pieces
            ]
    return dict(sorted(pool.items()))


def speaker_voices(
    factors: Iterable[float], *, include_original: bool, sample_rate: int, dtype: type[np.floating] = np.float32
) -> dict[str, np.ndarray]:
    """Each speaker of :func:`build_speaker_pool` as one array: its pieces, faded and concatenated (keys sorted).

    Pieces are converted to ``dtype`` before being faded, so the fades are computed in that precision.
    """
    pool = build_speaker_pool(factors, include_original=include_original, sample_rate=sample_rate)
    return {spk: np.concatenate([fade(p.astype(dtype), sample_rate) for p in pieces]) for spk, pieces in pool.items()}


def format_factors(factors: Iterable[float]) -> str:
    """``0.85, 0.92, ...``: speed factors as written in the corpora's READMEs."""
    return ", ".join(f"{f:.2f}" for f in factors)


def check_speech_length(
    name: str, seconds: float, voices: Iterable[np.ndarray], sample_rate: int, split: str, advice: str
) -> None:
    """ValueError if ``seconds`` (the longest window ``name`` asks for) exceeds the shortest of ``voices``."""
    shortest = min(len(v) for v in voices) / sample_rate
    if seconds > shortest:
        raise ValueError(
            f"{name} max {seconds} s exceeds the {shortest:.2f} s of speech of the shortest {split} speaker; {advice}"
        )


# ---------------------------------------------------------------------------------------- levels


def fade(chunk: np.ndarray, sample_rate: int) -> np.ndarray:
    """Apply a :data:`FADE`-second raised-cosine fade-in and fade-out to ``chunk`` in place; return it."""
    n = min(int(FADE * sample_rate), len(chunk) // 2)
    if n > 0:
        ramp = (0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)).astype(chunk.dtype)
        chunk[:n] *= ramp
        chunk[-n:] *= ramp[::-1]
    return chunk


def rms(x: np.ndarray) -> float:
    """Root mean square of ``x`` (computed in float64), or 1.0 for silence."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) or 1.0


def gain_to(x: np.ndarray, dbfs: float) -> float:
    """The factor that brings the RMS of ``x`` to ``dbfs``."""
    return 10 ** (dbfs / 20) / rms(x)


def add_noise_floor(rng: np.random.Generator, audio: np.ndarray, dbfs: float) -> None:
    """Add white Gaussian noise of ``dbfs`` RMS to the float32 ``audio``, in place."""
    audio += rng.standard_normal(len(audio)).astype(np.float32) * np.float32(10 ** (dbfs / 20))


def limit_peak(audio: np.ndarray, dbfs: float) -> None:
    """Scale the float32 ``audio`` down, in place, so that its peak does not exceed ``dbfs``."""
    peak, ceiling = float(np.max(np.abs(audio))), 10 ** (dbfs / 20)
    if peak > ceiling:
        audio *= np.float32(ceiling / peak)
