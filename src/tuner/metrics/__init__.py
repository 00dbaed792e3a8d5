"""Evaluation metrics computed with numpy only (no torch), so they can score any objective's output."""

from __future__ import annotations

from tuner.metrics.verification import (
    MIN_DCF_P_TARGET,
    compute_eer,
    compute_min_dcf,
    cosine_similarity,
    verification_metrics,
)

__all__ = ["MIN_DCF_P_TARGET", "compute_eer", "compute_min_dcf", "cosine_similarity", "verification_metrics"]
