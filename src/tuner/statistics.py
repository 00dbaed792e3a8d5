"""Whether one configuration is better than another, with the uncertainty that another seed brings.

A difference smaller than what another training seed does is not a finding: these functions turn the runs of each
configuration (one validation metric per seed) into a mean with its confidence interval (`summarize`), test two
configurations against each other (`welch_test`), correct for the number of comparisons (`holm`), rank a set of
configurations against the best one (`rank_configurations`), and put an interval on the difference of two models
scored on the same test files (`paired_bootstrap`).

numpy and scipy are imported inside the functions, so that ``import tuner.statistics`` stays cheap.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tuner.direction import is_better, rank_key

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "RunSummary",
    "summarize",
    "welch_test",
    "holm",
    "Verdict",
    "RankedConfiguration",
    "rank_configurations",
    "PairedInterval",
    "paired_bootstrap",
]


@dataclass(frozen=True)
class RunSummary:
    """The runs of one configuration: their number, mean, sample standard deviation and the confidence interval
    of the mean (``low``, ``high``). ``sd``, ``low`` and ``high`` are NaN for a single run."""

    n: int
    mean: float
    sd: float
    low: float
    high: float


class Verdict(enum.Enum):
    """A configuration compared with the best-mean configuration of its ranking."""

    BETTER = "better"
    INDISTINGUISHABLE = "indistinguishable"
    WORSE = "worse"
    BEST = "best"
    TOO_FEW_RUNS = "too few runs"


@dataclass(frozen=True)
class RankedConfiguration:
    """One row of `rank_configurations`: the configuration's runs summarized, the p-value of its comparison with
    the best-mean configuration, that p-value Holm-adjusted, and the verdict (p-values NaN for the best row and
    where a side has fewer than 2 runs)."""

    name: str
    summary: RunSummary
    p_value: float
    adjusted_p: float
    verdict: Verdict


@dataclass(frozen=True)
class PairedInterval:
    """``difference`` = mean(a) - mean(b) over ``items`` paired items, and its percentile bootstrap interval
    [``low``, ``high``] at ``confidence`` from ``resamples`` resamples."""

    difference: float
    low: float
    high: float
    items: int
    resamples: int
    confidence: float
    runs: int = 1  # runs of ``a`` (seeds of one configuration) the interval covers


def _values(values: Sequence[float], what: str) -> list[float]:
    """``values`` as floats; ValueError if any is NaN or infinite."""
    floats = [float(v) for v in values]
    bad = [i for i, v in enumerate(floats) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what}: value {bad[0]} is {floats[bad[0]]}, every value must be a finite number")
    return floats


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), not {confidence!r}")


def _mean_and_variance(values: list[float]) -> tuple[float, float]:
    """Mean and sample variance (ddof=1); exactly 0 variance (and the value itself as mean) when all are equal."""
    import numpy as np

    if min(values) == max(values):
        return values[0], 0.0
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.var(ddof=1))


def summarize(values: Sequence[float], confidence: float = 0.95) -> RunSummary:
    """Mean, sample standard deviation (ddof=1) and two-sided Student-t confidence interval of the mean,
    ``mean ± t(1 - α/2, n - 1) · sd / √n`` with ``α = 1 - confidence``.

    A single value gives NaN ``sd``, ``low`` and ``high`` (one run says nothing about its spread). ValueError for
    no values, a NaN or infinite value, or a confidence outside (0, 1).
    """
    _check_confidence(confidence)
    floats = _values(values, "summarize")
    n = len(floats)
    if n == 0:
        raise ValueError("summarize: no values (a configuration needs at least one run)")
    mean, variance = _mean_and_variance(floats)
    if n == 1:
        return RunSummary(n=1, mean=mean, sd=math.nan, low=math.nan, high=math.nan)
    from scipy import stats

    sd = math.sqrt(variance)
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
    return RunSummary(n=n, mean=mean, sd=sd, low=mean - half, high=mean + half)


def welch_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's unequal-variance t-test of equal means (Welch–Satterthwaite degrees of freedom).

    Edge cases: fewer than 2 values on either side gives NaN (no test is possible); both samples with zero
    variance give 1.0 if their means are equal and 0.0 otherwise. ValueError for a NaN or infinite value.
    """
    first, second = _values(a, "welch_test, a"), _values(b, "welch_test, b")
    if len(first) < 2 or len(second) < 2:
        return math.nan
    mean_a, var_a = _mean_and_variance(first)
    mean_b, var_b = _mean_and_variance(second)
    if var_a == 0.0 and var_b == 0.0:
        return 1.0 if mean_a == mean_b else 0.0
    from scipy import stats

    part_a, part_b = var_a / len(first), var_b / len(second)
    t = (mean_a - mean_b) / math.sqrt(part_a + part_b)
    df = (part_a + part_b) ** 2 / (part_a**2 / (len(first) - 1) + part_b**2 / (len(second) - 1))
    return min(1.0, 2.0 * float(stats.t.sf(abs(t), df)))


def one_sample_test(values: Sequence[float], value: float) -> float:
    """Two-sided p-value of the one-sample t-test that the mean of ``values`` is ``value`` (a fixed figure: a
    starting model's, which no seed moves). Fewer than 2 values gives NaN; values of zero variance give 1.0 if
    their mean is ``value`` and 0.0 otherwise. ValueError for a NaN or infinite value."""
    sample = _values(values, "one_sample_test, values")
    (fixed,) = _values([value], "one_sample_test, value")
    if len(sample) < 2:
        return math.nan
    mean, variance = _mean_and_variance(sample)
    if variance == 0.0:
        return 1.0 if mean == fixed else 0.0
    from scipy import stats

    t = (mean - fixed) / math.sqrt(variance / len(sample))
    return min(1.0, 2.0 * float(stats.t.sf(abs(t), len(sample) - 1)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given.

    Step-down: the i-th smallest of m p-values (i from 0) is multiplied by m - i, the results made non-decreasing
    in that order and capped at 1. NaN entries stay NaN and do not count in m. ValueError for a p-value outside
    [0, 1].
    """
    floats = [float(p) for p in p_values]
    for p in floats:
        if not math.isnan(p) and not 0.0 <= p <= 1.0:
            raise ValueError(f"holm: p-value {p!r} is outside [0, 1]")
    order = sorted((i for i, p in enumerate(floats) if not math.isnan(p)), key=lambda i: floats[i])
    m = len(order)
    adjusted = [math.nan] * len(floats)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * floats[i]))
        adjusted[i] = running
    return adjusted


def rank_configurations(
    runs: Mapping[str, Sequence[float]], direction: Literal["minimize", "maximize"], alpha: float = 0.05
) -> list[RankedConfiguration]:
    """Each configuration's runs summarized and compared with the configuration of best mean, best mean first.

    The configuration with the best mean in ``direction`` (ties: the earliest key) is BEST. Every other one is
    compared with it by `welch_test`, and the p-values are Holm-adjusted over those comparisons. Verdicts are
    relative to that best-mean row: WORSE (BETTER) if the adjusted p-value is below ``alpha`` and the mean is
    worse (better) than the best's, INDISTINGUISHABLE otherwise, TOO_FEW_RUNS if either side has fewer than 2
    runs. The BEST row has NaN p-values, and is BEST even with a single run. Rows sort by mean, best first
    (ties in key order). ValueError for no configurations, a configuration without runs, a NaN or infinite run,
    an unknown direction or an ``alpha`` outside (0, 1).
    """
    key = rank_key(direction)  # checks the direction
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1 (exclusive), not {alpha!r}")
    if not runs:
        raise ValueError("rank_configurations: no configurations to rank")
    summaries: dict[str, RunSummary] = {}
    for name, values in runs.items():
        if len(values) == 0:
            raise ValueError(f"rank_configurations: configuration {name!r} has no runs")
        summaries[name] = summarize(values)
    best = next(iter(summaries))
    for name, summary in summaries.items():
        if is_better(summary.mean, summaries[best].mean, direction):
            best = name
    others = [name for name in summaries if name != best]
    p_values = [welch_test(runs[name], runs[best]) for name in others]
    adjusted = dict(zip(others, holm(p_values)))
    raw = dict(zip(others, p_values))
    best_mean = summaries[best].mean
    rows = [RankedConfiguration(best, summaries[best], math.nan, math.nan, Verdict.BEST)]
    for name in others:
        mean, p, adj = summaries[name].mean, raw[name], adjusted[name]
        if math.isnan(p):
            verdict = Verdict.TOO_FEW_RUNS
        elif adj < alpha and is_better(best_mean, mean, direction):
            verdict = Verdict.WORSE
        elif adj < alpha and is_better(mean, best_mean, direction):
            verdict = Verdict.BETTER
        else:
            verdict = Verdict.INDISTINGUISHABLE
        rows.append(RankedConfiguration(name, summaries[name], p, adj, verdict))
    order = {name: i for i, name in enumerate(runs)}
    return sorted(rows, key=lambda row: (key(row.summary.mean), row.verdict is not Verdict.BEST, order[row.name]))


def _weighted_mean(values: npt.NDArray[np.float64], weights: npt.NDArray[np.float64]) -> float:
    return float((weights * values).sum() / weights.sum())


def paired_bootstrap(
    a: Sequence[float] | Sequence[Sequence[float]],
    b: Sequence[float],
    weights: Sequence[float] | None = None,
    *,
    statistic: Callable[[Any, Any], float] | None = None,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedInterval:
    """The difference ``metric(a) - metric(b)`` over paired items, with its percentile bootstrap interval.

    ``a[i]`` and ``b[i]`` are the same item (a test file) scored by two models. The metric is the (weighted) mean,
    ``sum(w·x) / sum(w)`` with ``weights`` (as DER over files weights each file by its reference speech), or
    ``statistic(values, items)``: the metric of the items at positions ``items`` (a numpy index array, repeats
    allowed) whose values are ``values[items]`` (an EER over resampled verification trials, whose labels the
    callable holds).

    ``a`` may hold several runs of one configuration (runs x items: seeds), scored on the same items; its metric is
    then the mean of its runs' metrics, and each resample draws the runs with replacement too, so the interval
    covers what another seed would do as well as what other items would (a two-level bootstrap: items, then runs).

    Each resample draws ``len(b)`` items with replacement, the same items for ``a`` and ``b`` (paired), all at once
    from ``numpy.random.default_rng(seed).integers(0, n, size=(resamples, n))``, then (several runs) the runs from
    the same generator: deterministic for a seed; one run gives the one-run result. A resample whose drawn items
    all weigh 0 has no mean and is left out of the percentiles (NaN bounds if every resample is). ValueError for
    items of different lengths, fewer than 2 items, a NaN or infinite value, negative or all-zero weights, fewer
    than 1 resample or a confidence outside (0, 1).
    """
    import numpy as np

    _check_confidence(confidence)
    if resamples < 1:
        raise ValueError(f"paired_bootstrap: resamples must be at least 1, not {resamples!r}")
    several = len(a) > 0 and np.ndim(a[0]) == 1
    if several:
        runs = [_values(run, f"paired_bootstrap, a[{i}]") for i, run in enumerate(a)]  # type: ignore[arg-type]
    else:
        runs = [_values(a, "paired_bootstrap, a")]  # type: ignore[arg-type]
    second = _values(b, "paired_bootstrap, b")
    n = len(second)
    for i, run in enumerate(runs):
        if len(run) != n:
            where = f"a[{i}]" if several else "a"
            raise ValueError(f"paired_bootstrap: {where} has {len(run)} items and b has {n}: they must be paired")
    if n < 2:
        raise ValueError(f"paired_bootstrap: {n} item(s), a bootstrap needs at least 2")
    if weights is None:
        w = np.ones(n)
    else:
        w = np.asarray(_values(weights, "paired_bootstrap, weights"), dtype=float)
        if len(w) != n:
            raise ValueError(f"paired_bootstrap: {len(w)} weights for {n} items")
        if (w < 0).any():
            raise ValueError(f"paired_bootstrap: weight {int(np.argmax(w < 0))} is negative ({w[w < 0][0]})")
        if not (w > 0).any():
            raise ValueError("paired_bootstrap: all weights are zero")
    x, y = np.asarray(runs, dtype=float), np.asarray(second, dtype=float)  # x: runs x items
    every = np.arange(n)

    def metric(values: Any, items: Any) -> float:
        if statistic is not None:
            return float(statistic(values, items))
        return float(_weighted_mean(values[items], w[items]))

    difference = float(np.mean([metric(run, every) for run in x])) - metric(y, every)

    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n, size=(resamples, n))
    drawn_runs = rng.integers(0, len(x), size=(resamples, len(x))) if len(x) > 1 else np.zeros((resamples, 1), int)
    if statistic is None:  # vectorized: the mean of runs' weighted means is the weighted mean of the runs' mean
        drawn_w = w[drawn]
        total = drawn_w.sum(axis=1)
        per_item = x[drawn_runs].mean(axis=1)  # resamples x items: each resample's drawn runs, averaged
        picked = np.take_along_axis(per_item, drawn, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (drawn_w * picked).sum(axis=1) / total - (drawn_w * y[drawn]).sum(axis=1) / total
        boot = boot[total > 0]
    else:
        boot = np.array(
            [
                np.mean([metric(x[r], items) for r in chosen]) - metric(y, items)
                for items, chosen in zip(drawn, drawn_runs, strict=True)
            ]
        )
        boot = boot[np.isfinite(boot)]
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(boot, [tail, 100.0 - tail]) if boot.size else (math.nan, math.nan)
    return PairedInterval(
        difference=difference,
        low=float(low),
        high=float(high),
        items=n,
        resamples=resamples,
        confidence=confidence,
        runs=len(x),
    )
