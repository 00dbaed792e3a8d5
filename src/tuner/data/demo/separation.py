"""Small, deterministic two-speaker separation corpus (Libri2Mix "both" layout) from pyannote.audio's sample.

Speakers are the two real sample speakers and speed-perturbed copies of them (each speed factor makes a
new voice). Train speakers are the originals plus :data:`TRAIN_FACTORS` copies; dev and test speakers are
copies made with other factors (:data:`DEV_FACTORS`, :data:`TEST_FACTORS`), so no dev/test voice is heard
in train. Each mixture pairs two speakers made from *different* real speakers (so the two sources never
say the same words): each source is a random window of its speaker's concatenated single-speaker speech,
RMS-normalised to -25 dBFS, the second one with a random relative gain of +/-5 dB (LibriMix style). The
noise is low-passed Gaussian noise at ``noise_db`` dBFS RMS. ``mix = s1 + s2 + noise``; when a peak of
any of them exceeds 0.9, all four are scaled by the same factor. Files are 16-bit PCM, and the sources and
noise are rounded to that grid *before* they are summed, so ``mix == s1 + s2 + noise`` holds exactly in the
files (also as float32 read by soundfile). Layout (``wav16k`` when ``sample_rate`` is 16000)::

    wav8k/min/{train,dev,test}/{mix_both,s1,s2,noise}/<ID>.wav   all files of a mixture equally long ('min')
    metadata/mixture_{train,dev,test}_mix_both.csv                 LibriMix format, length in samples
    speechbrain/{train,dev,test}.csv                               ID,duration,mix_wav,s1_wav,s2_wav,noise_wav
    README.md, corpus.json                                         description; parameters (completion marker)

IDs join the two source utterance IDs with ``_`` as LibriMix does, e.g. ``spk90-sp087-u01_spk91-sp119-u03``
(speaker ``spk90-sp087`` = spk90 at speed 0.87, its first utterance in this split). Paths in both CSVs are
relative to the CSV's own folder (``../wav8k/min/train/mix_both/<ID>.wav``), which is the default rule of
:func:`tuner.data.separation.read_mixture_csv`, so the corpus can be moved. Each speaker has only ~8-13 s of
speech, so sources of one speaker overlap in content. The same parameters give byte-identical files.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from tuner.data.demo._corpus import (
    SPLITS,
    CountedParams,
    DemoCorpus,
    check_counts,
    check_ints,
    check_pair,
    check_seed,
)
from tuner.data.demo._speakers import (
    DEV_FACTORS,
    TEST_FACTORS,
    TRAIN_FACTORS,
    check_speech_length,
    fade,
    format_factors,
    gain_to,
    speaker_voices,
)
from tuner.data.separation import read_mixture_csv
from tuner.errors import DataError

__all__ = [
    "TRAIN_FACTORS",
    "DEV_FACTORS",
    "TEST_FACTORS",
    "generate_separation_corpus",
    "ensure_separation_corpus",
    "speaker_of",
]

logger = logging.getLogger(__name__)

# TRAIN_FACTORS, DEV_FACTORS, TEST_FACTORS: the speaker split shared with the verification corpus (_speakers.py)
_SPLIT_FACTORS = {"train": TRAIN_FACTORS, "dev": DEV_FACTORS, "test": TEST_FACTORS}

_VERSION = 1  # bump when the generated content changes, so ensure_separation_corpus regenerates
_FOLDERS = ("mix_both", "s1", "s2", "noise")
_LIBRIMIX_COLUMNS = ("mixture_ID", "mixture_path", "source_1_path", "source_2_path", "noise_path", "length")
_SPEECHBRAIN_COLUMNS = ("ID", "duration", "mix_wav", "s1_wav", "s2_wav", "noise_wav")

_SPEECH_DBFS = -25.0  # RMS of the first source
_GAIN_DB = 5.0  # +/- random gain of the second source relative to the first
_NOISE_POLE = 0.9  # one-pole low-pass of the white noise (a duller, more ambient-like hiss)
_PEAK = 0.9
_PCM = 32768  # 16-bit full scale, as soundfile reads PCM_16


@dataclass(frozen=True)
class _Params(CountedParams):
    sample_rate: int
    mixture_seconds: tuple[float, float]
    noise_db: tuple[float, float]

    def settings(self) -> dict[str, Any]:
        return {f"{split}_factors": factors for split, factors in _SPLIT_FACTORS.items()}

    @property
    def wav_dir(self) -> str:
        return f"wav{self.sample_rate // 1000}k/min"


def _params(
    seed: int,
    sample_rate: int,
    n_train: int,
    n_dev: int,
    n_test: int,
    mixture_seconds: Sequence[float],
    noise_db: Sequence[float],
) -> _Params:
    ints = check_ints(seed=seed, sample_rate=sample_rate, n_train=n_train, n_dev=n_dev, n_test=n_test)
    check_seed(ints["seed"])
    if ints["sample_rate"] not in (8000, 16000):
        raise ValueError(f"sample_rate must be 8000 or 16000 (LibriMix's wav8k/wav16k), got {sample_rate}")
    check_counts(ints["n_train"], ints["n_dev"], ints["n_test"])
    return _Params(
        **ints,
        # bounds as ints, so the messages print them as before ("0.5 <= min <= max <= 6")
        mixture_seconds=check_pair("mixture_seconds", mixture_seconds, 0.5, 6),
        noise_db=check_pair("noise_db", noise_db, -120, -6),
    )


def _tag(pool_id: str) -> str:
    """Corpus speaker name of a pool id: ``spk90_sp0.87`` -> ``spk90-sp087`` (no ``_``: it joins IDs)."""
    base, _, factor = pool_id.partition("_sp")
    return f"{base}-sp{factor.replace('.', '')}" if factor else base


def speaker_of(source_id: str) -> str:
    """Speaker of a demo source utterance ID: ``spk90-sp087-u01`` -> ``spk90-sp087``."""
    return source_id.rsplit("-u", 1)[0]


# ----------------------------------------------------------------------------------------- audio


def _voices(split: str, sample_rate: int) -> dict[str, tuple[str, np.ndarray]]:
    """``{speaker: (real speaker, concatenated faded speech at sample_rate, float64)}`` of one split."""
    pool = speaker_voices(
        _SPLIT_FACTORS[split], include_original=(split == "train"), sample_rate=sample_rate, dtype=np.float64
    )
    voices = {_tag(pool_id): (pool_id.partition("_sp")[0], speech) for pool_id, speech in pool.items()}
    return dict(sorted(voices.items()))


def _render(
    rng: np.random.Generator, voices: dict[str, tuple[str, np.ndarray]], params: _Params
) -> tuple[list[str], list[np.ndarray]]:
    """One mixture: ``([speaker1, speaker2], [mix, s1, s2, noise] as int16)``."""
    sr = params.sample_rate
    by_real: dict[str, list[str]] = {}
    for tag, (real, _) in voices.items():
        by_real.setdefault(real, []).append(tag)
    reals = sorted(by_real)
    chosen = rng.choice(len(reals), size=2, replace=False)  # random order: who is s1 is random
    speakers = [by_real[reals[int(c)]][int(rng.integers(len(by_real[reals[int(c)]])))] for c in chosen]
    n = round(rng.uniform(*params.mixture_seconds) * sr)
    parts = []
    for k, spk in enumerate(speakers):
        voice = voices[spk][1]
        start = int(rng.integers(0, len(voice) - n + 1))
        source = fade(voice[start : start + n].copy(), sr)
        parts.append(source * gain_to(source, _SPEECH_DBFS + (rng.uniform(-_GAIN_DB, _GAIN_DB) if k else 0.0)))
    noise = lfilter([1.0 - _NOISE_POLE], [1.0, -_NOISE_POLE], rng.standard_normal(n))
    parts.append(noise * gain_to(noise, rng.uniform(*params.noise_db)))
    peak = max(float(np.max(np.abs(sum(parts)))), *(float(np.max(np.abs(p))) for p in parts))
    scale = _PEAK / peak if peak > _PEAK else 1.0
    quantised = [np.clip(np.round(p * scale * _PCM), -_PCM, _PCM - 1).astype(np.int16) for p in parts]
    mix = np.sum([q.astype(np.int32) for q in quantised], axis=0)
    assert np.max(np.abs(mix)) < _PCM  # peak <= 0.9 plus rounding: no clipping, so the sum stays exact
    return speakers, [mix.astype(np.int16), *quantised]


# --------------------------------------------------------------------------------------- writing


def _csv_text(columns: Sequence[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def _readme(params: _Params, stats: dict[str, dict[str, Any]]) -> str:
    rows = "\n".join(
        f"| {split} | {s['mixtures']} | {s['speakers']} | {s['seconds']:.1f} |" for split, s in stats.items()
    )
    low, high = params.mixture_seconds
    return f"""\
# tuner demo separation corpus (Libri2Mix "both" layout)

Two-speaker noisy mixtures made from the real speech sample shipped with pyannote.audio
(`pyannote/audio/sample/sample.wav`, MIT license), laid out like Libri2Mix `{params.wav_dir}` (mode
`min`: every file of a mixture has the same length). It is meant for tests and demos of tuner, not for
benchmarking.

* Speakers: the two sample speakers (spk90, spk91) and speed-perturbed copies of them (resampling
  changes tempo and pitch, so each factor makes a new voice). Train factors: {format_factors(TRAIN_FACTORS)} (plus
  the originals); dev factors: {format_factors(DEV_FACTORS)}; test factors: {format_factors(TEST_FACTORS)} (originals
  excluded), so dev/test speakers never occur in train. Each mixture pairs copies of the two different
  real speakers, so its sources never say the same words.
* Each mixture is {low:g}-{high:g} s at {params.sample_rate} Hz. Each source is a random window of its
  speaker's concatenated speech, RMS-normalised to {_SPEECH_DBFS:g} dBFS; s2 gets a random gain of
  +/-{_GAIN_DB:g} dB relative to s1. The noise is low-passed Gaussian noise at {params.noise_db[0]:g} to
  {params.noise_db[1]:g} dBFS RMS. If a peak exceeds {_PEAK:g}, s1, s2, noise and mixture are scaled together.
* Files are 16-bit PCM wav; s1, s2 and noise are rounded to 16 bits before being summed, so
  `mix_both = s1 + s2 + noise` holds exactly in the files.
* `metadata/mixture_<split>_mix_both.csv` (LibriMix format, `length` in samples) and
  `speechbrain/<split>.csv` (SpeechBrain format, `duration` in seconds) list the same mixtures, with
  paths relative to the CSV's own folder (read them with `tuner.data.separation.read_mixture_csv`).
* IDs join the source utterance IDs with `_`, e.g. `spk90-sp087-u01_spk91-sp119-u03`.

| split | mixtures | speakers | seconds |
|---|---|---|---|
{rows}

Generated by `tuner.data.demo.generate_separation_corpus(out_dir, seed={params.seed},
sample_rate={params.sample_rate}, n_train={params.n_train}, n_dev={params.n_dev}, n_test={params.n_test},
mixture_seconds={params.mixture_seconds}, noise_db={params.noise_db})` (generator version {_VERSION});
the same parameters reproduce byte-identical files.
"""


def _write_corpus(root: Path, params: _Params, final_dir: Path) -> dict[str, Any]:
    """Fill ``root``; return the marker's extra entries (the marker itself is written by the caller)."""
    sr = params.sample_rate
    stats: dict[str, dict[str, Any]] = {}
    (root / "metadata").mkdir()
    (root / "speechbrain").mkdir()
    for split_index, split in enumerate(SPLITS):
        voices = _voices(split, sr)
        check_speech_length(
            "mixture_seconds", params.mixture_seconds[1], (v for _, v in voices.values()), sr, split, "lower it"
        )
        split_dir = f"{params.wav_dir}/{split}"
        for folder in _FOLDERS:
            (root / split_dir / folder).mkdir(parents=True)
        counters: dict[str, int] = {}
        librimix_rows, speechbrain_rows, used, n_samples = [], [], set(), 0
        for index in range(params.count(split)):
            rng = np.random.default_rng([params.seed, split_index, index])
            speakers, audio = _render(rng, voices, params)
            utterances = []
            for spk in speakers:
                counters[spk] = counters.get(spk, 0) + 1
                utterances.append(f"{spk}-u{counters[spk]:02d}")
            mixture_id = "_".join(utterances)
            paths = [f"../{split_dir}/{folder}/{mixture_id}.wav" for folder in _FOLDERS]
            for folder, samples in zip(_FOLDERS, audio):
                sf.write(root / split_dir / folder / f"{mixture_id}.wav", samples, sr, subtype="PCM_16", format="WAV")
            length = len(audio[0])
            librimix_rows.append([mixture_id, *paths, length])
            speechbrain_rows.append([mixture_id, repr(length / sr), *paths])
            used.update(speakers)
            n_samples += length
        (root / "metadata" / f"mixture_{split}_mix_both.csv").write_text(
            _csv_text(_LIBRIMIX_COLUMNS, librimix_rows), encoding="utf-8"
        )
        (root / "speechbrain" / f"{split}.csv").write_text(
            _csv_text(_SPEECHBRAIN_COLUMNS, speechbrain_rows), encoding="utf-8"
        )
        stats[split] = {"mixtures": params.count(split), "speakers": len(used), "seconds": round(n_samples / sr, 3)}
        logger.info(
            "demo separation corpus: wrote %s split (%d mixtures, %d speakers, %.0f s) to %s",
            split,
            params.count(split),
            len(used),
            n_samples / sr,
            final_dir / split_dir,
        )
    (root / "README.md").write_text(_readme(params, stats), encoding="utf-8")
    return {"stats": stats}


def _csv_files(split: str) -> list[str]:
    return [f"metadata/mixture_{split}_mix_both.csv", f"speechbrain/{split}.csv"]


def _required_files(params: _Params) -> list[str]:
    return ["README.md"] + [f for split in SPLITS for f in _csv_files(split)]


def _lists_are_complete(out_dir: Path, params: _Params) -> bool:
    """True if every CSV lists ``params.count(split)`` mixtures and every file it names exists."""
    try:
        for split in SPLITS:
            for csv_file in _csv_files(split):
                if len(read_mixture_csv(out_dir / csv_file)) != params.count(split):
                    return False
    except DataError:
        return False
    return True


_CORPUS = DemoCorpus("separation", _VERSION, logger, _write_corpus, _required_files, check=_lists_are_complete)


def generate_separation_corpus(
    out_dir: str | Path,
    *,
    seed: int = 0,
    sample_rate: int = 8000,
    n_train: int = 48,
    n_dev: int = 12,
    n_test: int = 12,
    mixture_seconds: tuple[float, float] = (2.5, 4.0),
    noise_db: tuple[float, float] = (-40.0, -30.0),
) -> Path:
    """(Re)generate the demo separation corpus in ``out_dir`` and return ``out_dir``.

    ``sample_rate`` is 8000 or 16000; ``mixture_seconds`` is the (min, max) mixture duration and
    ``noise_db`` the (min, max) noise RMS in dBFS (speech is at -25 dBFS). Files are written to a temporary
    sibling directory that replaces ``out_dir`` at the end. An existing ``out_dir`` is replaced only if it is
    empty or a previous demo separation corpus (else :class:`~tuner.errors.DataError`). Invalid parameters
    raise ValueError.
    """
    return _CORPUS.generate(out_dir, _params(seed, sample_rate, n_train, n_dev, n_test, mixture_seconds, noise_db))


def ensure_separation_corpus(
    out_dir: str | Path,
    seed: int = 0,
    *,
    sample_rate: int = 8000,
    n_train: int = 48,
    n_dev: int = 12,
    n_test: int = 12,
    mixture_seconds: tuple[float, float] = (2.5, 4.0),
    noise_db: tuple[float, float] = (-40.0, -30.0),
) -> Path:
    """Return ``out_dir`` if it holds a complete corpus made with these parameters, else generate it."""
    return _CORPUS.ensure(out_dir, _params(seed, sample_rate, n_train, n_dev, n_test, mixture_seconds, noise_db))
