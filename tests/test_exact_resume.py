"""A trial resumed from its epoch-k checkpoint trains epochs k+1... exactly as the uninterrupted run does, for every
trained objective (tuner.training.random_state), and `tuner train` fails when it does not reproduce its trial.

Each objective's case runs it three times with one seed and a cosine schedule: uninterrupted for 3 epochs; stopped
right after the trial's own ``EpochCheckpoint`` wrote epoch k's checkpoint (an exception then: all a SIGKILL leaves
is that checkpoint); resumed from it in a fresh objective and Trainer, as a worker resumes a retried trial. Every
epoch's record (metric, components, losses, learning rate) and the final weights must be equal, bit for bit.
The pipeline objective trains nothing: a retried pipeline trial evaluates its configuration again from the start.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import numpy as np
import optuna
import pytest
import torch
import yaml
from conftest import REPO
from torch.utils.data import DataLoader

from tuner import StudySpec
from tuner.cli import NOT_REPRODUCED_STATUS, main
from tuner.data.loading import loader_settings
from tuner.errors import DataError
from tuner.export import export_best
from tuner.objectives.base import FitInputs, TrainedObjective
from tuner.objectives.synthetic import SyntheticRegression
from tuner.runner import prepare_objective, run_study
from tuner.search_space import TrialConfig
from tuner.store.artifacts import open_artifact_store
from tuner.store.records import epochs_of
from tuner.training.checkpoint import EpochCheckpoint
from tuner.training.fit import fit
from tuner.training.random_state import CHECKPOINT_KEY, capture_random_state, restore_random_state

EPOCHS = 3
#: AdamW with weight decay and a cosine schedule over the 3 epochs: the optimizer's and the schedule's states count
COSINE = {"optimizer": "AdamW", "schedule": "cosine", "weight_decay": 1e-4}

History = dict[int, dict[str, float]]
Weights = dict[str, torch.Tensor]


class _Killed(Exception):
    """What the interrupted run dies of, right after its checkpoint was written."""


class _KillAfter(pl.Callback):
    """Raise once epoch ``epoch``'s checkpoint is written (listed after the EpochCheckpoint)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise _Killed


class _FinalWeights(pl.Callback):
    def __init__(self) -> None:
        self.weights: Weights = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.weights = {name: tensor.detach().clone() for name, tensor in pl_module.state_dict().items()}


def _runs(
    spec: StudySpec | Callable[[], TrainedObjective],
    config: TrialConfig,
    tmp_path: Path,
    trainer: dict[str, Any],
    kill_after: int,
    **options: Any,
) -> tuple[tuple[History, Weights], tuple[History, Weights]]:
    """``(uninterrupted, resumed)``, each ``(history without timings, final weights)``, of the objective of ``spec``
    (or one that ``spec()`` makes); ``options``: of ``fit``."""

    def once(callbacks: list[pl.Callback], resume_from: Path | None = None) -> History:
        # a fresh objective each time, as a new worker makes it
        objective = prepare_objective(spec, workdir=tmp_path)[0] if isinstance(spec, StudySpec) else spec()
        assert isinstance(objective, TrainedObjective)
        result = fit(
            objective, config, seed=5, max_epochs=EPOCHS, trainer_options=trainer, callbacks=callbacks,
            resume_from=resume_from, device="cpu", **options,
        )  # fmt: skip
        return {epoch: {k: v for k, v in record.items() if k != "seconds"} for epoch, record in result.history.items()}

    whole = _FinalWeights()
    uninterrupted = once([whole])

    store = open_artifact_store(tmp_path / "artifacts")
    trial = optuna.create_study().ask()
    checkpoints = EpochCheckpoint(trial, store)
    with pytest.raises(_Killed):
        once([checkpoints, _KillAfter(kill_after)])
    retry = EpochCheckpoint(trial, store)  # the retry's: it finds the checkpoint the trial recorded
    try:
        assert retry.record is not None and retry.record["epoch"] == kill_after
        path = retry.resume_path()
        assert path is not None
        weights = _FinalWeights()
        resumed = once([weights], resume_from=path)
    finally:
        retry.close()
        checkpoints.close()
    return (uninterrupted, whole.weights), (resumed, weights.weights)


def _assert_same(uninterrupted: tuple[History, Weights], resumed: tuple[History, Weights]) -> None:
    (history, weights), (resumed_history, resumed_weights) = uninterrupted, resumed
    assert sorted(history) == sorted(resumed_history) == list(range(EPOCHS))
    for epoch in range(EPOCHS):
        assert resumed_history[epoch] == history[epoch], epoch  # exactly: every value, every epoch
    assert resumed_weights.keys() == weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(resumed_weights[name], tensor), name


def _synthetic(**overrides: Any) -> StudySpec:
    values: dict[str, Any] = {
        "name": "resume",
        "objective": "synthetic",
        "search_space": str(REPO / "search_spaces" / "synthetic.yaml"),
        "data": None,
        "options": {"n_train": 512, "n_val": 128},
    }
    return StudySpec(**{**values, **overrides})


def test_every_state_travels_in_a_checkpoint_that_still_loads_weights_only(tmp_path):
    """torch's, numpy's and Python's generators and a training DataLoader's come back as they were saved, from a
    checkpoint that ``torch.load(weights_only=True)`` reads (as ``tuner train``'s final.ckpt is read)."""
    generator = torch.Generator().manual_seed(1)
    loader = DataLoader(range(8), shuffle=True, generator=generator)
    trainer: Any = SimpleNamespace(
        train_dataloader=loader, val_dataloaders=None, fit_loop=SimpleNamespace(_data_fetcher=None)
    )

    def draws() -> tuple[Any, ...]:
        return (
            torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(), random.random(),
            torch.randint(100, (3,), generator=generator).tolist(),
        )  # fmt: skip

    np.random.randn()  # numpy holds a cached Gaussian: saved too
    torch.save({CHECKPOINT_KEY: capture_random_state(trainer)}, tmp_path / "states.ckpt")
    expected = draws()
    assert draws() != expected  # the generators moved on
    restore_random_state(trainer, torch.load(tmp_path / "states.ckpt", weights_only=True)[CHECKPOINT_KEY])
    assert draws() == expected


@pytest.mark.parametrize("kill_after", [0, 1])
def test_synthetic_resumes_exactly(tmp_path, kill_after):
    config = TrialConfig(lr=3e-3, batch_size=64, **COSINE)
    uninterrupted, resumed = _runs(_synthetic(), config, tmp_path, {"limit_train_batches": 5}, kill_after)
    _assert_same(uninterrupted, resumed)


def test_synthetic_resumes_exactly_with_accumulated_gradients(tmp_path):
    """An epoch of 5 batches with gradients accumulated over 2: the epoch's last step takes one batch."""
    config = TrialConfig(lr=3e-3, batch_size=64, **COSINE)
    trainer = {"limit_train_batches": 5}
    uninterrupted, resumed = _runs(_synthetic(), config, tmp_path, trainer, kill_after=0, accumulate_grad_batches=2)
    _assert_same(uninterrupted, resumed)


class _DropoutWithWorkers(SyntheticRegression):
    """The synthetic objective with dropout (drawn from torch's generator) and 2 persistent loader workers: each
    loader's first iterator draws from torch's generator once, at epoch 1 in an uninterrupted run, after the resume
    in a resumed one."""

    def build(self, config: TrialConfig, seed: int) -> FitInputs:
        inputs = super().build(config, seed)
        train, val = inputs.train_dataloaders, inputs.val_dataloaders
        assert train is not None and val is not None
        workers = loader_settings(2)
        inputs.train_dataloaders = DataLoader(
            train.dataset, batch_size=train.batch_size, shuffle=True, generator=train.generator, **workers
        )
        inputs.val_dataloaders = DataLoader(val.dataset, batch_size=val.batch_size, **workers)
        inputs.module.model.blocks[0].append(torch.nn.Dropout(0.3))
        return inputs


def test_dropout_and_persistent_loader_workers_resume_exactly(tmp_path):
    def objective() -> TrainedObjective:
        made = _DropoutWithWorkers(None, None, {"n_train": 512, "n_val": 128})
        made.setup()
        return made

    config = TrialConfig(lr=3e-3, batch_size=64, **COSINE)
    uninterrupted, resumed = _runs(objective, config, tmp_path, {"limit_train_batches": 5}, kill_after=0)
    _assert_same(uninterrupted, resumed)


def test_pyannote_segmentation_resumes_exactly(make_spec: Callable[..., StudySpec], tmp_path):
    """pyannote draws each epoch's chunks from its own per-epoch generator (create_rng_for_worker)."""
    config = TrialConfig(lr=1e-3, batch_size=8, **COSINE)
    uninterrupted, resumed = _runs(make_spec(), config, tmp_path, {"limit_train_batches": 4}, kill_after=0)
    _assert_same(uninterrupted, resumed)


def _shorter(spec: StudySpec) -> StudySpec:
    """Half-second crops and validation audio: a third of the time."""
    return spec.override(options={**spec.options, "crop_seconds": 0.5, "max_eval_seconds": 0.5})


def test_wavlm_sv_resumes_exactly(sv_spec: Callable[..., StudySpec], tmp_path):
    """Speaker-balanced batches (an epoch-seeded sampler), random crops (keyed draws), dropout in WavLM."""
    config = TrialConfig(lr=1e-3, batch_size=8, **COSINE, extra={"loss": "aam", "margin": 0.2, "scale": 30.0})
    uninterrupted, resumed = _runs(_shorter(sv_spec()), config, tmp_path, {"limit_train_batches": 2}, kill_after=0)
    _assert_same(uninterrupted, resumed)


def test_sepformer_separation_resumes_exactly(sep_spec: Callable[..., StudySpec], tmp_path):
    """A shuffled order from the DataLoader's generator (a state the checkpoint holds), random segments (keyed)."""
    spec = _shorter(sep_spec())
    config = TrialConfig(lr=1e-3, batch_size=2, **COSINE, extra={"clip": 5.0})
    uninterrupted, resumed = _runs(spec, config, tmp_path, {"limit_train_batches": 2}, kill_after=0)
    _assert_same(uninterrupted, resumed)


# -- through the runner and `tuner train` ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def stopped_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The issue's case: study ``stopped``'s trial stopped right after its epoch-1 checkpoint (its disk lost: the
    study stops), then the same command again, whose retry resumes it; and study ``whole``, the same trial
    uninterrupted. Returns the folder and the store."""
    work = tmp_path_factory.mktemp("stopped")
    url = f"sqlite:///{work / 'tuner.db'}"

    def spec(name: str) -> StudySpec:
        space = {**COSINE, "lr": 3e-3, "batch_size": 64}
        return _synthetic(name=name, n_trials=1, max_epochs=EPOCHS, search_space=space)

    run_study(spec("whole"), url, workdir=work, show_progress=False)
    write = EpochCheckpoint.on_train_epoch_end

    def lose_the_disk_after_epoch_1(self: EpochCheckpoint, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        write(self, trainer, module)
        if self.trial.number == 0 and trainer.current_epoch == 0:
            raise DataError("/data/corpus: gone (was the disk unmounted?)")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpochCheckpoint, "on_train_epoch_end", lose_the_disk_after_epoch_1)
        with pytest.raises(DataError):
            run_study(spec("stopped"), url, workdir=work, show_progress=False)
    run_study(spec("stopped"), url, workdir=work, show_progress=False)  # the same command again
    export_best("stopped", work / "best.yaml", url)
    return work, url


def test_a_trial_stopped_and_resumed_by_the_runner_trains_as_the_uninterrupted_one(stopped_study):
    _, url = stopped_study
    [whole] = optuna.load_study(study_name="whole", storage=url).trials
    stopped, retry = optuna.load_study(study_name="stopped", storage=url).trials
    assert stopped.state == optuna.trial.TrialState.FAIL and "gone" in stopped.user_attrs["fail_reason"]
    assert retry.user_attrs["resumed_from"]["epoch"] == 0 and retry.user_attrs["seed"] == whole.user_attrs["seed"]

    def records(trial: optuna.trial.FrozenTrial) -> list[dict[str, Any]]:
        return [{k: v for k, v in record.items() if k != "seconds"} for record in epochs_of(trial)]

    assert len(records(whole)) == EPOCHS and records(retry) == records(whole)  # every value of every epoch
    assert retry.value == whole.value


def test_tuner_train_reproduces_a_resumed_trial(stopped_study, tmp_path, capsys, restore_logging):
    work, _ = stopped_study
    main(["train", str(work / "best.yaml"), "--workdir", str(work), "--out", str(tmp_path)])  # exit 0: no SystemExit
    out = capsys.readouterr().out
    assert "reproduced within tolerance 0.0001" in " ".join(out.split()) and "NOT" not in out  # wrapped at 100


def test_tuner_train_exits_non_zero_saying_what_differed_unless_asked_to_report_only(
    stopped_study, tmp_path, capsys, restore_logging
):
    work, _ = stopped_study
    content = yaml.safe_load((work / "best.yaml").read_text())
    epoch, value = content["metric"]["epoch"], content["metric"]["value"]
    content["metric"]["value"] = value + 0.01  # the stored result, as a run that drifted would have left it
    content["metric"]["components"]["loss/val"] += 0.01
    export = tmp_path / "drifted.yaml"
    export.write_text(yaml.safe_dump(content))
    command = ["train", str(export), "--workdir", str(work), "--out", str(tmp_path / "train")]

    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == NOT_REPRODUCED_STATUS != 0
    captured = capsys.readouterr()
    assert "NOT reproduced within tolerance 0.0001" in " ".join(captured.out.split())  # the summary, as before
    line = captured.err.strip().splitlines()[-1]  # after the log: one line, saying what differed
    assert captured.err.count("error:") == 1
    assert line.startswith(f"error: stopped trial 1 not reproduced: mse at epoch {epoch} is {value:.6g} here and ")
    assert "> tolerance 0.0001" in line and "also loss/val" in line and "--report-only" in line

    main([*command, "--report-only"])  # reports the same, exits 0
    captured = capsys.readouterr()
    assert "NOT reproduced within tolerance 0.0001" in " ".join(captured.out.split()) and "error:" not in captured.err

    main([*command, "--tolerance", "0.02"])  # a tolerance wide enough: reproduced, exit 0
    assert "reproduced within tolerance 0.02" in " ".join(capsys.readouterr().out.split())
