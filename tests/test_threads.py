"""Each worker's torch takes its share of the machine's cores, not all of them."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tuner import StudySpec
from tuner.errors import ConfigError
from tuner.training import threads as threads_module
from tuner.training.threads import available_cores, share_cores


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    threads_module._said.clear()


def test_the_cores_are_shared_among_live_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads_module, "available_cores", lambda: 8)
    folder = tmp_path / "cache" / "workers"
    folder.mkdir(parents=True)
    host = socket.gethostname()
    (folder / f"{host}-{os.getppid()}.worker").touch()  # another live worker (this test's parent process)
    (folder / f"{host}-999999999.worker").touch()  # a dead one: ignored and removed
    (folder / f"otherhost-{os.getppid()}.worker").touch()  # another machine's
    assert share_cores(tmp_path) == 4 and torch.get_num_threads() == 4
    assert not (folder / f"{host}-999999999.worker").exists()
    assert (folder / f"{host}-{os.getpid()}.worker").exists()
    (folder / f"{host}-{os.getppid()}.worker").unlink()  # the other worker ended: the next trial takes all
    assert share_cores(tmp_path) == 8
    assert share_cores(tmp_path, requested=3) == 3 and torch.get_num_threads() == 3


def test_available_cores_follow_the_affinity() -> None:
    assert available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.bad_input
@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_threads_option_must_be_a_positive_integer(value: object) -> None:
    with pytest.raises(ConfigError, match="'threads' must be a positive integer"):
        StudySpec(name="x", objective="synthetic", search_space={}, threads=value)  # type: ignore[arg-type]
