"""How the objectives' DataLoaders use the machine: the number of worker processes, persistent workers, pinned
memory on CUDA, and random draws that neither the workers nor a resumed run change.

A training step on a GPU takes milliseconds; reading and cropping audio in the training process would leave the
GPU waiting. :func:`resolve_num_workers` turns a study's ``options["num_workers"]`` (None: the default) into a
number: none on a machine of 2 cores or fewer (a worker would compete with training for them), else about half
the cores, at most 4. :func:`loader_settings` adds what goes with workers: they persist across epochs (no fork and
no dataset copy per epoch) and, with CUDA, batches are pinned for a faster copy to the GPU.

A dataset's random draws (crops, segments) come from :class:`DrawRandom`: one numpy generator per item handed out,
keyed by the run's seed, the epoch and the item's place in the epoch's order, which :class:`KeyedSampler` hands to
the dataset with the item's index (:class:`Draw`). No stream goes on from one item, worker or epoch to the next, so
the draws are the same whichever process makes them, with any number of workers (persistent ones included, whose
streams a checkpoint could not hold), and a run resumed at epoch k draws what the uninterrupted run drew.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch.utils.data

from tuner.errors import ConfigError

__all__ = ["default_num_workers", "resolve_num_workers", "loader_settings", "Draw", "KeyedSampler", "DrawRandom"]

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


class Draw(NamedTuple):
    """One item of an epoch as :class:`KeyedSampler` hands it to a dataset: ``item``, its index in the dataset, and
    the key of its random draws (``epoch``, and ``position``: its place in the epoch's order, from 0)."""

    item: int
    epoch: int
    position: int


class KeyedSampler(torch.utils.data.Sampler[Any]):
    """A sampler of indices (or a batch sampler of lists of indices) whose indices reach the dataset as :class:`Draw`
    items: pass it as the DataLoader's ``sampler`` (``batch_sampler``), the dataset's ``__getitem__`` takes a Draw.

    Lightning tells it the epoch (:meth:`set_epoch`, passed on to the wrapped sampler) before each epoch's iterator
    starts; the epoch is read when the iteration starts.
    """

    def __init__(self, sampler: Iterable[Any]) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        inner = getattr(self.sampler, "set_epoch", None)
        if callable(inner):
            inner(epoch)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        epoch, position = self.epoch, 0
        for item in self.sampler:
            if isinstance(item, (list, tuple)):  # a batch
                yield [Draw(int(index), epoch, position + offset) for offset, index in enumerate(item)]
                position += len(item)
            else:
                yield Draw(int(item), epoch, position)
                position += 1


#: the last word of every draw's key, so that no other seeded stream of tuner (a sampler's ``[seed, epoch]``) shares
#: it: numpy's SeedSequence gives ``[a, b]`` and ``[a, b, 0]`` the same stream
_DRAWS = 0x64726177


class DrawRandom:
    """A dataset's random draws (crops, segments): :meth:`generator` of a :class:`Draw` is
    ``default_rng([seed, epoch, position, ...])``, the same in every process and whatever came before it."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def generator(self, draw: Draw) -> np.random.Generator:
        """The generator of ``draw``'s random numbers."""
        if not isinstance(draw, Draw):
            raise TypeError(
                f"DrawRandom.generator takes a Draw (the dataset's item as KeyedSampler hands it), not {draw!r}: "
                "wrap the DataLoader's sampler in tuner.data.loading.KeyedSampler"
            )
        return np.random.default_rng([self.seed, draw.epoch, draw.position, _DRAWS])
