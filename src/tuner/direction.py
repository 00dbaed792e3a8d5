"""One comparator per direction: whether a value of a metric is better than another.

Every place that ranks trials, epochs or curves asks here, so that "better" means the same thing in the
runner, the records, the reports and the benchmarks (as Lightning's callbacks keep one ``mode_dict``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable
from typing import Literal

__all__ = ["Direction", "is_better", "best_value", "reaches", "rank_key"]

Direction = Literal["minimize", "maximize"]

#: direction -> the strict comparison "a is better than b"
_BETTER: dict[str, Callable[[float, float], bool]] = {"minimize": operator.lt, "maximize": operator.gt}
#: direction -> "a is at least as good as b"
_AT_LEAST: dict[str, Callable[[float, float], bool]] = {"minimize": operator.le, "maximize": operator.ge}


def _check(direction: str) -> None:
    if direction not in _BETTER:
        raise ValueError(f"direction must be 'minimize' or 'maximize', not {direction!r}")


def is_better(a: float, b: float, direction: str, *, or_equal: bool = False) -> bool:
    """Whether ``a`` is better than ``b`` in ``direction`` (or as good, with ``or_equal``); NaN is never better."""
    _check(direction)
    if math.isnan(a):
        return False
    return (_AT_LEAST if or_equal else _BETTER)[direction](a, b)


def reaches(value: float, goal: float, direction: str) -> bool:
    """Whether ``value`` is at least as good as ``goal``."""
    return is_better(value, goal, direction, or_equal=True)


def best_value(values: Iterable[float], direction: str) -> float:
    """The best of ``values`` in ``direction``."""
    _check(direction)
    return max(values) if direction == "maximize" else min(values)


def rank_key(direction: str) -> Callable[[float], float]:
    """A sort key that orders values best first."""
    _check(direction)
    return (lambda value: -value) if direction == "maximize" else (lambda value: value)
