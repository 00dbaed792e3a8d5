"""Text a person reads, made one way everywhere: numbers in tables and messages, and "did you mean" hints."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["format_number", "did_you_mean", "describe", "epoch_number"]


def format_number(value: Any, *, significant: int | None = None, missing: str = "-", small: float = 1e-2) -> str:
    """``value`` as a table cell or a message shows it.

    A float: 4 decimals (``0.1848``), or 3 significant digits below ``small`` (``0.0003``, ``1.2e-05``); with
    ``significant``, that many significant digits instead (``%g``). ``missing`` for None, ``nan`` for NaN;
    anything else (ints, text, booleans) as ``str`` gives it.
    """
    if value is None:
        return missing
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if significant is not None:
            return f"{value:.{significant}g}"
        return f"{value:.3g}" if abs(value) < small and value != 0 else f"{value:.4f}"
    return str(value)


def did_you_mean(word: str, candidates: Iterable[Any]) -> str:
    """`` (did you mean 'X'?)`` for the closest candidate, ignoring case (``adamw`` -> ``AdamW``); "" if none."""
    by_lower = {str(c).lower(): str(c) for c in candidates}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean '{by_lower[close[0]]}'?)" if close else ""


def describe(values: Mapping[str, Any]) -> str:
    """A mapping as a person reads it: ``optimizer AdamW, lr 0.0003123, batch_size 16``; a nested mapping
    as ``train: 20 speakers, 80 utterances, 0.05 hours; dev: ...`` (numbers first where the key is a count)."""
    parts = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            parts.append(f"{key}: {describe(value)}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and str(key).endswith("s"):
            parts.append(f"{format_number(value, significant=4)} {key}")  # counts: "20 speakers", "0.05 hours"
        else:
            parts.append(f"{key} {format_number(value, significant=4)}")
    nested = any(isinstance(value, Mapping) for value in values.values())
    return ("; " if nested else ", ").join(parts)


def epoch_number(epoch: int | None) -> int | None:
    """An epoch as a person counts it, from 1 (logs, tables, reports, exports, checkpoint names); tuner stores
    Lightning's count, from 0 (and Optuna's step is that count: optuna-dashboard's step k is epoch k + 1)."""
    return None if epoch is None else epoch + 1
