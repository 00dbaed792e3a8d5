"""Search strategies beyond Optuna's own: tuner's samplers (usable in any study file), and the replay of
recorded learning curves that compares strategies without training (benchmarks/search_strategies.py).

``RungTPESampler`` is imported on first use (it imports Optuna)."""

from __future__ import annotations

from typing import Any

__all__ = ["RungTPESampler"]


def __getattr__(name: str) -> Any:  # lazy: the sampler imports optuna
    if name == "RungTPESampler":
        from tuner.strategies.samplers import RungTPESampler

        return RungTPESampler
    raise AttributeError(f"module 'tuner.strategies' has no attribute {name!r}")
