"""Speaker-verification corpora in the IndicSUPERB / Kathbath layout.

Layout (``root``)::

    <root>/<split>/<speaker_id>/<utterance>.wav     (or .flac, .m4a, .mp3, .opus, .aac, .mp4; sub-folders
                                                     below a speaker are allowed)
    trial lists, e.g. <root>/trials/dev.txt or IndicSUPERB's meta_data/<lang>/*.txt

A trial list has one trial per line, ``label path1 path2``: label ``1`` when both files are spoken by the
same speaker (a target trial), ``0`` otherwise; paths are relative to ``root`` (absolute paths are
accepted too). Blank lines are skipped; anything else that is not exactly such a line is an error naming
``file:line``. Train speakers and trial speakers may be disjoint (they are in IndicSUPERB's "unknown"
test lists and in the demo corpus of :mod:`tuner.data.demo.verification`).

Compressed audio
----------------
Kathbath ships ``.m4a`` (AAC) files: they are read as shipped, decoded once with PyAV into 16 kHz WAVs under
``<workdir>/cache/decoded`` (:class:`tuner.data.compressed.DecodeCache`). An ``.m4a`` (or other compressed
file) with a ``.wav`` or ``.flac`` of the same name beside it (one converted earlier) is skipped: the
converted file is used.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch.utils.data

from tuner.data._text import read_text_lines
from tuner.data.audio import audio_info
from tuner.data.compressed import COMPRESSED_EXTENSIONS
from tuner.errors import DataError

__all__ = [
    "AUDIO_EXTENSIONS",
    "PCM_EXTENSIONS",
    "Utterance",
    "Trial",
    "scan_speakers",
    "read_trials",
    "validate_audio",
    "SpeakerBatchSampler",
    "random_crop",
]

logger = logging.getLogger(__name__)

PCM_EXTENSIONS = frozenset({".wav", ".flac"})
"""Extensions (lower case) of the audio files soundfile reads, preferred to a compressed file of the same name."""
AUDIO_EXTENSIONS = PCM_EXTENSIONS | COMPRESSED_EXTENSIONS
"""Extensions (lower case) of the audio files :func:`scan_speakers` collects."""

_LAYOUT = "<root>/<split>/<speaker_id>/<utterance>.wav (or .flac, .m4a, ...), as in IndicSUPERB/Kathbath"
_TRIAL_EXPECTED = "'<label> <path1> <path2>' with label 1 (same speaker) or 0 (different speakers)"


@dataclass(frozen=True)
class Utterance:
    """One audio file of ``speaker`` (the name of its speaker folder)."""

    path: Path
    speaker: str


@dataclass(frozen=True)
class Trial:
    """One verification trial: ``label`` 1 if ``enroll`` and ``test`` share a speaker, else 0."""

    label: int
    enroll: Path
    test: Path


# ---------------------------------------------------------------------------------------- scanning


def _walk_files(top: Path) -> Iterator[Path]:
    """Files below ``top`` (following symbolic links, each real directory once), hidden names skipped."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symbolic-link cycle or a directory linked twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):  # e.g. macOS '._x.wav' resource forks
                yield Path(dirpath) / name


def scan_speakers(root: str | Path, split: str) -> list[Utterance]:
    """Every ``<root>/<split>/<speaker>/**/<file>`` with an extension of :data:`AUDIO_EXTENSIONS` (case
    insensitive), sorted by speaker then path; a compressed file with a ``.wav`` or ``.flac`` of the same
    name beside it is left out. Only names are listed here: audio is not opened (see :func:`validate_audio`).

    Raises :class:`DataError` if the split folder is missing, holds no audio or fewer than 2 speakers.
    """
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        if not root.is_dir():
            where = f"the corpus root {root} does not exist either"
        else:
            subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            where = f"{root} holds " + (
                ", ".join(subdirs[:10]) + (", ..." if len(subdirs) > 10 else "") if subdirs else "no folders"
            )
        raise DataError(
            f"{split_dir}: split folder not found ({where}). Expected the layout {_LAYOUT}; "
            "check the data path and the split name."
        )
    utterances: list[Utterance] = []
    for speaker_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = list(_walk_files(speaker_dir))
        converted = {f.with_suffix("") for f in files if f.suffix.lower() in PCM_EXTENSIONS}
        for f in files:
            ext = f.suffix.lower()
            if ext in PCM_EXTENSIONS or (ext in COMPRESSED_EXTENSIONS and f.with_suffix("") not in converted):
                utterances.append(Utterance(f, speaker_dir.name))
    if not utterances:
        loose = [p for p in split_dir.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]
        hint = (
            f"; its {len(loose)} audio file(s) lie directly in the split folder: move each speaker's files "
            "into a folder named after the speaker"
            if loose
            else ""
        )
        raise DataError(
            f"{split_dir}: no audio files (.wav, .flac, .m4a, ...) found in speaker folders{hint}. Expected {_LAYOUT}."
        )
    speakers = {u.speaker for u in utterances}
    if len(speakers) < 2:
        raise DataError(
            f"{split_dir}: only {len(speakers)} speaker folder ({next(iter(speakers))}) holds audio; speaker "
            f"verification needs at least 2 speakers. Expected {_LAYOUT}, one folder per speaker."
        )
    utterances.sort(key=lambda u: (u.speaker, u.path.as_posix()))
    logger.debug("%s: %d utterances of %d speakers", split_dir, len(utterances), len(speakers))
    return utterances


# ------------------------------------------------------------------------------------------ trials


def read_trials(path: str | Path, root: str | Path) -> list[Trial]:
    """Read a trial list (``label path1 path2`` per line, paths relative to ``root`` or absolute).

    Strict: blank lines are skipped, every other line must have exactly 3 fields, a label of 0 or 1 and two
    existing files; the list must hold both target (1) and non-target (0) trials, as EER needs both.
    Every problem is a :class:`DataError` naming ``path:line``.
    """
    path, root = Path(path), Path(root)
    trials: list[Trial] = []
    existing: set[Path] = set()
    for lineno, line in enumerate(read_text_lines(path, "trial list"), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if fields[0].startswith("#"):
            raise DataError(
                f"{where}: comment lines are not part of the trial-list format; delete this line "
                f"(expected {_TRIAL_EXPECTED})."
            )
        if len(fields) != 3:
            raise DataError(
                f"{where}: malformed trial line {line.strip()!r}: expected 3 fields, got {len(fields)}. "
                f"Expected {_TRIAL_EXPECTED}; fix or delete this line."
            )
        if fields[0] not in ("0", "1"):
            raise DataError(
                f"{where}: malformed trial line {line.strip()!r}: label {fields[0]!r} is not 0 or 1. "
                f"Expected {_TRIAL_EXPECTED}; fix or delete this line."
            )
        paths = []
        for field, which in ((fields[1], "first path"), (fields[2], "second path")):
            candidate = Path(field)
            full = candidate if candidate.is_absolute() else root / candidate
            if full not in existing:
                if not full.is_file():
                    raise DataError(
                        f"{where}: audio file not found: {full} ({which}). Trial paths are read relative to "
                        f"{root}: check that this is the corpus root the list was written for, or regenerate "
                        "the list."
                    )
                existing.add(full)
            paths.append(full)
        trials.append(Trial(int(fields[0]), paths[0], paths[1]))
    if not trials:
        raise DataError(f"{path}: trial list holds no trials; expected lines {_TRIAL_EXPECTED}.")
    n_target = sum(t.label for t in trials)
    if n_target in (0, len(trials)):
        kind, other = (
            ("target (label 1)", "non-target (label 0)") if n_target else ("non-target (label 0)", "target (label 1)")
        )
        raise DataError(
            f"{path}: all {len(trials)} trials are {kind} trials; the equal error rate needs both target and "
            f"non-target trials. Add {other} trials to the list."
        )
    return trials


def validate_audio(paths: Iterable[str | Path], expected_sample_rate: int | None = None) -> float:
    """Check each distinct file's header (exists, readable, not empty, and at
    ``expected_sample_rate`` if given) with :func:`tuner.data.audio.audio_info`; return the total duration
    in seconds. The first bad file raises :class:`DataError`."""
    seen: set[Path] = set()
    total = 0.0
    for p in paths:
        p = Path(p)
        if p in seen:
            continue
        seen.add(p)
        total += audio_info(p, expected_sample_rate).duration
    return total


# --------------------------------------------------------------------------------------- sampling


class SpeakerBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of ``batch_size // per_speaker`` distinct speakers with ``per_speaker`` utterances each.

    Pass it as a DataLoader's ``batch_sampler``; ``labels[i]`` is the speaker of dataset item ``i``. Each
    speaker's utterances are consumed in a shuffled order, and each batch takes the speakers with the most
    utterances left in their current pass (ties broken at random), so an epoch visits roughly every
    utterance once; a speaker whose pass runs out starts a new shuffled one (utterances within a batch stay
    distinct; a speaker with fewer than ``per_speaker`` utterances is sampled with replacement). Within a
    batch, each speaker's utterances are contiguous, so every item has a positive for pair/triplet losses.

    An epoch holds ``len(self)`` = ``N // batch`` batches (``ceil`` if not ``drop_last``; at least 1), where
    ``N`` is the number of utterances and ``batch`` the effective batch size. All batches are full.
    If ``batch_size // per_speaker`` exceeds the number of speakers, every batch holds all speakers (smaller
    batches) and a warning is logged once. The order depends only on ``seed`` and the epoch: call
    :meth:`set_epoch` before each epoch (Lightning does it for you), as with ``DistributedSampler``.
    """

    def __init__(
        self,
        labels: Sequence[int],
        batch_size: int,
        per_speaker: int = 2,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        if isinstance(per_speaker, bool) or not isinstance(per_speaker, int) or per_speaker < 1:
            raise ValueError(f"per_speaker must be a positive integer, got {per_speaker!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < per_speaker:
            raise ValueError(f"batch_size must be an integer >= per_speaker ({per_speaker}), got {batch_size!r}")
        groups: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            groups.setdefault(label, []).append(index)
        if len(groups) < 2:
            raise ValueError(f"SpeakerBatchSampler needs utterances of at least 2 speakers, got {len(groups)}")
        self._speakers: list[np.ndarray] = [np.asarray(groups[k], dtype=np.int64) for k in sorted(groups)]
        self.batch_size = batch_size
        self.per_speaker = per_speaker
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0
        self.speakers_per_batch = batch_size // per_speaker
        if self.speakers_per_batch > len(self._speakers):
            logger.warning(
                "batch_size %d with %d utterances per speaker asks for %d speakers per batch but there are "
                "only %d speakers: every batch holds all of them (%d utterances per batch)",
                batch_size,
                per_speaker,
                self.speakers_per_batch,
                len(self._speakers),
                len(self._speakers) * per_speaker,
            )
            self.speakers_per_batch = len(self._speakers)
        n_items = sum(len(s) for s in self._speakers)
        effective = self.speakers_per_batch * per_speaker
        n_batches = n_items // effective if drop_last else math.ceil(n_items / effective)
        self._len = max(1, n_batches)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches :meth:`__iter__` yields next."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        queues = [[int(i) for i in rng.permutation(items)] for items in self._speakers]
        for _ in range(self._len):
            remaining = np.array([len(q) for q in queues])
            order = np.lexsort((rng.random(len(queues)), -remaining))  # most left first, random ties
            chosen = sorted(int(s) for s in order[: self.speakers_per_batch])
            batch: list[int] = []
            for speaker in rng.permutation(chosen):
                batch.extend(self._take(int(speaker), queues[int(speaker)], rng))
            yield batch

    def _take(self, speaker: int, queue: list[int], rng: np.random.Generator) -> list[int]:
        """``per_speaker`` utterances of ``speaker``, popped from its ``queue`` (its current pass)."""
        items, m = self._speakers[speaker], self.per_speaker
        group = queue[:m]
        del queue[:m]
        if len(group) == m:
            return group
        fresh = [int(i) for i in rng.permutation(items)]
        if len(items) < m:  # too few utterances: all of them, then some again (with replacement)
            group = group or fresh
            return group + [int(i) for i in rng.choice(items, size=m - len(group), replace=True)]
        taken = set(group)  # pass exhausted: start a new one, skipping what this group already holds
        keep = []
        for item in fresh:
            if len(group) < m and item not in taken:
                group.append(item)
                taken.add(item)
            else:
                keep.append(item)
        queue[:] = keep
        return group


def random_crop(waveform: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A window of ``num_samples`` samples of the 1-D ``waveform``, at a uniformly random offset.

    A waveform shorter than ``num_samples`` is returned whole, zero-padded at the end to ``num_samples``
    (no random number is drawn then). The result is a new array of the input's dtype.
    """
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"random_crop expects a 1-D waveform, got shape {waveform.shape}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    n = len(waveform)
    if n <= num_samples:
        return np.pad(waveform, (0, num_samples - n))
    start = int(rng.integers(0, n - num_samples + 1))
    return waveform[start : start + num_samples].copy()
