"""tuner.statistics: known answers against scipy and hand computations, the documented edge cases, rankings with
their verdicts, and the paired bootstrap against a slow reference loop."""

from __future__ import annotations

import dataclasses
import math
import statistics as stdlib_statistics
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from tuner.statistics import (
    PairedInterval,
    RankedConfiguration,
    RunSummary,
    Verdict,
    holm,
    one_sample_test,
    paired_bootstrap,
    rank_configurations,
    summarize,
    welch_test,
)

SAMPLE = [0.170, 0.172, 0.169, 0.175, 0.168]


# --- summarize ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_summarize_matches_scipys_t_interval(confidence):
    summary = summarize(SAMPLE, confidence=confidence)
    n = len(SAMPLE)
    mean, sd = stdlib_statistics.mean(SAMPLE), stdlib_statistics.stdev(SAMPLE)
    low, high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=sd / math.sqrt(n))
    assert summary.n == n
    assert summary.mean == pytest.approx(mean, rel=1e-12)
    assert summary.sd == pytest.approx(sd, rel=1e-12)
    assert (summary.low, summary.high) == pytest.approx((low, high), rel=1e-12)


def test_summarize_known_numbers_by_hand():
    # mean 2, sd 1 (ddof=1), n 3; with 2 degrees of freedom the t quantile has a closed form:
    # t(p, 2) = (2p - 1) · √(2 / (4p(1 - p))), and t(0.975, 2) ≈ 4.3027
    p = 0.975
    quantile = (2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p)))
    assert quantile == pytest.approx(4.3027, abs=1e-4)
    summary = summarize([1.0, 2.0, 3.0])
    half = quantile / math.sqrt(3)
    assert (summary.n, summary.mean, summary.sd) == (3, 2.0, 1.0)
    assert (summary.low, summary.high) == pytest.approx((2.0 - half, 2.0 + half), rel=1e-12)


def test_a_wider_confidence_gives_a_wider_interval():
    narrow, wide = summarize(SAMPLE, 0.8), summarize(SAMPLE, 0.99)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_summarize_one_run_has_no_spread():
    summary = summarize([0.18])
    assert summary.n == 1 and summary.mean == 0.18
    assert math.isnan(summary.sd) and math.isnan(summary.low) and math.isnan(summary.high)


def test_summarize_equal_runs_have_zero_width():
    summary = summarize([0.17, 0.17, 0.17])
    assert summary == RunSummary(3, 0.17, 0.0, 0.17, 0.17)


def test_summarize_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        summarize(SAMPLE).mean = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("values", "confidence", "message"),
    [
        ([], 0.95, "no values"),
        ([0.1, math.nan], 0.95, "finite"),
        ([0.1, math.inf], 0.95, "finite"),
        ([0.1, 0.2], 1.0, "confidence"),
        ([0.1, 0.2], 0.0, "confidence"),
    ],
)
def test_summarize_refuses_bad_input(values, confidence, message):
    with pytest.raises(ValueError, match=message):
        summarize(values, confidence)


# --- welch_test --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0.170, 0.172, 0.169], [0.171, 0.170, 0.173]),
        ([0.170, 0.172, 0.169], [0.20, 0.21, 0.205]),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2.5, 2.7, 2.4]),  # unequal sizes and variances
        pytest.param(  # one side without variance (scipy warns of precision loss in its moments)
            [0.3, 0.3, 0.3],
            [0.25, 0.31, 0.28, 0.33],
            marks=pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning"),
        ),
        ([12.1, 12.3, 11.9, 12.0], [11.0, 11.6, 11.2, 11.9]),
    ],
)
def test_welch_test_matches_scipy(a, b):
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert welch_test(a, b) == pytest.approx(expected, rel=1e-9)
    assert welch_test(b, a) == pytest.approx(expected, rel=1e-9)


def test_welch_test_is_not_students_test():
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2.5, 2.7, 2.4]
    pooled = stats.ttest_ind(a, b, equal_var=True).pvalue
    assert welch_test(a, b) != pytest.approx(pooled, rel=1e-3)


@pytest.mark.parametrize(("a", "b"), [([0.1], [0.2, 0.3]), ([0.1, 0.2], [0.3]), ([], [0.1, 0.2]), ([0.1], [0.2])])
def test_welch_test_needs_two_values_a_side(a, b):
    assert math.isnan(welch_test(a, b))


def test_welch_test_without_variance_on_either_side():
    assert welch_test([0.17, 0.17, 0.17], [0.17, 0.17]) == 1.0
    assert welch_test([0.17, 0.17, 0.17], [0.18, 0.18]) == 0.0


def test_welch_test_refuses_nan():
    with pytest.raises(ValueError, match="finite"):
        welch_test([0.1, math.nan], [0.1, 0.2])


# --- holm --------------------------------------------------------------------------------------------------------


def test_holm_hand_computed_example():
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_keeps_the_order_given():
    assert holm([0.04, 0.01]) == pytest.approx([0.04, 0.02])


def test_holm_caps_at_one():
    assert holm([0.6, 0.7, 0.2]) == pytest.approx([1.0, 1.0, 0.6])  # 0.6·2 = 1.2 -> 1


def test_holm_nan_stays_nan_and_does_not_count():
    adjusted = holm([0.01, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
    assert math.isnan(adjusted[1])


def test_holm_edge_cases():
    assert holm([]) == []
    assert holm([0.03]) == [0.03]
    assert all(math.isnan(p) for p in holm([math.nan, math.nan]))


def test_holm_refuses_a_p_value_outside_zero_one():
    with pytest.raises(ValueError, match="outside"):
        holm([0.1, 1.5])


# --- rank_configurations -----------------------------------------------------------------------------------------


def _by_name(rows: list[RankedConfiguration]) -> dict[str, RankedConfiguration]:
    return {row.name: row for row in rows}


def test_rank_noise_is_indistinguishable_and_a_clear_loss_is_worse():
    runs = {
        "worse": [0.20, 0.21, 0.205],
        "b": [0.171, 0.170, 0.173],
        "a": [0.170, 0.172, 0.169],
    }
    rows = rank_configurations(runs, "minimize")
    assert [row.name for row in rows] == ["a", "b", "worse"]
    by = _by_name(rows)
    assert by["a"].verdict is Verdict.BEST
    assert math.isnan(by["a"].p_value) and math.isnan(by["a"].adjusted_p)
    assert by["b"].verdict is Verdict.INDISTINGUISHABLE
    assert by["worse"].verdict is Verdict.WORSE
    raw_b = stats.ttest_ind(runs["b"], runs["a"], equal_var=False).pvalue
    raw_w = stats.ttest_ind(runs["worse"], runs["a"], equal_var=False).pvalue
    assert by["b"].p_value == pytest.approx(raw_b) and by["worse"].p_value == pytest.approx(raw_w)
    # two comparisons: the smaller p doubled, the larger one kept (or raised to the doubled one)
    assert raw_w < raw_b
    assert by["worse"].adjusted_p == pytest.approx(2 * raw_w)
    assert by["b"].adjusted_p == pytest.approx(max(raw_b, 2 * raw_w))
    assert by["a"].summary == summarize(runs["a"])


def test_rank_holm_adjustment_can_undo_a_raw_significance():
    best = [0.170, 0.172, 0.169, 0.171]
    runs = {"best": best, "c1": [0.175, 0.178, 0.174, 0.177], "c2": [0.174, 0.176, 0.171, 0.177]}
    runs["c3"] = [0.173, 0.177, 0.172, 0.176]
    by = _by_name(rank_configurations(runs, "minimize"))
    assert by["c1"].verdict is Verdict.WORSE
    for name in ("c2", "c3"):  # p < 0.05 alone, not after Holm over three comparisons
        assert by[name].p_value < 0.05 <= by[name].adjusted_p
        assert by[name].verdict is Verdict.INDISTINGUISHABLE


def test_rank_alpha_decides():
    runs = {"a": [0.170, 0.172, 0.169], "worse": [0.20, 0.21, 0.205]}
    p = welch_test(runs["worse"], runs["a"])
    assert _by_name(rank_configurations(runs, "minimize", alpha=p * 2))["worse"].verdict is Verdict.WORSE
    strict = _by_name(rank_configurations(runs, "minimize", alpha=p / 2))["worse"]
    assert strict.verdict is Verdict.INDISTINGUISHABLE


def test_rank_maximize():
    runs = {"baseline": [10.0, 10.2, 10.1], "tuned": [12.1, 12.3, 12.0], "close": [12.0, 12.2, 12.15]}
    rows = rank_configurations(runs, "maximize")
    assert [row.name for row in rows] == ["tuned", "close", "baseline"]
    assert [row.verdict for row in rows] == [Verdict.BEST, Verdict.INDISTINGUISHABLE, Verdict.WORSE]
    flipped = rank_configurations(runs, "minimize")
    assert [row.name for row in flipped] == ["baseline", "close", "tuned"]
    assert [row.verdict for row in flipped] == [Verdict.BEST, Verdict.WORSE, Verdict.WORSE]


def test_rank_single_runs_are_too_few():
    rows = rank_configurations({"a": [0.17], "b": [0.20, 0.21], "c": [0.18]}, "minimize")
    assert [(row.name, row.verdict) for row in rows] == [
        ("a", Verdict.BEST),
        ("c", Verdict.TOO_FEW_RUNS),
        ("b", Verdict.TOO_FEW_RUNS),  # the best has a single run: nothing can be compared with it
    ]
    assert all(math.isnan(row.p_value) and math.isnan(row.adjusted_p) for row in rows)
    rows = rank_configurations({"a": [0.17, 0.171], "b": [0.20], "c": [0.30, 0.31]}, "minimize")
    by = _by_name(rows)
    assert by["b"].verdict is Verdict.TOO_FEW_RUNS and math.isnan(by["b"].adjusted_p)
    # the NaN comparison does not count in Holm: c's p-value is left as it is
    assert by["c"].adjusted_p == pytest.approx(by["c"].p_value)


def test_rank_ties_go_to_the_earliest_key():
    rows = rank_configurations({"first": [0.2, 0.3], "second": [0.3, 0.2], "third": [0.1, 0.4]}, "minimize")
    assert [row.name for row in rows] == ["first", "second", "third"]
    assert rows[0].verdict is Verdict.BEST
    assert {row.verdict for row in rows[1:]} == {Verdict.INDISTINGUISHABLE}


def test_rank_one_configuration_is_best():
    (row,) = rank_configurations({"only": [0.1, 0.2]}, "maximize")
    assert row.name == "only" and row.verdict is Verdict.BEST


def test_verdict_values_are_strings():
    assert all(isinstance(v.value, str) for v in Verdict)
    assert Verdict("worse") is Verdict.WORSE


@pytest.mark.parametrize(
    ("runs", "direction", "alpha", "message"),
    [
        ({}, "minimize", 0.05, "no configurations"),
        ({"a": [0.1, 0.2], "b": []}, "minimize", 0.05, "'b' has no runs"),
        ({"a": [0.1, math.nan]}, "minimize", 0.05, "finite"),
        ({"a": [0.1, 0.2]}, "lower", 0.05, "direction"),
        ({"a": [0.1, 0.2]}, "minimize", 1.5, "alpha"),
    ],
)
def test_rank_refuses_bad_input(runs, direction, alpha, message):
    with pytest.raises(ValueError, match=message):
        rank_configurations(runs, direction, alpha)


# --- paired_bootstrap --------------------------------------------------------------------------------------------

FINE_TUNED = [0.12, 0.18, 0.25, 0.09, 0.30, 0.15, 0.21, 0.11]
START = [0.15, 0.20, 0.24, 0.14, 0.36, 0.16, 0.27, 0.12]
DURATIONS = [30.0, 120.0, 45.0, 300.0, 60.0, 15.0, 90.0, 200.0]


def _reference(a, b, weights, resamples, confidence, seed):
    """The same bootstrap, one resample at a time in plain Python, with the same draws."""
    n = len(a)
    drawn = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    differences = []
    for row in drawn.tolist():
        total = sum(weights[i] for i in row)
        mean_a = sum(weights[i] * a[i] for i in row) / total
        mean_b = sum(weights[i] * b[i] for i in row) / total
        differences.append(mean_a - mean_b)
    tail = 100 * (1 - confidence) / 2
    return np.percentile(differences, [tail, 100 - tail])


@pytest.mark.parametrize("weights", [None, DURATIONS])
def test_paired_bootstrap_matches_a_slow_reference_loop(weights):
    interval = paired_bootstrap(FINE_TUNED, START, weights, resamples=2000, confidence=0.9, seed=7)
    low, high = _reference(FINE_TUNED, START, weights or [1.0] * len(START), 2000, 0.9, 7)
    assert (interval.low, interval.high) == pytest.approx((low, high), rel=1e-9)
    assert (interval.items, interval.resamples, interval.confidence) == (8, 2000, 0.9)


def test_paired_bootstrap_is_deterministic_for_a_seed():
    first = paired_bootstrap(FINE_TUNED, START, seed=3)
    assert paired_bootstrap(FINE_TUNED, START, seed=3) == first
    other = paired_bootstrap(FINE_TUNED, START, seed=4)
    assert (other.low, other.high) != (first.low, first.high)
    assert other.difference == first.difference


def test_paired_bootstrap_interval_contains_the_difference():
    interval = paired_bootstrap(FINE_TUNED, START)
    assert interval.difference == pytest.approx(np.mean(FINE_TUNED) - np.mean(START))
    assert interval.low < interval.difference < interval.high
    assert interval.high < 0  # the fine-tuned model is better on almost every file
    assert isinstance(interval, PairedInterval) and interval.resamples == 10_000 and interval.confidence == 0.95


def _reference_runs(runs, b, weights, resamples, confidence, seed):
    """The two-level bootstrap in plain Python: items drawn first, then runs, from one generator."""
    rng = np.random.default_rng(seed)
    n, r = len(b), len(runs)
    drawn = rng.integers(0, n, size=(resamples, n))
    drawn_runs = rng.integers(0, r, size=(resamples, r))
    differences = []
    for row, chosen in zip(drawn.tolist(), drawn_runs.tolist()):
        total = sum(weights[i] for i in row)
        mean_b = sum(weights[i] * b[i] for i in row) / total
        means_a = [sum(weights[i] * runs[k][i] for i in row) / total for k in chosen]
        differences.append(sum(means_a) / len(means_a) - mean_b)
    tail = 100 * (1 - confidence) / 2
    return np.percentile(differences, [tail, 100 - tail])


SEED_2 = [x + d for x, d in zip(FINE_TUNED, [0.03, -0.01, 0.04, 0.02, 0.05, 0.0, 0.03, 0.02])]


def test_paired_bootstrap_over_runs_matches_a_slow_reference_loop():
    interval = paired_bootstrap([FINE_TUNED, SEED_2], START, DURATIONS, resamples=1000, confidence=0.9, seed=5)
    low, high = _reference_runs([FINE_TUNED, SEED_2], START, DURATIONS, 1000, 0.9, 5)
    assert (interval.low, interval.high) == pytest.approx((low, high), rel=1e-9)
    both = (np.average(FINE_TUNED, weights=DURATIONS) + np.average(SEED_2, weights=DURATIONS)) / 2
    assert interval.difference == pytest.approx(both - np.average(START, weights=DURATIONS))
    assert interval.runs == 2 and interval.items == 8


def test_paired_bootstrap_one_run_as_a_list_of_runs_is_the_one_run_result():
    one = paired_bootstrap(FINE_TUNED, START, DURATIONS, resamples=500, seed=2)
    assert paired_bootstrap([FINE_TUNED], START, DURATIONS, resamples=500, seed=2) == one
    assert one.runs == 1


def test_paired_bootstrap_seeds_that_disagree_widen_the_interval():
    """Two seeds whose models differ file by file: the interval covers the seeds, so it is wider than either's."""
    one = paired_bootstrap(FINE_TUNED, START, resamples=2000, seed=1)
    far = [x + 0.08 for x in FINE_TUNED]
    both = paired_bootstrap([FINE_TUNED, far], START, resamples=2000, seed=1)
    assert both.high - both.low > one.high - one.low
    assert both.difference == pytest.approx(one.difference + 0.04)


def test_paired_bootstrap_with_a_statistic_matches_the_weighted_mean():
    def weighted(values, items):
        return float(np.average(values[items], weights=np.asarray(DURATIONS)[items]))

    vectorized = paired_bootstrap([FINE_TUNED, SEED_2], START, DURATIONS, resamples=300, seed=9)
    looped = paired_bootstrap([FINE_TUNED, SEED_2], START, statistic=weighted, resamples=300, seed=9)
    assert (looped.difference, looped.low, looped.high) == pytest.approx(
        (vectorized.difference, vectorized.low, vectorized.high), rel=1e-9
    )


def test_paired_bootstrap_with_a_non_linear_statistic():
    """An EER-like statistic (the fraction of items above a threshold that the labels decide): any callable."""
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 0])

    def errors(values, items):
        return float(np.mean((values[items] > 0.2) != labels[items].astype(bool)))

    interval = paired_bootstrap(FINE_TUNED, START, statistic=errors, resamples=200, seed=0)
    assert interval.difference == pytest.approx(
        errors(np.array(FINE_TUNED), np.arange(8)) - errors(np.array(START), np.arange(8))
    )
    assert interval.low <= interval.difference <= interval.high


def test_paired_bootstrap_refuses_runs_of_other_lengths():
    with pytest.raises(ValueError, match=r"a\[1\] has 7 items and b has 8"):
        paired_bootstrap([FINE_TUNED, SEED_2[:7]], START)


def test_paired_bootstrap_a_constant_shift_has_zero_width():
    shifted = [x + 0.05 for x in START]
    interval = paired_bootstrap(shifted, START, DURATIONS, resamples=500)
    assert interval.difference == pytest.approx(0.05, abs=1e-12)
    assert interval.low == pytest.approx(0.05, abs=1e-12) and interval.high == pytest.approx(0.05, abs=1e-12)


def test_paired_bootstrap_weights_the_mean_as_der_over_files_does():
    # file 1: 10 s of speech, DER 0.10 vs 0.20; file 2: 30 s, DER 0.30 vs 0.20
    a, b, durations = [0.10, 0.30], [0.20, 0.20], [10.0, 30.0]
    weighted = paired_bootstrap(a, b, durations, resamples=100)
    # (10·0.10 + 30·0.30) / 40 = 0.25 and (10·0.20 + 30·0.20) / 40 = 0.20
    assert weighted.difference == pytest.approx(0.25 - 0.20)
    assert paired_bootstrap(a, b, resamples=100).difference == pytest.approx(0.20 - 0.20, abs=1e-12)


def test_paired_bootstrap_is_paired():
    """Items that differ widely but move together: a paired interval is narrow, an unpaired one would not be."""
    b = [0.05, 0.40, 0.10, 0.60, 0.25, 0.80, 0.15, 0.35]
    a = [x - 0.02 + 0.001 * (i % 3) for i, x in enumerate(b)]
    interval = paired_bootstrap(a, b)
    assert interval.high - interval.low < 0.005
    assert interval.high < 0


def test_paired_bootstrap_zero_weight_items_do_not_count():
    with_zero = paired_bootstrap([0.1, 0.2, 0.9], [0.1, 0.1, 0.1], [1.0, 1.0, 0.0], resamples=2000)
    assert with_zero.difference == pytest.approx(0.05)
    # resamples mean 0.1 and 0.2 (minus 0.1) in some proportion, never the zero-weight 0.9
    assert with_zero.low == pytest.approx(0.0, abs=1e-12) and with_zero.high == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("a", "b", "weights", "message"),
    [
        ([0.1, 0.2, 0.3], [0.1, 0.2], None, "3 items and b has 2"),
        ([0.1], [0.2], None, "at least 2"),
        ([0.1, 0.2], [0.2, 0.1], [1.0, -1.0], "weight 1 is negative"),
        ([0.1, 0.2], [0.2, 0.1], [0.0, 0.0], "all weights are zero"),
        ([0.1, 0.2], [0.2, 0.1], [1.0], "1 weights for 2 items"),
        ([0.1, math.nan], [0.2, 0.1], None, "finite"),
    ],
)
def test_paired_bootstrap_refuses_bad_input(a, b, weights, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b, weights)


def test_paired_bootstrap_refuses_bad_settings():
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap(FINE_TUNED, START, resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(FINE_TUNED, START, confidence=95)


def test_importing_the_module_loads_neither_numpy_nor_scipy():
    code = "import sys, tuner.statistics; print(' '.join(m for m in ('numpy', 'scipy') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""


# --- one_sample_test -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "value"),
    [([0.18, 0.19, 0.17], 0.237), ([0.20, 0.24, 0.22, 0.25], 0.237), ([1.0, 2.0], 1.5), ([0.1, 0.3, 0.2, 0.5], 0.0)],
)
def test_one_sample_test_matches_scipy(values, value):
    assert one_sample_test(values, value) == pytest.approx(stats.ttest_1samp(values, value).pvalue, rel=1e-9)


def test_one_sample_test_edge_cases():
    assert math.isnan(one_sample_test([0.2], 0.3))
    assert one_sample_test([0.2, 0.2], 0.2) == 1.0 and one_sample_test([0.2, 0.2], 0.3) == 0.0
    with pytest.raises(ValueError, match="every value must be a finite number"):
        one_sample_test([0.2, float("nan")], 0.3)
