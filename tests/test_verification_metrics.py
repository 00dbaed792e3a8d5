"""Tests of the speaker-verification metrics: EER (with threshold), minDCF and cosine scoring."""

from __future__ import annotations

import numpy as np
import pytest

from tuner.metrics import (
    MIN_DCF_P_TARGET,
    compute_eer,
    compute_min_dcf,
    cosine_similarity,
    verification_metrics,
)

try:  # at import time, so that scikit-learn's slow import is not timed as part of a test
    from sklearn.metrics import roc_curve
except ImportError:  # pragma: no cover - scikit-learn is only needed by one test
    roc_curve = None

# ------------------------------------------------------------------------------ EER: known answers


def test_perfect_separation_has_zero_eer_and_a_threshold_that_separates() -> None:
    scores = [0.9, 0.8, 0.7, 0.1, 0.2, 0.3]
    labels = [1, 1, 1, 0, 0, 0]
    eer, threshold = compute_eer(scores, labels)
    assert eer == 0.0
    assert 0.3 < threshold <= 0.7
    assert compute_min_dcf(scores, labels) == (0.0, pytest.approx(0.7))


def test_inverted_scores_have_eer_one() -> None:
    scores = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    labels = [1, 1, 1, 0, 0, 0]
    eer, _ = compute_eer(scores, labels)
    assert eer == 1.0
    assert verification_metrics(scores, labels)["EER"] == 100.0


def test_all_equal_scores_have_eer_one_half() -> None:
    for n_target, n_non_target in ((1, 1), (3, 7), (10, 2)):
        labels = [1] * n_target + [0] * n_non_target
        eer, threshold = compute_eer([0.4] * len(labels), labels)
        assert eer == pytest.approx(0.5)
        assert threshold == pytest.approx(0.4)


def test_hand_worked_eer_interpolates_between_the_crossing_points() -> None:
    # targets 0.9, 0.7, 0.4; non-targets 0.8, 0.3, 0.2, 0.1 (accept when score >= t):
    #   t      FNR (of 3)  FPR (of 4)  FNR - FPR
    #   0.1    0           4/4         -1
    #   0.2    0           3/4         -3/4
    #   0.3    0           2/4         -1/2
    #   0.4    0           1/4         -1/4    <- last point with FNR < FPR
    #   0.7    1/3         1/4         +1/12   <- first point with FNR >= FPR
    #   0.8    1/3         0
    #   0.9    2/3         0
    #   >0.9   1           0
    # crossing at fraction a = (1/4) / (1/4 + 1/12) = 3/4 of the way from t=0.4 to t=0.7:
    #   FNR = 0 + 3/4 * 1/3 = 1/4, FPR = 1/4 + 3/4 * 0 = 1/4 -> EER = 0.25,
    #   threshold = 0.4 + 3/4 * (0.7 - 0.4) = 0.625
    scores = [0.9, 0.7, 0.4, 0.8, 0.3, 0.2, 0.1]
    labels = [1, 1, 1, 0, 0, 0, 0]
    eer, threshold = compute_eer(scores, labels)
    assert eer == pytest.approx(0.25)
    assert threshold == pytest.approx(0.625)
    assert verification_metrics(scores, labels) == {
        "EER": pytest.approx(25.0),
        "threshold": pytest.approx(0.625),
        "minDCF": pytest.approx(2 / 3),
    }


def test_eer_is_exact_on_ties_across_classes_and_ignores_trial_order() -> None:
    # targets 0.9, 0.5; non-targets 0.5, 0.1; the tie at 0.5 is one operating point:
    #   t=0.1: FNR 0, FPR 1;  t=0.5: FNR 0, FPR 1/2;  t=0.9: FNR 1/2, FPR 0
    # crossing halfway between t=0.5 and t=0.9: EER = 1/4, threshold 0.7
    scores = np.array([0.5, 0.9, 0.5, 0.1])
    labels = np.array([1, 1, 0, 0])
    rng = np.random.default_rng(0)
    for _ in range(10):
        order = rng.permutation(len(scores))
        eer, threshold = compute_eer(scores[order], labels[order])
        assert eer == pytest.approx(0.25)
        assert threshold == pytest.approx(0.7)


def test_eer_exactly_at_an_operating_point_uses_its_threshold() -> None:
    # targets 0.3, 0.6; non-targets 0.1, 0.4:
    #   t=0.1: FNR 0, FPR 1;  t=0.3: FNR 0, FPR 1/2;  t=0.4: FNR 1/2, FPR 1/2 -> EER 1/2 exactly at t=0.4
    eer, threshold = compute_eer([0.3, 0.6, 0.1, 0.4], [1, 1, 0, 0])
    assert eer == 0.5 and threshold == 0.4


def test_threshold_on_the_reject_all_segment_is_just_above_the_highest_score() -> None:
    # targets 0, 1; non-target 1: FNR/FPR = 0/1 at t=0, 1/2 / 1 at t=1, then 1 / 0 when rejecting all
    eer, threshold = compute_eer([0.0, 1.0, 1.0], [1, 1, 0])
    assert eer == pytest.approx(2 / 3)
    assert threshold == pytest.approx(1.0)


def test_accepts_booleans_and_lists() -> None:
    assert compute_eer([0.2, 0.8], [False, True]) == compute_eer(np.array([0.2, 0.8]), np.array([0, 1]))


# ------------------------------------------------------------------------------ minDCF


def test_min_dcf_of_inverted_scores_is_one_the_cost_of_rejecting_everything() -> None:
    # normalised DCF of "reject all" = c_miss * 1 * p / min(c_miss * p, c_fa * (1 - p)) = 0.01 / 0.01 = 1;
    # accepting all costs 0.99 / 0.01 = 99 and every intermediate threshold misses all targets too
    scores = [0.1, 0.2, 0.7, 0.8]
    labels = [1, 1, 0, 0]
    min_dcf, threshold = compute_min_dcf(scores, labels)
    assert min_dcf == pytest.approx(1.0)
    assert threshold > 0.8
    assert MIN_DCF_P_TARGET == 0.01


def test_min_dcf_hand_worked_for_two_priors() -> None:
    scores = [0.9, 0.7, 0.4, 0.8, 0.3, 0.2, 0.1]
    labels = [1, 1, 1, 0, 0, 0, 0]
    # p = 0.01: (0.01 * FNR + 0.99 * FPR) / 0.01 is smallest at t=0.9 (FNR 2/3, FPR 0): 2/3
    assert compute_min_dcf(scores, labels, p_target=0.01) == (pytest.approx(2 / 3), pytest.approx(0.9))
    # p = 0.5: (0.5 * FNR + 0.5 * FPR) / 0.5 = FNR + FPR, smallest at t=0.4 (0 + 1/4)
    assert compute_min_dcf(scores, labels, p_target=0.5) == (pytest.approx(0.25), pytest.approx(0.4))
    # unequal costs: c_miss = 10, p = 0.1 -> normaliser min(1.0, 0.9) = 0.9; at t=0.4 cost 0.9 * 1/4
    min_dcf, threshold = compute_min_dcf(scores, labels, p_target=0.1, c_miss=10.0)
    assert min_dcf == pytest.approx(0.25) and threshold == pytest.approx(0.4)


def test_min_dcf_is_at_most_one() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        labels = rng.integers(0, 2, 30)
        labels[:2] = [0, 1]
        assert 0.0 <= compute_min_dcf(rng.normal(size=30), labels)[0] <= 1.0


# ------------------------------------------------------------------------------ invariance, sklearn


def test_metrics_are_invariant_to_a_monotone_transform_of_the_scores() -> None:
    rng = np.random.default_rng(2)
    labels = np.r_[np.ones(60, dtype=int), np.zeros(140, dtype=int)]
    scores = np.r_[rng.normal(1.0, 1.0, 60), rng.normal(0.0, 1.0, 140)]
    transformed = np.exp(0.5 * scores) + 3.0
    assert compute_eer(transformed, labels)[0] == pytest.approx(compute_eer(scores, labels)[0], abs=1e-12)
    dcf, threshold = compute_min_dcf(scores, labels)
    dcf_t, threshold_t = compute_min_dcf(transformed, labels)
    assert dcf_t == pytest.approx(dcf, abs=1e-12)
    assert threshold_t == pytest.approx(np.exp(0.5 * threshold) + 3.0)


def _sklearn_eer(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """EER from sklearn's ROC with the same convention as :func:`compute_eer`.

    ``roc_curve(drop_intermediate=False)`` gives one point per distinct threshold (accepting
    ``score >= t``) plus an "accept nothing" point first. Along it FPR rises and FNR = 1 - TPR falls, so
    FPR - FNR increases strictly from -1 to +1; linear interpolation of FPR, FNR and the threshold at
    FPR - FNR = 0 is the crossing of the straight segment between the two neighbouring ROC points, which
    is the convention of compute_eer. The "accept nothing" threshold (inf) is replaced by the smallest
    float above the highest score, as in compute_eer.
    """
    assert roc_curve is not None
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1.0 - tpr
    thresholds = thresholds.astype(float)
    thresholds[0] = np.nextafter(scores.max(), np.inf)
    gap = fpr - fnr
    eer = 0.5 * (np.interp(0.0, gap, fpr) + np.interp(0.0, gap, fnr))
    return float(eer), float(np.interp(0.0, gap, thresholds))


@pytest.mark.parametrize("seed", range(8))
def test_eer_agrees_with_sklearn_roc(seed: int) -> None:
    if roc_curve is None:
        pytest.skip("scikit-learn is not installed")
    rng = np.random.default_rng(seed)
    n_target = int(rng.integers(20, 100))
    labels = np.r_[np.ones(n_target, dtype=int), np.zeros(200 - n_target, dtype=int)]
    scores = np.r_[rng.normal(1.0, 1.0, n_target), rng.normal(0.0, 1.2, 200 - n_target)]
    if seed % 2:
        scores = np.round(scores, 1)  # many ties, some across classes
    order = rng.permutation(200)
    scores, labels = scores[order], labels[order]
    eer, threshold = compute_eer(scores, labels)
    expected_eer, expected_threshold = _sklearn_eer(scores, labels)
    assert eer == pytest.approx(expected_eer, abs=1e-6)
    assert threshold == pytest.approx(expected_threshold, abs=1e-6)
    assert 0.0 < eer < 0.5


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2], [1, 1], "no non-target"),
        ([0.1, 0.2], [0, 0], "no target"),
        ([], [], "no target"),
        ([0.1, 0.2, 0.3], [1, 0], "one label per score"),
        ([0.1, float("nan")], [1, 0], "finite"),
        ([0.1, float("inf")], [1, 0], "finite"),
        ([0.1, 0.2], [1, 2], "labels must be 1"),
        ([[0.1, 0.2]], [[1, 0]], "1-D"),
    ],
)
def test_bad_input_raises_value_error(scores: list, labels: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_eer(scores, labels)
    with pytest.raises(ValueError, match=message):
        compute_min_dcf(scores, labels)


def test_bad_dcf_parameters_raise() -> None:
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf([0.1, 0.2], [0, 1], p_target=1.0)
    with pytest.raises(ValueError, match="positive"):
        compute_min_dcf([0.1, 0.2], [0, 1], c_fa=0.0)


# ------------------------------------------------------------------------------ cosine similarity


def test_cosine_similarity_row_wise() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0], [0.0, 0.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [-3.0, -4.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosine_similarity(a, b), [0.0, 1.0, -1.0, 0.0], atol=1e-12)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    expected = [xi @ yi / np.linalg.norm(xi) / np.linalg.norm(yi) for xi, yi in zip(x, y)]
    np.testing.assert_allclose(cosine_similarity(x, y), expected)
    with pytest.raises(ValueError, match="one shape"):
        cosine_similarity(x, y[:4])


def test_det_points_follow_the_operating_points() -> None:
    from tuner.metrics.verification import det_points

    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.2])
    labels = np.array([0, 0, 1, 1, 1, 0])
    det = det_points(scores, labels)
    assert det["fpr"][0] == 1.0 and det["fnr"][0] == 0.0  # accept everything
    assert det["fpr"][-1] == 0.0 and det["fnr"][-1] == 1.0  # reject everything
    assert det["fnr"] == sorted(det["fnr"]) and det["fpr"] == sorted(det["fpr"], reverse=True)
    assert len(det_points(np.random.default_rng(0).normal(size=500), np.arange(500) % 2, max_points=20)["fpr"]) <= 20
