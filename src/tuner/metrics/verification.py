"""Speaker-verification metrics: equal error rate, minimum detection cost, cosine scoring.

Conventions shared by every function here:

* a trial has a score and a label, 1 = target (same speaker), 0 = non-target;
* a higher score means "more likely target", and a threshold ``t`` accepts a trial when ``score >= t``;
* the operating points are those of the distinct scores (equal scores are accepted or rejected together,
  so results are exact on ties and do not depend on the order of the trials), plus a final "reject
  everything" point whose threshold is the smallest float above the highest score.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "MIN_DCF_P_TARGET",
    "compute_eer",
    "compute_min_dcf",
    "verification_metrics",
    "cosine_similarity",
    "det_points",
]

#: Prior probability of a target trial used for minDCF (VoxSRC / NIST SRE setting, with c_miss = c_fa = 1).
MIN_DCF_P_TARGET = 0.01


def _validate(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Scores as float64 and labels as bool, 1-D and of one length; ValueError on anything else."""
    scores_array = np.asarray(scores, dtype=np.float64)
    labels_array = np.asarray(labels)
    if scores_array.ndim != 1 or labels_array.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D, got shapes {scores_array.shape} and {labels_array.shape}")
    if len(scores_array) != len(labels_array):
        raise ValueError(f"{len(scores_array)} scores but {len(labels_array)} labels: one label per score")
    if not np.all(np.isfinite(scores_array)):
        raise ValueError("scores must be finite: found NaN or infinity")
    if labels_array.size and not np.all((labels_array == 0) | (labels_array == 1)):
        raise ValueError("labels must be 1 (target) or 0 (non-target)")
    targets = labels_array == 1
    if not targets.any():
        raise ValueError("no target trial (label 1): EER and minDCF need both kinds of trial")
    if targets.all():
        raise ValueError("no non-target trial (label 0): EER and minDCF need both kinds of trial")
    return scores_array, targets


def _operating_points(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds (ascending), miss rates and false-alarm rates at every distinct operating point.

    The first point accepts every trial (FNR 0, FPR 1), the last rejects every trial (FNR 1, FPR 0);
    along the list FNR never falls and FPR never rises, and at each step at least one of them moves.
    """
    scores_array, targets = _validate(scores, labels)
    order = np.argsort(scores_array, kind="mergesort")
    sorted_scores = scores_array[order]
    sorted_targets = targets[order]
    thresholds, first_index = np.unique(sorted_scores, return_index=True)
    # trials rejected at thresholds[i] are exactly sorted[:first_index[i]] (those with a lower score)
    targets_below = np.concatenate(([0], np.cumsum(sorted_targets)))[first_index]
    non_targets_below = first_index - targets_below
    n_targets = int(sorted_targets.sum())
    n_non_targets = len(sorted_targets) - n_targets
    fnr = np.append(targets_below / n_targets, 1.0)
    fpr = np.append((n_non_targets - non_targets_below) / n_non_targets, 0.0)
    reject_all = np.nextafter(thresholds[-1], np.inf)
    return np.append(thresholds, reject_all), fnr, fpr


def compute_eer(scores: Any, labels: Any) -> tuple[float, float]:
    """Equal error rate as a fraction in [0, 1], and its threshold.

    The miss rate (FNR) and false-alarm rate (FPR) are taken at every distinct threshold; the EER is
    where the two curves cross, linearly interpolated between the last operating point with
    FNR < FPR and the first with FNR >= FPR (the same interpolation gives the threshold; it is an
    operating point's own threshold when FNR == FPR there). Perfect separation gives 0, perfectly
    inverted scores give 1, and all-equal scores give 0.5.
    """
    thresholds, fnr, fpr = _operating_points(scores, labels)
    gap = fnr - fpr  # strictly increasing, from -1 (accept all) to +1 (reject all)
    upper = int(np.argmax(gap >= 0.0))
    if gap[upper] == 0.0:
        return float(fnr[upper]), float(thresholds[upper])
    lower = upper - 1
    weight = -gap[lower] / (gap[upper] - gap[lower])
    miss = fnr[lower] + weight * (fnr[upper] - fnr[lower])
    false_alarm = fpr[lower] + weight * (fpr[upper] - fpr[lower])
    threshold = thresholds[lower] + weight * (thresholds[upper] - thresholds[lower])
    eer = min(1.0, max(0.0, 0.5 * (miss + false_alarm)))
    return float(eer), float(threshold)


def compute_min_dcf(
    scores: Any, labels: Any, p_target: float = MIN_DCF_P_TARGET, c_miss: float = 1.0, c_fa: float = 1.0
) -> tuple[float, float]:
    """Minimum normalised detection cost over all thresholds, and the threshold reaching it.

    ``DCF(t) = c_miss * P_miss(t) * p_target + c_fa * P_fa(t) * (1 - p_target)``, divided by
    ``min(c_miss * p_target, c_fa * (1 - p_target))``, the cost of the better trivial system (accept
    all or reject all); the result is therefore in [0, 1]. Ties between thresholds go to the lowest.
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if not (c_miss > 0.0 and c_fa > 0.0):
        raise ValueError(f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}")
    thresholds, fnr, fpr = _operating_points(scores, labels)
    cost = c_miss * fnr * p_target + c_fa * fpr * (1.0 - p_target)
    best = int(np.argmin(cost))
    normaliser = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(cost[best] / normaliser), float(thresholds[best])


def verification_metrics(scores: Any, labels: Any, p_target: float = MIN_DCF_P_TARGET) -> dict[str, float]:
    """``{"EER": percent in [0, 100], "threshold": EER threshold, "minDCF": normalised minDCF}``.

    minDCF uses the prior ``p_target`` (default :data:`MIN_DCF_P_TARGET` = 0.01) with c_miss = c_fa = 1.
    """
    eer, threshold = compute_eer(scores, labels)
    min_dcf, _ = compute_min_dcf(scores, labels, p_target=p_target)
    return {"EER": 100.0 * eer, "threshold": threshold, "minDCF": min_dcf}


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays, shape (N,); a pair with a zero row scores 0."""
    first = np.asarray(a, dtype=np.float64)
    second = np.asarray(b, dtype=np.float64)
    if first.ndim != 2 or first.shape != second.shape:
        raise ValueError(f"expected two (N, D) arrays of one shape, got {first.shape} and {second.shape}")
    dot = np.einsum("nd,nd->n", first, second)
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    return np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0.0)


def det_points(scores: Any, labels: Any, max_points: int = 50) -> dict[str, list[float]]:
    """The DET curve (FPR, FNR and threshold at each operating point, low threshold first), thinned to
    at most ``max_points`` points: small enough to keep beside a trial for the report's DET figure."""
    thresholds, fnr, fpr = _operating_points(scores, labels)
    keep = np.unique(np.linspace(0, len(thresholds) - 1, min(max_points, len(thresholds))).round().astype(int))
    return {
        "fpr": [round(float(v), 6) for v in fpr[keep]],
        "fnr": [round(float(v), 6) for v in fnr[keep]],
        "threshold": [round(float(v), 6) for v in thresholds[keep]],
    }
