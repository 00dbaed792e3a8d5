"""Loader workers: how many by default, what goes with them, and a random stream of their own in each worker that
keeps runs reproducible (tuner.data.loading)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from tuner.data.loading import WorkerRandom, default_num_workers, loader_settings, resolve_num_workers
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
    """Each item: the worker that made it and one draw from the dataset's stream."""

    def __init__(self, seed: int) -> None:
        self.random = WorkerRandom(seed)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[int, float]:
        info = torch.utils.data.get_worker_info()
        return (-1 if info is None else info.id), float(self.random.generator().random())


def _epochs(seed: int, workers: int, epochs: int = 2) -> list[list[tuple[int, float]]]:
    loader = DataLoader(_Draws(seed), batch_size=None, **loader_settings(workers))
    return [[(int(w), float(x)) for w, x in loader] for _ in range(epochs)]


def test_without_workers_the_stream_is_the_one_the_datasets_drew_from_before():
    """A run without loader workers is unchanged: default_rng(seed), going on across epochs."""
    expected = np.random.default_rng(7).random(16).tolist()
    drawn = [x for epoch in _epochs(7, workers=0) for _, x in epoch]
    assert drawn == pytest.approx(expected, rel=0, abs=0)


@pytest.mark.slow
def test_each_worker_draws_its_own_stream_reproducibly_and_goes_on_across_epochs():
    first, again = _epochs(7, workers=2), _epochs(7, workers=2)
    assert first == again  # the same seed and number of workers: the same draws, in the same order
    by_worker: dict[int, list[float]] = {}
    for epoch in first:
        for worker, x in epoch:
            by_worker.setdefault(worker, []).append(x)
    assert sorted(by_worker) == [0, 1]
    for worker, draws in by_worker.items():  # a stream of its own, which the next epoch continues (persistent)
        assert draws == pytest.approx(np.random.default_rng([7, worker + 1]).random(len(draws)).tolist(), abs=0)
    assert by_worker[0][:4] != by_worker[1][:4]
    assert _epochs(8, workers=2) != first  # another seed, other draws


def test_a_pickled_stream_starts_afresh_in_the_process_that_loads_it():
    random = WorkerRandom(3)
    random.generator().random(5)  # drawn in this process
    copy = pickle.loads(pickle.dumps(random))
    assert copy.generator().random() == np.random.default_rng(3).random()


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
    """Two runs of a seed with 2 workers train alike; without workers the random segments differ, so do the runs."""
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
    assert history(0) != with_workers  # the workers' own streams: other segments than the training process's
