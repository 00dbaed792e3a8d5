"""Loader workers: how many by default, what goes with them, and random draws keyed by the seed, the epoch and the
item's place in it, which neither the workers nor a resumed run change (tuner.data.loading)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from tuner.data.loading import (
    _DRAWS,
    Draw,
    DrawRandom,
    KeyedSampler,
    default_num_workers,
    loader_settings,
    resolve_num_workers,
)
from tuner.errors import ConfigError


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 0), (4, 1), (8, 3), (16, 4), (64, 4)])
def test_default_workers_leave_a_two_core_machine_alone_and_use_a_large_one(cores, workers):
    assert default_num_workers(cores) == workers


def test_the_option_is_a_count_or_none():
    assert resolve_num_workers(None) == default_num_workers()
    assert resolve_num_workers(0) == 0 and resolve_num_workers(3) == 3
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ConfigError, match=r"options\['num_workers'\] must be a whole number"):
            resolve_num_workers(bad)


def test_workers_persist_and_pin_memory_only_with_cuda():
    cuda = torch.cuda.is_available()
    assert loader_settings(0) == {"num_workers": 0, "persistent_workers": False, "pin_memory": cuda}
    assert loader_settings(2)["persistent_workers"] is True


class _Draws(Dataset):
    """Each item: the worker that made it, its draw's key and one number drawn for it."""

    def __init__(self, seed: int) -> None:
        self.random = DrawRandom(seed)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, draw: Draw) -> tuple[int, tuple[int, int, int], float]:
        info = torch.utils.data.get_worker_info()
        return (-1 if info is None else info.id), tuple(draw), float(self.random.generator(draw).random())


def _epochs(seed: int, workers: int, epochs: tuple[int, ...] = (0, 1)) -> list[list[tuple[tuple[int, ...], float]]]:
    """Each epoch's (key, draw) of every item, as Lightning runs the loader: the sampler told the epoch first."""
    sampler = KeyedSampler(RandomSampler(range(8), generator=torch.Generator().manual_seed(seed)))
    loader = DataLoader(_Draws(seed), batch_size=None, sampler=sampler, **loader_settings(workers))
    drawn = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        drawn.append([(tuple(int(k) for k in key), float(x)) for _, key, x in loader])
    return drawn


def test_an_items_draws_are_keyed_by_the_seed_the_epoch_and_its_place_in_the_epoch():
    first, second = _epochs(7, workers=0)
    assert [key[2] for key, _ in first] == list(range(8)) and {key[1] for key, _ in second} == {1}
    assert sorted(key[0] for key, _ in first) == list(range(8))  # every item once, in the sampler's order
    for key, x in first + second:
        assert x == np.random.default_rng([7, key[1], key[2], _DRAWS]).random()
    assert [x for _, x in first] != [x for _, x in second]  # another epoch, other draws
    assert _epochs(8, workers=0)[0] != first  # another seed, other order and draws


def test_a_resumed_epoch_draws_what_it_drew_in_the_whole_run():
    """No stream goes on from one epoch to the next: epoch 1 alone (a run resumed after epoch 0) draws the same."""
    whole = _epochs(7, workers=0, epochs=(0, 1))
    assert [draw for _, draw in _epochs(7, workers=0, epochs=(1,))[0]] == [draw for _, draw in whole[1]]


@pytest.mark.slow
def test_workers_draw_what_the_training_process_draws():
    """2 persistent workers, epoch after epoch: the same draws as without workers, whichever worker makes an item."""
    with_workers = _epochs(7, workers=2, epochs=(0, 1, 2))
    assert with_workers == _epochs(7, workers=0, epochs=(0, 1, 2))


def test_a_dataset_draw_needs_its_key():
    with pytest.raises(TypeError, match=r"takes a Draw .* KeyedSampler"):
        DrawRandom(3).generator(5)  # type: ignore[arg-type]


def test_the_keyed_sampler_keys_batches_and_passes_the_epoch_on():
    class Batches(torch.utils.data.Sampler[list[int]]):
        epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __len__(self) -> int:
            return 2

        def __iter__(self):
            yield from ([3, 1], [2])

    inner = Batches()
    keyed = KeyedSampler(inner)
    keyed.set_epoch(4)
    assert inner.epoch == 4 and len(keyed) == 2
    assert list(keyed) == [[Draw(3, 4, 0), Draw(1, 4, 1)], [Draw(2, 4, 2)]]


def test_a_cache_goes_to_a_worker_without_its_decoded_audio(tmp_path):
    import soundfile as sf

    from tuner.data.audio import WaveformCache

    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(16000, dtype=np.float32), 16000)
    cache = WaveformCache(max_bytes=10**6)
    cache.get(path)
    assert cache.nbytes == 64000
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.nbytes == 0 and copy.max_bytes == 10**6
    waveform, rate = copy.get(path)
    assert rate == 16000 and waveform.shape == (1, 16000) and copy.nbytes == 64000


@pytest.mark.slow
def test_separation_trains_with_two_loader_workers_reproducibly(sep_spec, tmp_path):
    """Two runs of a seed with 2 workers train alike, and as a run without workers: the same segments."""
    from tuner.runner import prepare_objective
    from tuner.search_space import TrialConfig
    from tuner.training.fit import fit

    def history(workers: int) -> dict:
        spec = sep_spec(max_epochs=1)
        spec = spec.override(options={**spec.options, "num_workers": workers})
        objective, _ = prepare_objective(spec, workdir=tmp_path)
        result = fit(objective, TrialConfig(batch_size=2, lr=1e-3), seed=3, max_epochs=1,
                     trainer_options={"limit_train_batches": 2})  # fmt: skip
        return {k: v for k, v in result.history[0].items() if k != "seconds"}

    with_workers = history(2)
    assert history(2) == with_workers
    assert history(0) == with_workers  # each segment is drawn from its own key, whichever process draws it
