"""Worker processes sharing one study: an exact budget, killed and interrupted workers, nothing lost.

Every test here starts real ``tuner run`` processes (``python -m tuner``) and reads the store back.
Heartbeats are shortened (1 s, stale after 3 s) so that a killed worker's trial is retried quickly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import REPO, TINY_OPTIONS

from tuner.store.connect import open_storage
from tuner.store.records import CHECKPOINT as CHECKPOINT_ATTR
from tuner.store.records import epochs_of

State = optuna.trial.TrialState
pytestmark = pytest.mark.slow


@pytest.fixture
def postgres_url(postgres_server: Any) -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the session's server."""
    name = f"workers_{uuid.uuid4().hex[:12]}"
    yield postgres_server.new_database(name)
    postgres_server.drop_database(name)


def _study_file(folder: Path, body: str) -> Path:
    path = folder / "study.py"
    path.write_text(f"from tuner import StudySpec\n\nstudy = StudySpec({body})\n")
    return path


#: epochs of the trial a test kills or interrupts after its first checkpoint: enough (0.5-1 s each on 2 CPU
#: cores) that the signal, sent after a store poll every 0.5 s, finds it still running on a faster machine
SIGNALLED_EPOCHS = 16


def _pyannote_study(folder: Path, corpus: Path, n_trials: int = 1, max_epochs: int = 6) -> Path:
    """The tiny pyannote study (real model, real data) as a study file."""
    return _study_file(
        folder,
        (
            "name='w', objective='pyannote_segmentation', "
            f"search_space={str(REPO / 'search_spaces' / 'pyannote_scratch.yaml')!r}, "
            f"data={str(corpus)!r}, fixed={{'batch_size': 8}}, options={TINY_OPTIONS!r}, "
            f"trainer={{'limit_train_batches': 4}}, n_trials={n_trials}, max_epochs={max_epochs}"
        ),
    )


class Workers:
    """``tuner run`` processes on one store, each logging to its own file in ``folder``."""

    def __init__(self, folder: Path, url: str) -> None:
        self.folder, self.url = folder, url
        self.env = {
            **os.environ,
            "PYANNOTE_METRICS_ENABLED": "false",
            "TUNER_HEARTBEAT_INTERVAL": "1",
            "TUNER_HEARTBEAT_GRACE": "3",
            "TUNER_ARTIFACTS": str(folder / "artifacts"),
        }
        self.started: list[subprocess.Popen[bytes]] = []
        self._store: Any = None

    def start(self, study_file: Path, *command: str) -> subprocess.Popen[bytes]:
        """``tuner run STUDY_FILE`` (or ``tuner COMMAND...``) on the pool's store, as one more worker."""
        log = (self.folder / f"worker{len(self.started)}.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuner",
                *(command or ("run", str(study_file))),
                "--storage",
                self.url,
                "--workdir",
                str(self.folder),
            ],
            cwd=self.folder,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Ctrl-C as in a terminal, even when the tests themselves run in the background (`make test &`,
            # nohup): a process started with SIGINT ignored passes that on, and Python then keeps it ignored
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.started.append(process)
        return process

    def log(self, index: int) -> str:
        return (self.folder / f"worker{index}.log").read_text(errors="replace")

    def wait(self, process: subprocess.Popen[bytes], timeout: float = 600) -> int:
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(
                f"worker did not finish in {timeout} s:\n{self.log(self.started.index(process))}"
            ) from None

    def trials(self, name: str = "w") -> list[optuna.trial.FrozenTrial]:
        if self._store is None:  # one connection pool for all the polling (opening a store costs ~0.3 s)
            self._store = open_storage(self.url, heartbeat=False)
        return optuna.load_study(study_name=name, storage=self._store).get_trials()

    def wait_for(
        self,
        condition: Callable[[list[optuna.trial.FrozenTrial]], Any],
        process: subprocess.Popen[bytes],
        timeout: float = 300,
        name: str = "w",
    ) -> Any:
        """Poll the store until ``condition(trials)`` (of study ``name``) is truthy; fail if ``process`` ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(
                    f"worker exited ({process.returncode}) early:\n{self.log(self.started.index(process))}"
                )
            try:
                found = condition(self.trials(name))
            except KeyError:  # the study does not exist yet
                found = None
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"condition not met in {timeout} s:\n{self.log(self.started.index(process))}")

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def workers(tmp_path: Path, storage_url: str) -> Iterator[Workers]:
    pool = Workers(tmp_path, storage_url)
    yield pool
    pool.stop_all()


def _checkpointed(trials: list[optuna.trial.FrozenTrial]) -> dict[str, Any] | None:
    """The first trial's checkpoint record once it has one (an epoch finished and was saved)."""
    return trials[0].system_attrs.get(CHECKPOINT_ATTR) if trials and trials[0].state == State.RUNNING else None


def _assert_resumed(original: optuna.trial.FrozenTrial, retry: optuna.trial.FrozenTrial, max_epochs: int) -> int:
    """``retry`` continued ``original`` after its checkpointed epoch; returns that epoch."""
    resumed = retry.user_attrs["resumed_from"]
    epoch = resumed["epoch"]
    assert resumed["trial"] == original.number and retry.system_attrs["failed_trial"] == original.number
    assert 0 <= epoch < max_epochs - 1
    assert retry.params == original.params and retry.user_attrs["seed"] == original.user_attrs["seed"]
    records = epochs_of(retry)
    assert [r["epoch"] for r in records] == list(range(max_epochs))  # every epoch once, none restarted
    for e in range(epoch + 1):  # the epochs before the interruption were not run again
        assert records[e] == epochs_of(original)[e]
    assert sorted(retry.intermediate_values) == list(range(max_epochs))
    assert retry.user_attrs["epochs_run"] == max_epochs
    return epoch


@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)  # the many-machines store
def test_a_killed_workers_trial_is_retried_and_resumes_after_its_last_epoch(
    workers: Workers, demo_corpus: Path
) -> None:
    study_file = _pyannote_study(workers.folder, demo_corpus, n_trials=1, max_epochs=SIGNALLED_EPOCHS)
    first = workers.start(study_file)
    workers.wait_for(_checkpointed, first)
    first.send_signal(signal.SIGKILL)  # no chance to clean up: its trial stays RUNNING, its heartbeat stops
    first.wait()
    assert workers.trials()[0].state == State.RUNNING

    second = workers.start(study_file)  # waits for the heartbeat to go stale, then retries the trial
    assert workers.wait(second) == 0, workers.log(1)
    killed, retry = workers.trials()
    assert (killed.state, retry.state) == (State.FAIL, State.COMPLETE)
    epoch = _assert_resumed(killed, retry, max_epochs=SIGNALLED_EPOCHS)
    assert f"trial 1 resumes trial 0 after epoch {epoch + 1}" in workers.log(1)
    # the checkpoint of the retried (best) trial stays, listed as its artifact; the killed one's is gone
    kept = retry.system_attrs[CHECKPOINT_ATTR]["artifact_id"]
    assert sorted(p.name for p in (workers.folder / "artifacts").iterdir()) == [kept]
    assert f"artifacts:{kept}" in retry.system_attrs


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)  # the one-machine store
def test_ctrl_c_ends_the_trial_cleanly_and_the_next_run_resumes_it(workers: Workers, demo_corpus: Path) -> None:
    study_file = _pyannote_study(workers.folder, demo_corpus, n_trials=1, max_epochs=SIGNALLED_EPOCHS)
    first = workers.start(study_file)
    workers.wait_for(_checkpointed, first)
    first.send_signal(signal.SIGINT)
    assert workers.wait(first, timeout=120) == 130
    log = workers.log(0)
    assert "trial 0 interrupted: marked failed and re-queued as trial 1" in log and "Traceback" not in log
    assert f"no trials added): tuner run {study_file} --storage" in log  # the exact command that resumes
    interrupted, queued = workers.trials()
    assert interrupted.state == State.FAIL and "interrupted (Ctrl-C)" in interrupted.user_attrs["fail_reason"]
    assert queued.state == State.WAITING

    second = workers.start(study_file)  # the same command again: the study goes on where it stopped
    assert workers.wait(second) == 0, workers.log(1)
    interrupted, retry = workers.trials()
    assert retry.state == State.COMPLETE
    _assert_resumed(interrupted, retry, max_epochs=SIGNALLED_EPOCHS)


def test_four_workers_run_an_exact_budget_of_forty_trials(tmp_path: Path, postgres_url: str) -> None:
    pool = Workers(tmp_path, postgres_url)
    study_file = _study_file(
        tmp_path,
        (
            f"name='w', objective='synthetic', search_space={str(REPO / 'search_spaces' / 'synthetic.yaml')!r}, "
            "n_trials=40, max_epochs=2, options={'n_train': 256, 'n_val': 64}"
        ),
    )
    try:
        processes = [pool.start(study_file) for _ in range(4)]
        for index, process in enumerate(processes):
            assert pool.wait(process) == 0, pool.log(index)
    finally:
        pool.stop_all()
    trials = pool.trials()
    numbers = [t.number for t in trials]
    assert len(trials) == 40 and sorted(numbers) == list(range(40))  # no trial number twice, none beyond
    assert all(t.state in (State.COMPLETE, State.PRUNED) for t in trials)  # none lost, none left waiting
    assert all(t.user_attrs.get("epochs_run") for t in trials)
    ran_by_each = [pool.log(i).count(" complete: ") + pool.log(i).count(" pruned after epoch") for i in range(4)]
    assert sum(1 for n in ran_by_each if n) >= 2, ran_by_each  # the work was shared


def test_two_workers_confirm_exactly_k_by_n_runs_and_killed_ones_lose_nothing(tmp_path: Path, postgres_url: str):
    """A study file's confirmation (2 configurations x 2 seeds) run by two `tuner run` workers on PostgreSQL;
    both are killed during it; `tuner confirm` then completes it: every run once, no duplicate."""
    from tuner.confirm import confirmation_name
    from tuner.store.records import superseded_numbers

    pool = Workers(tmp_path, postgres_url)
    study_file = _study_file(
        tmp_path,
        (
            f"name='w', objective='synthetic', search_space={str(REPO / 'search_spaces' / 'synthetic.yaml')!r}, "
            "n_trials=4, max_epochs=3, options={'n_train': 256, 'n_val': 64, 'sleep_per_epoch': 0.4}, "
            "pruner=__import__('optuna').pruners.NopPruner(), confirm={'top': 2, 'seeds': 2}"
        ),
    )
    companion = confirmation_name("w")
    try:
        first, second = pool.start(study_file), pool.start(study_file)
        pool.wait_for(lambda trials: any(t.state == State.RUNNING for t in trials), first, name=companion)
        for process in (first, second):
            process.send_signal(signal.SIGKILL)  # their runs stay RUNNING; their heartbeats stop
            process.wait()
        rerun = pool.start(study_file, "confirm", "w", "--top", "2", "--seeds", "2")
        assert pool.wait(rerun) == 0, pool.log(2)
    finally:
        pool.stop_all()
    runs = pool.trials(companion)
    kept = [t for t in runs if t.number not in superseded_numbers(runs)]
    pairs = [(t.user_attrs["confirms"]["configuration"], t.user_attrs["seed"]) for t in kept]
    assert superseded_numbers(runs)  # a killed worker's run was retried by the rerun
    assert len(kept) == 4 and len(set(pairs)) == 4  # K x N, each configuration and seed once
    assert all(t.state == State.COMPLETE for t in kept)
    assert len({seed for _, seed in pairs}) == 2 and len({config for config, _ in pairs}) == 2
    assert "confirmed ranking" in pool.log(2) and len(pool.trials()) == 4  # the search's budget untouched
