"""The callback that makes a resumed run go on as the uninterrupted run would have: every random state a training
run draws from is saved in each checkpoint, and put back at the moment the uninterrupted run would have reached it.

What a run draws from, and where it lives:

* torch's generator (dropout, a sampler without a generator of its own, the seed each DataLoader iterator draws),
  CUDA's generators where CUDA is in use, numpy's global state and Python's ``random``;
* the generators a training DataLoader holds (``DataLoader(generator=...)``, a ``RandomSampler``'s), which go on
  from one epoch to the next;
* a sampler that draws from its seed and the epoch (:class:`~tuner.data.verification.SpeakerBatchSampler`,
  pyannote's ``create_rng_for_worker``, :class:`~tuner.data.loading.KeyedSampler`'s draws): nothing to save, as
  long as the epoch is right when the epoch's iterator starts.

When: a checkpoint is written at the end of an epoch, validation included (``EpochCheckpoint``), so the states
saved are those the next epoch starts from. A resumed ``Trainer.fit`` builds its model (pyannote draws its
classifier's initial weights in ``setup``), restores the checkpoint, and creates the training iterator before the
first epoch's hooks, with the epoch counter and the samplers' epochs not yet moved on. :class:`RandomState`
therefore puts the states back in ``on_train_epoch_start`` of the first epoch after the resume, and starts that
epoch's training iterator again from them, as every other epoch's iterator starts after ``on_train_epoch_start``.
A validation DataLoader with persistent workers started its iterator (one draw of torch's generator) in the
first epoch of the uninterrupted run: it is started before the states are put back. (A hook that runs after this
callback's ``on_train_epoch_start``, the module's included, and draws random numbers would draw them after the
restarted iterator's seed, not before: none of tuner's does.) ``tests/test_exact_resume.py`` checks each of these.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from typing_extensions import override

__all__ = ["RandomState", "capture_random_state", "restore_random_state", "CHECKPOINT_KEY"]

logger = logging.getLogger(__name__)

#: where a checkpoint keeps the states (a top-level key of the Lightning checkpoint)
CHECKPOINT_KEY = "tuner_random_state"
_VERSION = 1


class RandomState(pl.Callback):
    """Save the run's random states in every checkpoint; on a resume, put them back before the first epoch.

    A checkpoint written before tuner kept these states resumes as before (with a warning): its epochs after the
    resume draw other random numbers than an uninterrupted run would have.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CHECKPOINT_KEY] = capture_random_state(trainer)

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._pending = checkpoint.get(CHECKPOINT_KEY)
        if self._pending is None:
            logger.warning(
                "the checkpoint holds no random states (written by an older tuner): the epochs after it draw other "
                "random numbers (batch order, crops, dropout) than an uninterrupted run would have"
            )

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, self._pending = self._pending, None
        if state is not None:
            restore_random_state(trainer, state)


def capture_random_state(trainer: pl.Trainer) -> dict[str, Any]:
    """Every random state the rest of ``trainer``'s run draws from, as tensors and plain Python values (a
    checkpoint with them still loads with ``torch.load(weights_only=True)``)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "version": _VERSION,
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
        "loaders": [generator.get_state() for generator in _train_generators(trainer)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(trainer: pl.Trainer, state: Mapping[str, Any]) -> None:
    """Put back the states :func:`capture_random_state` saved, then start the training iterator again from them.

    Called at the start of the first epoch after a resume (see the module's description)."""
    for loader in _flatten(trainer.val_dataloaders):
        if isinstance(loader, torch.utils.data.DataLoader) and loader.persistent_workers and loader.num_workers > 0:
            iter(loader)  # as the uninterrupted run's first validation did: its one draw, before the states
    generators = _train_generators(trainer)
    saved = list(state.get("loaders", []))
    if len(saved) == len(generators):
        for generator, generator_state in zip(generators, saved, strict=True):
            generator.set_state(generator_state)
    else:
        logger.warning(
            "the checkpoint holds the states of %d training DataLoader generator(s), this run has %d: they start "
            "afresh, so the batch order after the resume differs from an uninterrupted run",
            len(saved),
            len(generators),
        )
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"]))
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        for index, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    _restart_train_iterator(trainer)


def _restart_train_iterator(trainer: pl.Trainer) -> None:
    """Start the training iterator of this epoch again (drawing its seed, its sampler's order and its first items
    from the states just put back).

    Lightning (2.x) makes the first iterator of a resumed fit in ``FitLoop.setup_data``, before the checkpoint's
    epoch is counted and before the samplers are told the epoch; every other epoch's iterator is made after
    ``on_train_epoch_start``, by ``iter()`` on the loop's data fetcher, which is what this does once more."""
    if not hasattr(trainer.fit_loop, "_data_fetcher"):
        raise RuntimeError(
            "lightning's FitLoop has no '_data_fetcher' any more: tuner.training.random_state cannot start the "
            "resumed epoch's training iterator from the restored random states (a Lightning upgrade changed it)"
        )
    fetcher = trainer.fit_loop._data_fetcher
    if fetcher is not None:  # None: no training data (nothing to restart)
        iter(fetcher)


def _train_generators(trainer: pl.Trainer) -> list[torch.Generator]:
    """The torch generators the training DataLoaders hold (the loader's, its samplers'), each once, in a fixed
    order."""
    found: dict[int, torch.Generator] = {}
    for loader in _flatten(trainer.train_dataloader):
        for owner in _sampling_objects(loader):
            generator = getattr(owner, "generator", None)
            if isinstance(generator, torch.Generator):
                found.setdefault(id(generator), generator)
    return list(found.values())


def _sampling_objects(loader: Any) -> Iterator[Any]:
    """``loader`` and the samplers it draws its order from: ``sampler``, ``batch_sampler`` and those they wrap."""
    yield loader
    for name in ("sampler", "batch_sampler"):
        inner, depth = getattr(loader, name, None), 0
        while inner is not None and depth < 4:  # a wrapper's wrapped sampler, and so on
            yield inner
            inner, depth = getattr(inner, "sampler", None), depth + 1


def _flatten(loaders: Any) -> list[Any]:
    """The DataLoaders of Lightning's ``train_dataloader`` / ``val_dataloaders`` (one, or a collection)."""
    if loaders is None:
        return []
    if isinstance(loaders, Mapping):
        return [loader for value in loaders.values() for loader in _flatten(value)]
    if isinstance(loaders, (list, tuple)):
        return [loader for value in loaders for loader in _flatten(value)]
    return [loaders]
