"""Why a trial failed: a failure of its own (it diverged, ran out of memory) is recorded and the study goes on;
anything else stops the study. One line says why and what to do."""

from __future__ import annotations

import gc

__all__ = ["TRIAL_FAILURES", "TrialFailed", "describe_failure", "free_memory"]


#: what fails one trial, not the study: recorded as the trial's ``fail_reason``, then the next trial runs
TRIAL_FAILURES: tuple[type[BaseException], ...] = (RuntimeError, MemoryError, FloatingPointError)


class TrialFailed(Exception):
    """A trial failed for a reason of its own (diverged, out of memory, ...); the study goes on."""


def describe_failure(error: BaseException) -> str:
    """One line saying why a trial failed and what to do about it."""
    from tuner.training.divergence import TrialDiverged

    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, TrialDiverged):
        return text
    if _is_out_of_memory(error):
        return (
            f"out of memory ({text}). Lower batch_size in the search space (or the objective's crop/segment "
            "length), unfreeze fewer layers, or run one trial per GPU (one worker per device: --device N)."
        )
    return f"{type(error).__name__}: {text}"


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    message = str(error).lower()
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or any(
        marker in message for marker in ("out of memory", "can't allocate memory", "cannot allocate memory")
    )


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
