"""Deterministic demo corpora generated from the real speech sample shipped with pyannote.audio."""

from __future__ import annotations

from tuner.data.demo._speakers import (
    build_speaker_pool,
    load_sample,
    perturb,
    speaker_segments,
)
from tuner.data.demo.diarization import (
    EVAL_FACTORS,
    PROTOCOL,
    TRAIN_FACTORS,
    ensure_diarization_corpus,
    generate_diarization_corpus,
)
from tuner.data.demo.separation import (
    ensure_separation_corpus,
    generate_separation_corpus,
)
from tuner.data.demo.verification import (
    ensure_verification_corpus,
    generate_verification_corpus,
)

__all__ = [
    "EVAL_FACTORS",
    "PROTOCOL",
    "TRAIN_FACTORS",
    "build_speaker_pool",
    "ensure_diarization_corpus",
    "ensure_separation_corpus",
    "ensure_verification_corpus",
    "generate_diarization_corpus",
    "generate_separation_corpus",
    "generate_verification_corpus",
    "load_sample",
    "perturb",
    "speaker_segments",
]
