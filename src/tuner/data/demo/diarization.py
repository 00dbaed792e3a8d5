"""Small, deterministic speaker-diarization corpus made from pyannote.audio's real speech sample.

Each file is a synthetic conversation between 2-3 "speakers" of a pool (the two real sample speakers
and speed-perturbed copies of them): turns follow one another with short silences and sometimes
overlap the previous turn. Dev/test speakers use speed factors distinct from train ones, so validation
speakers are unseen during training. Layout (``out_dir``)::

    train.txt dev.txt test.txt          one uri per line
    {train,dev,test}/wav/{uri}.wav      mono PCM_16
    {train,dev,test}/rttm/{uri}.rttm    reference turns (uri = file stem, speaker = pool id)
    {train,dev,test}/uem/{uri}.uem      whole file
    database.yml                        pyannote.database protocol Demo.SpeakerDiarization.Default
    README.md, corpus.json              description; generation parameters (the completion marker)

The corpus is written to a temporary sibling directory and renamed into place, so ``out_dir`` is either
absent, a complete corpus, or untouched. Same parameters give byte-identical files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from tuner.data.annotations import Turn, write_rttm, write_uem
from tuner.data.demo._corpus import (
    SPLITS,
    CountedParams,
    DemoCorpus,
    check_between,
    check_counts,
    check_ints,
    check_seed,
)
from tuner.data.demo._speakers import (
    add_noise_floor,
    build_speaker_pool,
    fade,
    format_factors,
    gain_to,
    limit_peak,
)

__all__ = [
    "PROTOCOL",
    "TRAIN_FACTORS",
    "EVAL_FACTORS",
    "generate_diarization_corpus",
    "ensure_diarization_corpus",
]

logger = logging.getLogger(__name__)

PROTOCOL = "Demo.SpeakerDiarization.Default"
"""Name of the pyannote.database protocol declared by the corpus's ``database.yml``."""
TRAIN_FACTORS: tuple[float, ...] = (0.85, 0.92, 1.08, 1.16)
"""Speed factors of train speakers (on top of the two original speakers)."""
EVAL_FACTORS: tuple[float, ...] = (0.88, 1.04, 1.12)
"""Speed factors of dev/test speakers (originals excluded): none is heard in train."""

_VERSION = 1  # bump when the generated content changes, so ensure_diarization_corpus regenerates
# SPLITS name the directory, list file and uri infix of each split; pyannote subsets train/development/test

_SILENCE = (0.1, 1.5)  # s, gap between consecutive turns
_OVERLAP_PROB = 0.3
_OVERLAP = (0.2, 1.0)  # s, how much a turn overlaps the previous one
_TURN = (1.0, 6.0)  # s, turn duration
_MIN_CHUNK = 0.3  # s, shortest piece of speaker material inside a turn
_TAIL = 0.1  # s, minimum silence at the end of a file
_TURN_RMS_DBFS = -26.0
_GAIN_DB = 6.0
_NOISE_DBFS = -45.0
_PEAK_DBFS = -1.0


@dataclass(frozen=True)
class _Params(CountedParams):
    file_duration: float
    sample_rate: int

    def settings(self) -> dict[str, Any]:
        return {"train_factors": TRAIN_FACTORS, "eval_factors": EVAL_FACTORS}


def _params(seed: int, n_train: int, n_dev: int, n_test: int, file_duration: float, sample_rate: int) -> _Params:
    ints = check_ints(seed=seed, n_train=n_train, n_dev=n_dev, n_test=n_test, sample_rate=sample_rate)
    check_seed(ints["seed"])
    check_counts(ints["n_train"], ints["n_dev"], ints["n_test"])
    check_between("sample_rate", ints["sample_rate"], 8000, 48000, " Hz")
    file_duration = float(file_duration)
    check_between("file_duration", file_duration, 5, 3600, " seconds")
    # RTTM/UEM times have millisecond resolution: keep the file duration on that grid
    return _Params(**ints, file_duration=round(file_duration * 1000) / 1000)


def _uri(split: str, index: int) -> str:
    return f"demo_{split}_{index:03d}"


# ----------------------------------------------------------------------------------------- audio


def _pools(sample_rate: int) -> dict[str, dict[str, list[np.ndarray]]]:
    """Speaker pools per split, resampled to ``sample_rate``."""
    train = build_speaker_pool(TRAIN_FACTORS, sample_rate=sample_rate)
    evaluation = build_speaker_pool(EVAL_FACTORS, include_original=False, sample_rate=sample_rate)
    return {"train": train, "dev": evaluation, "test": evaluation}


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _samples(ms: int, sample_rate: int) -> int:
    return round(ms * sample_rate / 1000)


def _assemble(rng: np.random.Generator, pieces: list[np.ndarray], target_ms: int, sample_rate: int) -> np.ndarray:
    """Concatenate random (cropped) pieces into exactly ``target_ms`` of one speaker's speech."""
    chunks: list[np.ndarray] = []
    total_ms = 0
    min_chunk_ms = _ms(_MIN_CHUNK)
    while total_ms < target_ms:
        piece = pieces[int(rng.integers(len(pieces)))]
        piece_ms = max(1, len(piece) * 1000 // sample_rate)
        need = target_ms - total_ms
        if piece_ms >= need:
            chunk_ms = need
        elif need - piece_ms >= min_chunk_ms:
            chunk_ms = piece_ms
        else:  # the whole piece would leave a sliver: leave room for one more decent chunk instead
            chunk_ms = min(piece_ms, max(need - min_chunk_ms, need // 2))
        n = min(_samples(chunk_ms, sample_rate), len(piece))
        offset = int(rng.integers(0, len(piece) - n + 1))
        chunks.append(fade(piece[offset : offset + n].copy(), sample_rate))
        total_ms += chunk_ms
    audio = np.concatenate(chunks)
    n = _samples(target_ms, sample_rate)  # exact length of the annotated duration
    return audio[:n] if len(audio) >= n else np.pad(audio, (0, n - len(audio)))


def _render(
    rng: np.random.Generator, pool: dict[str, list[np.ndarray]], uri: str, duration_ms: int, sample_rate: int
) -> tuple[np.ndarray, list[Turn]]:
    """One conversation: returns (float32 waveform, turns sorted by start)."""
    ids = sorted(pool)
    n_speakers = min(int(rng.integers(2, 4)), len(ids))
    speakers = sorted(str(s) for s in rng.choice(ids, size=n_speakers, replace=False))
    limit_ms = duration_ms - _ms(_TAIL)
    placed: list[tuple[int, int, str]] = []  # (start_ms, duration_ms, speaker)
    audio = np.zeros(_samples(duration_ms, sample_rate), dtype=np.float32)
    last_end, last_speaker = 0, ""
    while True:
        silence = _ms(rng.uniform(*_SILENCE))
        overlap = _ms(rng.uniform(*_OVERLAP)) if placed and rng.random() < _OVERLAP_PROB else 0
        start = last_end - overlap if overlap else last_end + silence
        active = {spk for s, d, spk in placed if s + d > start}
        eligible = [s for s in speakers if s not in active]
        if not eligible:  # everybody is still talking: wait for silence instead of overlapping
            start = last_end + silence
            eligible = list(speakers)
        eligible = [s for s in eligible if s != last_speaker] or eligible
        speaker = eligible[int(rng.integers(len(eligible)))]
        target_ms = min(_ms(rng.uniform(*_TURN)), limit_ms - start)
        if target_ms < _ms(_TURN[0]):
            break
        turn, turn_ms = _assemble(rng, pool[speaker], target_ms, sample_rate), target_ms
        gain = gain_to(turn, _TURN_RMS_DBFS + rng.uniform(-_GAIN_DB, _GAIN_DB))
        offset = _samples(start, sample_rate)
        audio[offset : offset + len(turn)] += turn * np.float32(gain)
        placed.append((start, turn_ms, speaker))
        if start + turn_ms > last_end:
            last_end, last_speaker = start + turn_ms, speaker
    add_noise_floor(rng, audio, _NOISE_DBFS)
    limit_peak(audio, _PEAK_DBFS)
    turns = [Turn(uri, s / 1000, d / 1000, spk) for s, d, spk in sorted(placed, key=lambda p: (p[0], p[2]))]
    return audio, turns


def _count_overlaps(turns: list[Turn]) -> int:
    return sum(
        1
        for i, a in enumerate(turns)
        for b in turns[i + 1 :]
        if a.speaker != b.speaker and b.start < a.end and a.start < b.end
    )


# --------------------------------------------------------------------------------------- writing

_DATABASE_YML = """\
# pyannote.database configuration of the tuner demo diarization corpus.
# Paths are relative to this file's directory.
Databases:
  Demo:
    - "train/wav/{uri}.wav"
    - "dev/wav/{uri}.wav"
    - "test/wav/{uri}.wav"
Protocols:
  Demo:
    SpeakerDiarization:
      Default:
        scope: file
        train:
          uri: "train.txt"
          annotation: "train/rttm/{uri}.rttm"
          annotated: "train/uem/{uri}.uem"
        development:
          uri: "dev.txt"
          annotation: "dev/rttm/{uri}.rttm"
          annotated: "dev/uem/{uri}.uem"
        test:
          uri: "test.txt"
          annotation: "test/rttm/{uri}.rttm"
          annotated: "test/uem/{uri}.uem"
"""


def _readme(params: _Params, stats: dict[str, dict[str, int]]) -> str:
    rows = "\n".join(
        f"| {split} | {s['files']} | {s['speakers']} | {s['turns']} | {s['overlaps']} |" for split, s in stats.items()
    )
    return f"""\
# tuner demo diarization corpus

Synthetic two-to-three-speaker conversations built from the real speech sample shipped with
pyannote.audio (`pyannote/audio/sample/sample.wav`, MIT license). It is meant for tests and demos of
tuner, not for benchmarking.

* Speakers: the two sample speakers plus speed-perturbed copies (resampling changes tempo and pitch).
  Train speed factors: {format_factors(TRAIN_FACTORS)} (plus the originals);
  dev/test speed factors: {format_factors(EVAL_FACTORS)} (originals excluded),
  so dev/test speakers never occur in train.
* Each {params.file_duration:g} s file at {params.sample_rate} Hz: turns of 1-6 s separated by
  0.1-1.5 s silences, overlapping the previous turn by 0.2-1.0 s with probability 0.3, random gain of
  +/-6 dB per turn, a -45 dBFS white-noise floor, peak-limited to -1 dBFS.
* RTTM turns are exact (millisecond grid) and UEM files cover whole files.

| split | files | speakers | turns | overlapping pairs |
|---|---|---|---|---|
{rows}

Generated by `tuner.data.demo.generate_diarization_corpus(out_dir, seed={params.seed},
n_train={params.n_train}, n_dev={params.n_dev}, n_test={params.n_test},
file_duration={params.file_duration}, sample_rate={params.sample_rate})` (generator version {_VERSION});
the same parameters reproduce byte-identical files. Load it with pyannote.database:

```python
from pyannote.database import registry, FileFinder
registry.load_database("database.yml")
protocol = registry.get_protocol("{PROTOCOL}", preprocessors={{"audio": FileFinder()}})
```
"""


def _write_corpus(root: Path, params: _Params, final_dir: Path) -> dict[str, Any]:
    """Fill ``root``; return the marker's extra entries (the marker itself is written by the caller)."""
    pools = _pools(params.sample_rate)
    duration_ms = _ms(params.file_duration)
    stats: dict[str, dict[str, int]] = {}
    for split_index, split in enumerate(SPLITS):
        uris, n_turns, n_overlaps, speakers = [], 0, 0, set[str]()
        wav_dir = root / split / "wav"
        wav_dir.mkdir(parents=True)
        for index in range(params.count(split)):
            uri = _uri(split, index)
            rng = np.random.default_rng([params.seed, split_index, index])
            audio, turns = _render(rng, pools[split], uri, duration_ms, params.sample_rate)
            sf.write(wav_dir / f"{uri}.wav", audio, params.sample_rate, subtype="PCM_16", format="WAV")
            write_rttm(root / split / "rttm" / f"{uri}.rttm", turns)
            write_uem(root / split / "uem" / f"{uri}.uem", uri, 0.0, params.file_duration)
            uris.append(uri)
            n_turns += len(turns)
            n_overlaps += _count_overlaps(turns)
            speakers.update(t.speaker for t in turns)
        (root / f"{split}.txt").write_text("".join(f"{u}\n" for u in uris), encoding="utf-8")
        stats[split] = {"files": len(uris), "speakers": len(speakers), "turns": n_turns, "overlaps": n_overlaps}
        logger.info(
            "demo diarization corpus: wrote %s split (%d files x %g s, %d speakers, %d turns, %d overlaps) to %s",
            split,
            len(uris),
            params.file_duration,
            len(speakers),
            n_turns,
            n_overlaps,
            final_dir / split,
        )
    (root / "database.yml").write_text(_DATABASE_YML, encoding="utf-8")
    (root / "README.md").write_text(_readme(params, stats), encoding="utf-8")
    return {"protocol": PROTOCOL, "stats": stats}


def _required_files(params: _Params) -> list[str]:
    files = ["database.yml"]
    for split in SPLITS:
        for index in range(params.count(split)):
            uri = _uri(split, index)
            files += [f"{split}/{sub}/{uri}.{sub}" for sub in ("wav", "rttm", "uem")]
        files.append(f"{split}.txt")
    return files


_CORPUS = DemoCorpus("diarization", _VERSION, logger, _write_corpus, _required_files)


def generate_diarization_corpus(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_train: int = 24,
    n_dev: int = 4,
    n_test: int = 4,
    file_duration: float = 40.0,
    sample_rate: int = 16000,
) -> Path:
    """(Re)generate the demo diarization corpus in ``out_dir`` and return ``out_dir``.

    Files are written to a temporary sibling directory that replaces ``out_dir`` at the end. An existing
    ``out_dir`` is replaced only if it is empty or a previous demo corpus (else :class:`DataError`).
    """
    return _CORPUS.generate(out_dir, _params(seed, n_train, n_dev, n_test, file_duration, sample_rate))


def ensure_diarization_corpus(
    out_dir: str | Path,
    seed: int = 0,
    *,
    n_train: int = 24,
    n_dev: int = 4,
    n_test: int = 4,
    file_duration: float = 40.0,
    sample_rate: int = 16000,
) -> Path:
    """Return ``out_dir`` if it holds a complete corpus made with these parameters, else generate it."""
    return _CORPUS.ensure(out_dir, _params(seed, n_train, n_dev, n_test, file_duration, sample_rate))
