"""The pyannote objective end to end: real PyanNet, real SpeakerDiarization task, real training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import changed, fit_capturing

from tuner.runner import prepare_objective
from tuner.training.fit import fit


def test_tiny_trial_end_to_end_records_der_and_components(make_spec):
    objective, space = prepare_objective(make_spec())
    config = space.config_from({"optimizer": "AdamW", "lr": 3e-3, "schedule": "cosine", "batch_size": 8})
    result = fit(objective, config, seed=0, max_epochs=2, trainer_options={"limit_train_batches": 4})
    assert sorted(result.history) == [0, 1]
    for record in result.history.values():
        for key in ("DER", "Confusion", "FalseAlarm", "Miss", "loss/train", "loss/val", "lr"):
            assert key in record and math.isfinite(record[key]), key
        # pyannote's DER is the sum of its components
        assert record["DER"] == pytest.approx(record["Confusion"] + record["FalseAlarm"] + record["Miss"], abs=1e-4)
    # the cosine schedule really anneals the learning rate over the trial's epochs
    assert result.history[0]["lr"] == pytest.approx(3e-3)
    assert result.history[1]["lr"] == pytest.approx(3e-3 * 0.5)
    assert result.best_epoch in (0, 1)
    assert result.info["trainable_parameters"] == result.info["parameters"] > 0


@pytest.mark.parametrize("optimizer", ["Adam", "AdamW", "RAdam", "NAdam"])
def test_trial_trains_with_the_requested_optimizer(make_spec, optimizer):
    import lightning.pytorch as pl

    objective, space = prepare_objective(make_spec())
    seen = {}

    class Spy(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["optimizer"] = type(trainer.optimizers[0]).__name__
            seen["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
            seen["weight_decay"] = trainer.optimizers[0].param_groups[0]["weight_decay"]
            seen["batch"] = trainer.train_dataloader.batch_size

    config = space.config_from({"optimizer": optimizer, "lr": 2e-3, "weight_decay": 1e-4, "batch_size": 4})
    fit(
        objective,
        config,
        seed=0,
        max_epochs=1,
        trainer_options={"limit_train_batches": 1, "limit_val_batches": 1},
        callbacks=[Spy()],
    )
    assert seen == {"optimizer": optimizer, "lr": 2e-3, "weight_decay": 1e-4, "batch": 4}


def test_frozen_layers_do_not_change(make_spec):
    objective, space = prepare_objective(make_spec())
    # unfrozen_layers=1: the classifier (head) and the last block (linear) train; lstm and sincnet are frozen
    _result, module, before = fit_capturing(
        objective, space.config_from({"unfrozen_layers": 1, "lr": 1e-2}), trainer={"limit_train_batches": 3}
    )[:3]
    assert not any(changed(before, module, "sincnet")), "sincnet is frozen but changed"
    assert not any(changed(before, module, "lstm")), "lstm is frozen but changed"
    assert all(changed(before, module, "linear")), "linear is unfrozen but did not change"
    assert all(changed(before, module, "classifier")), "the classifier head must always train"
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == {n for n in before if n.startswith(("linear", "classifier"))}


def test_zero_unfrozen_layers_trains_only_the_head(make_spec):
    objective, space = prepare_objective(make_spec())
    result, module, before = fit_capturing(
        objective, space.config_from({"unfrozen_layers": 0, "lr": 1e-2}), trainer={"limit_train_batches": 3}
    )[:3]
    for prefix in ("sincnet", "lstm", "linear"):
        assert not any(changed(before, module, prefix)), f"{prefix} is frozen but changed"
    assert all(changed(before, module, "classifier"))
    assert result.info["trainable_parameters"] == sum(
        p.numel() for n, p in module.named_parameters() if n.startswith("classifier")
    )


@pytest.mark.bad_input
def test_too_many_unfrozen_layers_is_a_clear_error(make_spec):
    from tuner.errors import ConfigError

    objective, space = prepare_objective(make_spec())
    with pytest.raises(ConfigError, match=r"unfrozen_layers=7 .* 3 freezable blocks \(sincnet, lstm, linear\)"):
        fit(
            objective,
            space.config_from({"unfrozen_layers": 7}),
            seed=0,
            max_epochs=1,
            trainer_options={"limit_train_batches": 1},
        )


@pytest.mark.parametrize("layout", ["ckpt", "pytorch_model.bin", "directory"])
def test_pretrained_round_trip(make_spec, tmp_path: Path, layout: str):
    """Save a trained checkpoint; load it through the objective's --pretrained: same weights."""
    objective, space = prepare_objective(make_spec())
    _, trained, _, _ = fit_capturing(objective, space.config_from({"lr": 1e-2}), trainer={"limit_train_batches": 3})
    trainer = trained.trainer
    path = {
        "ckpt": tmp_path / "model.ckpt",
        "pytorch_model.bin": tmp_path / "pytorch_model.bin",
        "directory": tmp_path / "pytorch_model.bin",
    }[layout]
    trainer.save_checkpoint(path)
    source = tmp_path if layout == "directory" else path

    reloaded, reloaded_space = prepare_objective(make_spec(pretrained=str(source)))
    inputs = reloaded.build(
        reloaded_space.config_from({}), seed=123
    )  # another seed: weights must still come from the file
    model = inputs.module
    model.prepare_data()
    model.setup("validate")  # attaches the task: rebuilds the task-dependent classifier, keeps its weights
    expected = trained.state_dict()
    state = model.state_dict()
    assert set(expected) == set(state)
    for name, tensor in expected.items():
        assert torch.equal(tensor.cpu(), state[name].cpu()), name
    # the task follows the checkpoint's specifications (chunk duration, speakers per chunk)
    assert reloaded.describe()["pretrained"] == str(source)
    assert model.task.duration == trained.specifications.duration


@pytest.mark.bad_input
def test_pretrained_missing_path_is_a_clear_error(make_spec, tmp_path: Path):
    from tuner.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pretrained checkpoint not found: .*nothing.bin"):
        prepare_objective(make_spec(pretrained=str(tmp_path / "nothing.bin")))
