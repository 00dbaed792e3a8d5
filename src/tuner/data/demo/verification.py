"""Small, deterministic speaker-verification corpus made from pyannote.audio's real speech sample.

Speakers are the two real sample speakers and speed-perturbed copies of them (each speed factor makes a
new voice). Train speakers are the originals plus ``train_factors`` copies; dev and test speakers are
copies made with other factors, so no dev/test speaker is heard in train. Each utterance is a random
1.5-3 s window of its speaker's concatenated single-speaker speech, with a small random gain and a low
noise floor. The layout is the IndicSUPERB/Kathbath one read by :mod:`tuner.data.verification`::

    train/<speaker>/u000.wav ...      16 kHz mono PCM_16
    dev/<speaker>/u000.wav ...
    test/<speaker>/u000.wav ...
    trials/dev.txt, trials/test.txt   "label path1 path2" (1 = same speaker), paths relative to out_dir
    README.md, corpus.json            description; generation parameters (the completion marker)

Trial lists are balanced (as many target as non-target lines), never pair an utterance with itself and
hold no pair twice (in either order). Each speaker has only ~8-12 s of real speech, so utterances of one
speaker overlap in content. The corpus is written to a temporary sibling directory and renamed into
place; the same parameters give byte-identical files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from tuner.data.demo._corpus import (
    SPLITS,
    CorpusParams,
    DemoCorpus,
    check_between,
    check_int,
    check_pair,
    check_seed,
)
from tuner.data.demo._speakers import (
    DEV_FACTORS,
    TEST_FACTORS,
    TRAIN_FACTORS,
    _factor_suffix,
    add_noise_floor,
    check_speech_length,
    fade,
    format_factors,
    gain_to,
    limit_peak,
    speaker_segments,
    speaker_voices,
)

__all__ = [
    "TRAIN_FACTORS",
    "DEV_FACTORS",
    "TEST_FACTORS",
    "EVAL_FACTORS",
    "DEFAULT_TRIALS",
    "generate_verification_corpus",
    "ensure_verification_corpus",
]

logger = logging.getLogger(__name__)

# TRAIN_FACTORS, DEV_FACTORS, TEST_FACTORS: the speaker split shared with the separation corpus (_speakers.py)
EVAL_FACTORS: tuple[tuple[float, ...], tuple[float, ...]] = (DEV_FACTORS, TEST_FACTORS)
"""Default ``eval_factors``: ``(dev factors, test factors)``."""

_VERSION = 1  # bump when the generated content changes, so ensure_verification_corpus regenerates
_TRIAL_SPLITS = ("dev", "test")

_RMS_DBFS = -26.0
_GAIN_DB = 3.0  # +/- random gain per utterance
_NOISE_DBFS = -55.0
_PEAK_DBFS = -1.0
_MAX_UTTERANCES = 200
DEFAULT_TRIALS = 120
"""Trial lines per list when ``n_dev_trials`` / ``n_test_trials`` is None (fewer if the corpus is too small)."""


@dataclass(frozen=True)
class _Params(CorpusParams):
    train_factors: tuple[float, ...]
    dev_factors: tuple[float, ...]
    test_factors: tuple[float, ...]
    utterances_per_speaker: int
    utterance_seconds: tuple[float, float]
    n_dev_trials: int
    n_test_trials: int
    sample_rate: int

    def factors(self, split: str) -> tuple[float, ...]:
        return {"train": self.train_factors, "dev": self.dev_factors, "test": self.test_factors}[split]

    def n_trials(self, split: str) -> int:
        return {"dev": self.n_dev_trials, "test": self.n_test_trials}[split]


def _factors(name: str, values: Sequence[float]) -> tuple[float, ...]:
    try:
        rounded = [round(float(v), 2) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if not rounded:
        raise ValueError(f"{name} must hold at least one speed factor")
    for value in rounded:
        if not (np.isfinite(value) and 0.5 <= value <= 2.0) or value == 1.0:
            raise ValueError(f"{name}: speed factors must lie in [0.5, 2.0] and differ from 1.0, got {value}")
    if len(set(rounded)) != len(rounded):
        raise ValueError(f"{name} holds the same factor twice (factors are compared to 2 decimals): {values!r}")
    return tuple(sorted(rounded))


def _eval_factors(values: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(dev, test)`` factors from a pair of sequences, or one sequence used by both splits."""
    values = list(values)
    if len(values) == 2 and all(isinstance(v, (list, tuple)) for v in values):
        return _factors("eval_factors[0] (dev)", values[0]), _factors("eval_factors[1] (test)", values[1])
    shared = _factors("eval_factors", values)
    return shared, shared


def _params(
    seed: int,
    train_factors: Sequence[float],
    eval_factors: Any,
    utterances_per_speaker: int,
    utterance_seconds: Sequence[float],
    n_dev_trials: int | None,
    n_test_trials: int | None,
    sample_rate: int,
) -> _Params:
    seed = check_int("seed", seed)
    check_seed(seed)
    train = _factors("train_factors", train_factors)
    dev, test = _eval_factors(eval_factors)
    for name, split in (("dev", dev), ("test", test)):
        if set(split) & set(train):
            raise ValueError(f"{name} speed factors {sorted(set(split) & set(train))} are also train factors")
    if dev != test and set(dev) & set(test):
        raise ValueError(f"dev and test speed factors overlap: {sorted(set(dev) & set(test))}")
    per_speaker = check_int("utterances_per_speaker", utterances_per_speaker)
    check_between("utterances_per_speaker", per_speaker, 2, _MAX_UTTERANCES)
    window = check_pair("utterance_seconds", utterance_seconds, 0.5, 6.0, what="seconds")
    sample_rate = check_int("sample_rate", sample_rate)
    check_between("sample_rate", sample_rate, 8000, 48000, " Hz")
    n_originals = len(speaker_segments())
    trials: dict[str, int] = {}
    for name, n, factors in (("n_dev_trials", n_dev_trials, dev), ("n_test_trials", n_test_trials, test)):
        n_utts = n_originals * len(factors) * per_speaker
        n_target = n_originals * len(factors) * per_speaker * (per_speaker - 1) // 2
        n_nontarget = n_utts * (n_utts - 1) // 2 - n_target
        limit = 2 * min(n_target, n_nontarget)
        n = trials[name] = min(DEFAULT_TRIALS, limit) if n is None else check_int(name, n)
        if n < 2 or n % 2 or n > limit:
            raise ValueError(
                f"{name} must be an even number between 2 and {limit} (half targets, half non-targets, "
                f"no pair twice), got {n}"
            )
    return _Params(
        seed, train, dev, test, per_speaker, window, trials["n_dev_trials"], trials["n_test_trials"], sample_rate
    )


def _speaker_ids(params: _Params, split: str) -> list[str]:
    originals = sorted(speaker_segments())
    ids = [spk + _factor_suffix(f) for spk in originals for f in params.factors(split)]
    if split == "train":
        ids += originals
    return sorted(ids)


def _utterance_name(index: int) -> str:
    return f"u{index:03d}.wav"


# ----------------------------------------------------------------------------------------- audio


def _voices(params: _Params, split: str) -> dict[str, np.ndarray]:
    """Each speaker's single-speaker pieces, faded and concatenated, at ``params.sample_rate``."""
    return speaker_voices(params.factors(split), include_original=(split == "train"), sample_rate=params.sample_rate)


def _utterance(rng: np.random.Generator, voice: np.ndarray, params: _Params) -> np.ndarray:
    sr = params.sample_rate
    n = round(rng.uniform(*params.utterance_seconds) * sr)
    start = int(rng.integers(0, len(voice) - n + 1))
    audio = fade(voice[start : start + n].copy(), sr)
    audio *= np.float32(gain_to(audio, _RMS_DBFS + rng.uniform(-_GAIN_DB, _GAIN_DB)))
    add_noise_floor(rng, audio, _NOISE_DBFS)
    limit_peak(audio, _PEAK_DBFS)
    return audio


def _trials(rng: np.random.Generator, utterances: list[tuple[str, str]], n_trials: int) -> list[str]:
    """Balanced trial lines over ``utterances`` (speaker, relative path): distinct unordered pairs."""
    speakers = np.array([spk for spk, _ in utterances])
    first, second = np.triu_indices(len(utterances), 1)
    same = speakers[first] == speakers[second]
    half = n_trials // 2
    picked = []
    for label, candidates in ((1, np.flatnonzero(same)), (0, np.flatnonzero(~same))):
        chosen = candidates[rng.choice(len(candidates), size=half, replace=False)]
        flip = rng.random(half) < 0.5
        for pair, swap in zip(chosen, flip):
            a, b = utterances[first[pair]][1], utterances[second[pair]][1]
            picked.append(f"{label} {b} {a}\n" if swap else f"{label} {a} {b}\n")
    return [picked[i] for i in rng.permutation(len(picked))]


# --------------------------------------------------------------------------------------- writing


def _readme(params: _Params, stats: dict[str, dict[str, Any]]) -> str:
    rows = "\n".join(
        f"| {split} | {s['speakers']} | {s['utterances']} | {s['seconds']:.1f} | "
        f"{s.get('target_trials', '-')} | {s.get('nontarget_trials', '-')} |"
        for split, s in stats.items()
    )
    low, high = params.utterance_seconds
    return f"""\
# tuner demo speaker-verification corpus

Utterances cut from the real speech sample shipped with pyannote.audio
(`pyannote/audio/sample/sample.wav`, MIT license), in the IndicSUPERB/Kathbath layout
(`<split>/<speaker>/<utterance>.wav`, trial lists `label path1 path2`). It is meant for tests and
demos of tuner, not for benchmarking.

* Speakers: the two sample speakers (spk90, spk91) and speed-perturbed copies of them (resampling
  changes tempo and pitch, so each factor makes a new voice).
  Train factors: {format_factors(params.train_factors)} (plus the originals);
  dev factors: {format_factors(params.dev_factors)}; test factors: {format_factors(params.test_factors)} (originals
  excluded), so dev/test speakers never occur in train.
* {params.utterances_per_speaker} utterances per speaker, each a random {low:g}-{high:g} s window of the speaker's
  concatenated speech at {params.sample_rate} Hz, mono PCM_16, with a random gain of +/-{_GAIN_DB:g} dB around
  {_RMS_DBFS:g} dBFS RMS and a {_NOISE_DBFS:g} dBFS white-noise floor. Each speaker has only ~8-12 s of
  speech, so utterances of one speaker overlap in content.
* `trials/dev.txt`, `trials/test.txt`: label 1 = same speaker, 0 = different speakers; paths
  relative to this directory; balanced, no utterance paired with itself, no pair twice.

| split | speakers | utterances | seconds | target trials | non-target trials |
|---|---|---|---|---|---|
{rows}

Generated by `tuner.data.demo.generate_verification_corpus(out_dir, seed={params.seed}, ...)`
(generator version {_VERSION}, parameters in `corpus.json`); the same parameters reproduce
byte-identical files.
"""


def _write_corpus(root: Path, params: _Params, final_dir: Path) -> dict[str, Any]:
    """Fill ``root``; return the marker's extra entries (the marker itself is written by the caller)."""
    stats: dict[str, dict[str, Any]] = {}
    trial_dir = root / "trials"
    trial_dir.mkdir()
    for split_index, split in enumerate(SPLITS):
        voices = _voices(params, split)
        check_speech_length(
            "utterance_seconds",
            params.utterance_seconds[1],
            voices.values(),
            params.sample_rate,
            split,
            "lower it or use speed factors closer to 1",
        )
        utterances: list[tuple[str, str]] = []
        n_samples = 0
        for speaker_index, spk in enumerate(sorted(voices)):
            (root / split / spk).mkdir(parents=True)
            rng = np.random.default_rng([params.seed, split_index, speaker_index])
            for index in range(params.utterances_per_speaker):
                audio = _utterance(rng, voices[spk], params)
                relative = f"{split}/{spk}/{_utterance_name(index)}"
                sf.write(root / relative, audio, params.sample_rate, subtype="PCM_16", format="WAV")
                utterances.append((spk, relative))
                n_samples += len(audio)
        stats[split] = {
            "speakers": len(voices),
            "utterances": len(utterances),
            "seconds": round(n_samples / params.sample_rate, 3),
        }
        if split in _TRIAL_SPLITS:
            rng = np.random.default_rng([params.seed, split_index])
            lines = _trials(rng, utterances, params.n_trials(split))
            (trial_dir / f"{split}.txt").write_text("".join(lines), encoding="utf-8")
            stats[split]["target_trials"] = stats[split]["nontarget_trials"] = len(lines) // 2
        logger.info(
            "demo verification corpus: wrote %s split (%d speakers, %d utterances, %.0f s%s) to %s",
            split,
            len(voices),
            len(utterances),
            n_samples / params.sample_rate,
            f", {params.n_trials(split)} trials" if split in _TRIAL_SPLITS else "",
            final_dir / split,
        )
    (root / "README.md").write_text(_readme(params, stats), encoding="utf-8")
    return {"stats": stats}


def _required_files(params: _Params) -> list[str]:
    files = ["README.md"] + [f"trials/{split}.txt" for split in _TRIAL_SPLITS]
    for split in SPLITS:
        for spk in _speaker_ids(params, split):
            files += [f"{split}/{spk}/{_utterance_name(i)}" for i in range(params.utterances_per_speaker)]
    return files


_CORPUS = DemoCorpus("verification", _VERSION, logger, _write_corpus, _required_files)


def generate_verification_corpus(
    out_dir: str | Path,
    *,
    seed: int = 0,
    train_factors: Sequence[float] = TRAIN_FACTORS,
    eval_factors: Any = EVAL_FACTORS,
    utterances_per_speaker: int = 8,
    utterance_seconds: tuple[float, float] = (1.5, 3.0),
    n_dev_trials: int | None = None,
    n_test_trials: int | None = None,
    sample_rate: int = 16000,
) -> Path:
    """(Re)generate the demo verification corpus in ``out_dir`` and return ``out_dir``.

    ``eval_factors`` is ``(dev_factors, test_factors)``, or one sequence of factors shared by dev and test.
    Factors are rounded to 2 decimals; train, dev and test factors must be disjoint (1.0, the originals,
    belongs to train). ``n_*_trials`` counts lines (even: half target, half non-target); None means
    :data:`DEFAULT_TRIALS` (120), or as many as a smaller corpus allows without repeating a pair.

    Files are written to a temporary sibling directory that replaces ``out_dir`` at the end. An existing
    ``out_dir`` is replaced only if it is empty or a previous demo verification corpus (else
    :class:`~tuner.errors.DataError`). Invalid parameters raise ValueError.
    """
    params = _params(
        seed,
        train_factors,
        eval_factors,
        utterances_per_speaker,
        utterance_seconds,
        n_dev_trials,
        n_test_trials,
        sample_rate,
    )
    return _CORPUS.generate(out_dir, params)


def ensure_verification_corpus(
    out_dir: str | Path,
    seed: int = 0,
    *,
    train_factors: Sequence[float] = TRAIN_FACTORS,
    eval_factors: Any = EVAL_FACTORS,
    utterances_per_speaker: int = 8,
    utterance_seconds: tuple[float, float] = (1.5, 3.0),
    n_dev_trials: int | None = None,
    n_test_trials: int | None = None,
    sample_rate: int = 16000,
) -> Path:
    """Return ``out_dir`` if it holds a complete corpus made with these parameters, else generate it."""
    params = _params(
        seed,
        train_factors,
        eval_factors,
        utterances_per_speaker,
        utterance_seconds,
        n_dev_trials,
        n_test_trials,
        sample_rate,
    )
    return _CORPUS.ensure(out_dir, params)
