"""How the objectives' DataLoaders use the machine: the number of worker processes, persistent workers, pinned
memory on CUDA, and a random stream of its own in each worker.

A training step on a GPU takes milliseconds; reading and cropping audio in the training process would leave the
GPU waiting. :func:`resolve_num_workers` turns a study's ``options["num_workers"]`` (None: the default) into a
number: none on a machine of 2 cores or fewer (a worker would compete with training for them), else about half
the cores, at most 4. :func:`loader_settings` adds what goes with workers: they persist across epochs (no fork and
no dataset copy per epoch; a worker's random stream goes on from one epoch to the next) and, with CUDA, batches
are pinned for a faster copy to the GPU.

:class:`WorkerRandom` gives a dataset a numpy generator per process: in the training process, ``default_rng(seed)``
(what the datasets drew from before workers existed, so a run without workers is unchanged); in worker ``i``,
``default_rng([seed, i + 1])``. Runs stay reproducible for a seed and a number of workers; every worker draws
other crops than the others.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tuner.errors import ConfigError

__all__ = ["default_num_workers", "resolve_num_workers", "loader_settings", "WorkerRandom"]

#: workers a DataLoader starts at most by default
MAX_DEFAULT_WORKERS = 4


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_num_workers(cores: int | None = None) -> int:
    """Loader workers for a machine of ``cores`` cores (default: this one's): 0 up to 2 cores, else half the
    cores less one (the training process), at least 1 and at most :data:`MAX_DEFAULT_WORKERS`."""
    cores = available_cores() if cores is None else cores
    if cores <= 2:
        return 0
    return max(1, min(MAX_DEFAULT_WORKERS, cores // 2 - 1))


def resolve_num_workers(option: Any, where: str = "options['num_workers']") -> int:
    """A study's ``num_workers`` option as a number of workers: None for :func:`default_num_workers`, else a
    whole number of at least 0 (a :class:`~tuner.errors.ConfigError` saying so otherwise)."""
    if option is None:
        return default_num_workers()
    if isinstance(option, bool) or not isinstance(option, int) or option < 0:
        raise ConfigError(
            f"{where} must be a whole number of loader worker processes (0: load in the training process) or "
            f"None for the default ({default_num_workers()} on this machine), not {option!r}."
        )
    return option


def loader_settings(num_workers: int) -> dict[str, Any]:
    """DataLoader keyword arguments for ``num_workers`` workers: persistent workers when there are any, pinned
    memory when CUDA is available."""
    import torch

    return {
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "pin_memory": bool(torch.cuda.is_available()),
    }


class WorkerRandom:
    """A numpy generator per process for a dataset's random draws (crops, segments).

    Call :meth:`generator` where the dataset draws. The training process (no loader workers) gets
    ``default_rng(seed)``; worker ``i`` of a DataLoader gets ``default_rng([seed, i + 1])``, made in the worker
    on its first draw (a generator pickled into a worker would hand every worker the same stream).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._rng: np.random.Generator | None = None
        self._worker: int | None = None

    def generator(self) -> np.random.Generator:
        """This process's generator."""
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        worker = None if info is None else int(info.id)
        if self._rng is None or worker != self._worker:
            self._rng = np.random.default_rng(self.seed if worker is None else [self.seed, worker + 1])
            self._worker = worker
        return self._rng

    def __getstate__(self) -> dict[str, Any]:
        return {"seed": self.seed, "_rng": None, "_worker": None}  # each worker starts its own stream
