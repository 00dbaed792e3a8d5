"""Checkpoints and exports on a disk that fails: written whole or not at all, a full or read-only folder is one line
and the trial resumes after it, a damaged checkpoint makes its trial start again, and the budget stays exact.

The disk is made to fail without root: tuner's own chunk writer (:func:`tuner.store.files._copy`) is replaced by
one that writes part of the file, then raises the ``OSError`` a full (or read-only, over-quota, foreign) file
system raises. A checkpoint is damaged by truncating or overwriting its file between two runs.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import REPO

from tuner import StudySpec
from tuner.cli import main
from tuner.errors import ArtifactWriteError, DataError
from tuner.runner import run_study
from tuner.store import files
from tuner.store.artifacts import open_artifact_store
from tuner.store.queue import MAX_RETRY
from tuner.store.records import CHECKPOINT, StudyRecord, TrialRecord, superseded_numbers

State = optuna.trial.TrialState
pytestmark = pytest.mark.bad_input

EPOCHS = 3
SPEC = {
    "name": "faults",
    "objective": "synthetic",
    "search_space": str(REPO / "search_spaces" / "synthetic.yaml"),
    "data": None,
    "max_epochs": EPOCHS,
    "options": {"n_train": 256, "n_val": 64},
}


def _study_file(folder: Path, n_trials: int) -> Path:
    path = folder / "study.py"
    path.write_text(
        "import optuna\nfrom tuner import StudySpec\n\n"
        f"study = StudySpec(**{SPEC!r}, n_trials={n_trials}, pruner=optuna.pruners.NopPruner())\n"
    )
    return path


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tuner.db'}"


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=SPEC["name"], storage=url).get_trials()


def _assert_exact_budget(trials: list[optuna.trial.FrozenTrial], n_trials: int) -> list[optuna.trial.FrozenTrial]:
    """Every trial a retry did not replace completed, ``n_trials`` of them, each with every epoch; returns them."""
    counted = [t for t in trials if t.number not in superseded_numbers(trials)]
    assert [t.state for t in counted] == [State.COMPLETE] * n_trials, [(t.number, t.state) for t in trials]
    assert all(t.user_attrs["epochs_run"] == EPOCHS for t in counted)
    return counted


def _assert_whole(folder: Path, trials: list[optuna.trial.FrozenTrial]) -> None:
    """The artifact folder holds no temporary or partial file: each file is a checkpoint a trial records, whole."""
    recorded = {r["artifact_id"]: r for t in trials if (r := t.system_attrs.get(CHECKPOINT))}
    for path in folder.iterdir():
        assert path.name in recorded, f"{path.name} is not a recorded checkpoint: {sorted(recorded)}"
        record = recorded[path.name]
        assert path.stat().st_size == record["bytes"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``fill(after=n, code=errno.ENOSPC)``: after ``n`` more files written whole, every file tuner writes gets
    4 kB in and fails with ``code``, as on a full (EROFS: read-only, ...) disk; ``fill(None)`` frees it."""
    real = files._copy
    state: dict[str, Any] = {"left": None, "code": errno.ENOSPC}

    def copy(source: Any, target: Any, digest: Any) -> int:
        if state["left"] is None or state["left"] > 0:
            if state["left"] is not None:
                state["left"] -= 1
            return real(source, target, digest)
        target.write(source.read(4096))  # part of the file is on the disk when it fills up
        target.flush()
        raise OSError(state["code"], os.strerror(state["code"]))

    monkeypatch.setattr(files, "_copy", copy)

    def fill(after: int | None = 0, code: int = errno.ENOSPC) -> None:
        state.update(left=after, code=code)

    return fill


# -- the writer ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENOSPC, "no space left on the device"),
        (errno.EROFS, "the file system is read-only"),
        (errno.EDQUOT, "the disk quota is exceeded"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_a_failed_write_leaves_the_old_file_and_nothing_else(tmp_path, full_disk, code, reason):
    target = tmp_path / "best.yaml"
    target.write_text("old\n")
    full_disk(0, code)
    with pytest.raises(ArtifactWriteError) as error:
        files.write_text(target, "new\n" * 10_000, what="the export", advice="Free space there")
    message = str(error.value)
    assert message.startswith(f"cannot write the export to {tmp_path}: {reason} (")
    assert " free of " in message and message.endswith("Free space there") and "\n" not in message
    assert [p.name for p in tmp_path.iterdir()] == ["best.yaml"] and target.read_text() == "old\n"


def test_a_written_file_is_whole_and_hashed(tmp_path):
    written = files.write_file(tmp_path / "a.bin", io.BytesIO(b"x" * 3_000_000), what="a", advice="")
    assert written.size == 3_000_000 and written.sha256 == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_a_file_written_by_a_library_is_renamed_into_place_whole_or_not_at_all(tmp_path):
    """What `tuner train` does with its final checkpoint: Lightning writes to the temporary path it is given."""
    import torch

    final = tmp_path / "final.ckpt"
    with files.atomic_path(final, what="the final checkpoint", advice="") as temporary:
        torch.save({"epoch": 1}, temporary)
    assert torch.load(final)["epoch"] == 1
    with (
        pytest.raises(
            ArtifactWriteError, match=r"^cannot write the final checkpoint to .*: the disk quota is exceeded"
        ),
        files.atomic_path(final, what="the final checkpoint", advice="") as temporary,
    ):
        temporary.write_bytes(b"PK\x03\x04 half a zip")
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    assert torch.load(final)["epoch"] == 1 and [p.name for p in tmp_path.iterdir()] == ["final.ckpt"]


# -- exports and `tuner train` ----------------------------------------------------------------------------------


def test_an_export_to_a_full_disk_is_one_line_and_leaves_the_previous_one(tmp_path, full_disk, capsys):
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    run_study(StudySpec(**SPEC, n_trials=1), url, workdir=tmp_path, show_progress=False, artifacts=tmp_path / "a")
    out = tmp_path / "exports" / "best.yaml"
    main(["export", "faults", "--storage", url, "--out", str(out)])
    before = out.read_bytes()
    full_disk(0)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "faults", "--storage", url, "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write the export of study 'faults' to {out.parent}: no space left on the")
    assert "Free space there, or give --out" in err and "\n" not in err
    assert [p.name for p in out.parent.iterdir()] == ["best.yaml"] and out.read_bytes() == before
    assert yaml.safe_load(before)["trial"] == 0


def test_a_folder_export_is_moved_into_place_whole(tmp_path):
    out = tmp_path / "exported"
    (out / "plda").mkdir(parents=True)
    (out / "README.md").write_text("a user's notes\n")
    (out / "plda" / "plda.npz").write_bytes(b"old")
    with files.atomic_folder(out, what="the export", advice="") as staging:
        (staging / "plda").mkdir()
        (staging / "plda" / "plda.npz").write_bytes(b"new")
        (staging / "config.yaml").write_text("pipeline: {}\n")
    assert (out / "plda" / "plda.npz").read_bytes() == b"new" and (out / "config.yaml").is_file()
    assert (out / "README.md").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["exported"]
    with (
        pytest.raises(ArtifactWriteError, match=r"cannot write the export to .*: no space left"),
        files.atomic_folder(out, what="the export", advice="") as staging,
    ):
        (staging / "config.yaml").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (out / "config.yaml").read_text() == "pipeline: {}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]


# -- a full artifact folder during a study ----------------------------------------------------------------------


class Cli:
    """``tuner run`` in this process on one SQLite store and artifact folder."""

    def __init__(self, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.folder, self.capsys, self.url = folder, capsys, _url(folder)

    def run(self, study_file: Path) -> tuple[int, str]:
        """The exit status and what went to stderr."""
        self.capsys.readouterr()
        args = ["run", str(study_file), "--storage", self.url, "--workdir", str(self.folder)]
        try:
            main([*args, "--artifacts", str(self.folder / "artifacts")])
            code = 0
        except SystemExit as exit_info:
            code = int(exit_info.code or 0)
        return code, self.capsys.readouterr().err


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None) -> Iterator[Cli]:
    yield Cli(tmp_path, capsys)


def test_opening_the_artifact_folder_removes_what_killed_writers_left(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    left = tmp_path / f".trial0-epoch001-abc.ckpt.{host}.{dead.stdout.strip()}.1234abcd.tmp"
    writing = tmp_path / f".trial1-epoch000-def.ckpt.{host}.{os.getpid()}.1234abcd.tmp"
    elsewhere = tmp_path / f".trial2-epoch000-ghi.ckpt.other-machine.{dead.stdout.strip()}.1234abcd.tmp"
    recent = tmp_path / f".trial4-epoch000-mno.ckpt.{host}.{dead.stdout.strip()}.1234abcd.tmp"
    for path in (left, writing, elsewhere, recent, tmp_path / "trial3-epoch002-jkl.ckpt"):
        path.write_bytes(b"part")
        if path != recent:  # another PID namespace's writer (a container sharing the host name) writes it now
            os.utime(path, (0, time.time() - files.SWEEP_AGE - 1))
    open_artifact_store(tmp_path)
    assert not left.exists() and writing.exists() and elsewhere.exists() and recent.exists()


@pytest.mark.parametrize(("code", "reason"), [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")])
def test_a_full_artifact_folder_stops_the_worker_in_one_line_and_the_rerun_resumes(
    tmp_path, full_disk, cli, code, reason
):
    study_file = _study_file(tmp_path, n_trials=2)
    folder = tmp_path / "artifacts"
    full_disk(after=1, code=code)  # the first epoch's checkpoint fits, the second's does not
    status, err = cli.run(study_file)
    assert status == 2, err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in err
    line = error_lines[0]
    assert line.startswith(f"error: cannot write the checkpoint of trial 0 after epoch 2 to {folder}: ")
    assert reason in line and " free of " in line and "point --artifacts" in line and "run the same command" in line
    trials = _trials(cli.url)
    assert [t.state for t in trials] == [State.FAIL, State.WAITING, State.WAITING]  # trial 1, and trial 0's retry
    assert trials[0].system_attrs[CHECKPOINT]["epoch"] == 0  # the first epoch's checkpoint is kept
    _assert_whole(folder, trials)  # and the second's 4 kB are not left behind

    full_disk(None)  # space freed: the same command resumes the trial after its first epoch
    status, err = cli.run(study_file)
    assert status == 0, err
    trials = _trials(cli.url)
    retry = _assert_exact_budget(trials, n_trials=2)[1]
    assert retry.number == 2 and retry.user_attrs["resumed_from"]["epoch"] == 0
    assert "trial 2 resumes trial 0 after epoch 1" in err


def test_a_folder_that_stays_full_never_makes_the_trial_fail_for_good(tmp_path, full_disk, cli):
    """A full folder is not the trial's fault: its retries are not counted against the limit of crashes."""
    study_file = _study_file(tmp_path, n_trials=1)
    full_disk(after=1)
    for _ in range(MAX_RETRY + 2):
        status, err = cli.run(study_file)
        assert status == 2 and "no space left on the device" in err, err
        full_disk(after=0)  # a retry resumes after epoch 1 and cannot write epoch 2's checkpoint either
    trials = _trials(cli.url)
    assert [t.state for t in trials] == [State.FAIL] * (MAX_RETRY + 2) + [State.WAITING]
    full_disk(None)
    status, err = cli.run(study_file)
    assert status == 0, err
    [done] = _assert_exact_budget(_trials(cli.url), n_trials=1)
    assert done.user_attrs["resumed_from"]["epoch"] == 0 and done.user_attrs["retries_not_counted"] == MAX_RETRY + 2
    _assert_whole(tmp_path / "artifacts", _trials(cli.url))


# -- a damaged checkpoint on resume -----------------------------------------------------------------------------


@pytest.fixture
def stopped_after_first_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[int], Path]:
    """``stop(n_trials)``: a study whose trial 0 stops (a study-stopping error) in its second epoch, after its first
    epoch's checkpoint; returns that checkpoint's file."""
    from tuner.objectives.synthetic import RegressionModule

    def stop(n_trials: int) -> Path:
        start = RegressionModule.on_train_epoch_start

        def lose_the_disk(self: RegressionModule) -> None:
            if self.current_epoch == 1:
                raise DataError("/data/corpus/train/0042.wav: not found (was the disk unmounted?)")
            start(self)

        with monkeypatch.context() as patch:
            patch.setattr(RegressionModule, "on_train_epoch_start", lose_the_disk)
            with pytest.raises(DataError):
                _run(tmp_path, n_trials)
        stopped, *waiting = _trials(_url(tmp_path))
        assert [stopped.state, *(t.state for t in waiting)] == [State.FAIL] + [State.WAITING] * n_trials
        return tmp_path / "artifacts" / stopped.system_attrs[CHECKPOINT]["artifact_id"]

    return stop


def _run(tmp_path: Path, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    spec = StudySpec(**SPEC, n_trials=n_trials, pruner=optuna.pruners.NopPruner())
    run_study(spec, _url(tmp_path), workdir=tmp_path, show_progress=False, artifacts=tmp_path / "artifacts")
    return _trials(_url(tmp_path))


def _truncate_to(size: int) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        assert path.stat().st_size > size
        with path.open("r+b") as file:
            file.truncate(size)

    return damage


def _truncate_by(n: int) -> Callable[[Path], None]:
    return lambda path: _truncate_to(path.stat().st_size - n)(path)


def _overwrite_inside(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # zeroes inside a tensor: the file still loads
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_truncate_to(40_000), "is truncated (40,000 of the "),
        (_truncate_by(100), "is truncated ("),
        (_overwrite_inside, "was changed after it was written (its SHA-256 is not the one recorded)"),
        (lambda path: path.unlink(), "is not in this worker's artifact folder"),
    ],
    ids=["truncated-to-40kB", "truncated-by-100-bytes", "bytes-changed", "missing"],
)
def test_a_damaged_checkpoint_restarts_its_trial_from_the_first_epoch(
    tmp_path, stopped_after_first_epoch, caplog, damage, problem
):
    checkpoint = stopped_after_first_epoch(1)  # a 1-trial study: the retry is its only chance to complete
    damage(checkpoint)
    with caplog.at_level(logging.INFO, logger="tuner"):
        trials = _run(tmp_path, 1)
    [done] = _assert_exact_budget(trials, n_trials=1)
    assert done.number == 1
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "checkpoint" in r.message)
    assert warning.startswith(f"trial 1: checkpoint {checkpoint} (after epoch 1) {problem}")
    assert warning.endswith("the trial restarts from epoch 1")
    assert "trial 1 epoch 1/3" in caplog.text  # it ran its first epoch again
    resumed = done.user_attrs["resumed_from"]
    assert resumed["trial"] == 0 and resumed["epoch"] is None
    assert resumed["discarded"]["artifact_id"] == checkpoint.name and problem in resumed["discarded"]["problem"]
    summary = TrialRecord.of(done, StudyRecord.of(optuna.load_study(study_name="faults", storage=_url(tmp_path))))
    assert summary.retry_summary.startswith(f"retries trial 0 from its start (its checkpoint after epoch 1 {problem}")
    assert not checkpoint.exists()  # the damaged file is gone; the completed trial's checkpoint is whole
    _assert_whole(tmp_path / "artifacts", trials)


@pytest.mark.parametrize("whole", [True, False], ids=["loads", "truncated"])
def test_an_older_record_without_a_hash_resumes_if_its_checkpoint_loads_else_restarts(
    tmp_path, stopped_after_first_epoch, whole
):
    from tuner.store import optuna_internals
    from tuner.training.checkpoint import checkpoint_problem

    checkpoint = stopped_after_first_epoch(2)
    study = optuna.load_study(study_name="faults", storage=_url(tmp_path))
    waiting = study.get_trials()[2]  # trial 0's retry (trial 1 is the budget's second)
    record = dict(waiting.system_attrs[CHECKPOINT])
    old = {k: v for k, v in record.items() if k not in ("sha256", "bytes")}  # as tuner wrote it before
    optuna_internals.set_trial_system_attr(study, waiting, CHECKPOINT, old)
    if not whole:
        _truncate_by(100)(checkpoint)
    problem = checkpoint_problem(checkpoint, old)
    assert problem is None if whole else problem.startswith("cannot be loaded (")
    trials = _run(tmp_path, 2)
    retry = _assert_exact_budget(trials, n_trials=2)[1]
    resumed = retry.user_attrs["resumed_from"]
    assert retry.number == 2 and resumed["epoch"] == (0 if whole else None)
    assert ("discarded" not in resumed) if whole else resumed["discarded"]["problem"] == problem
