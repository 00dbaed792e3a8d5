"""Speaker material for the demo corpora, cut from the real speech sample shipped with pyannote.audio.

The sample (``pyannote/audio/sample/sample.wav``, 30 s, 16 kHz, two speakers) is located without
importing pyannote.audio. Extra "speakers" are made by speed perturbation (resampling, as in Kaldi or
SpeechBrain): it changes both tempo and pitch, so each factor yields a voice that sounds like a new
speaker. Everything here is pure numpy/scipy and deterministic.
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

__all__ = ["sample_dir", "load_sample", "speaker_segments", "perturb", "build_speaker_pool", "speaker_id"]

MIN_SEGMENT_DURATION = 0.3
"""Single-speaker pieces shorter than this (seconds) are dropped."""


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
) -> dict[str, list[np.ndarray]]:
    """Pool of single-speaker pieces: the real sample speakers plus one speed-perturbed copy per factor.

    Ids are ``spk90``, ``spk91`` (originals, left out if ``include_original`` is false) and
    ``spk90_sp0.90`` etc. The pool is at the sample's rate (16 kHz); keys are sorted.
    """
    waveform, sample_rate, turns = load_sample()
    base = speaker_segments(waveform, sample_rate, turns, min_duration=min_duration)
    pool: dict[str, list[np.ndarray]] = {}
    for spk in sorted(base):
        if include_original:
            pool[spk] = [s.copy() for s in base[spk]]
        for factor in sorted(set(float(f) for f in factors)):
            if factor == 1.0:
                continue
            pool[spk + _factor_suffix(factor)] = [perturb(s, sample_rate, factor) for s in base[spk]]
    return dict(sorted(pool.items()))
