"""Mixed precision and gradient accumulation: study fields and `tuner run` / `tuner train` flags, validated before
any training, applied by the one Trainer factory, recorded in the study and its trials, exported, and reused."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml

from tuner import StudySpec, export_best, run_study
from tuner.errors import ConfigError
from tuner.store.connect import load_existing_study
from tuner.store.records import StudyRecord, TrialRecord

#: 256 training samples in batches of 64: 4 batches an epoch
SPACE = {"optimizer": "Adam", "lr": 3e-3, "batch_size": 64, "schedule": {"choices": ["constant", "cosine"]}}


def _spec(**overrides: Any) -> StudySpec:
    values: dict[str, Any] = {
        "name": "mixed",
        "objective": "synthetic",
        "search_space": SPACE,
        "data": None,
        "n_trials": 1,
        "max_epochs": 2,
        "options": {"n_train": 256, "n_val": 128},
        "warm_start": [{"schedule": "constant"}],
    }
    values.update(overrides)
    return StudySpec(**values)


class _Watch(pl.Callback):
    """The optimizer steps after each training epoch, and the dtype of the model's output in training and in
    validation (bfloat16 under bf16 autocast)."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.dtypes: dict[str, set[torch.dtype]] = {"train": set(), "val": set()}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        def record(module: Any, inputs: Any, output: torch.Tensor) -> None:
            self.dtypes["train" if pl_module.training else "val"].add(output.dtype)

        pl_module.model.head.register_forward_hook(record)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.steps.append(trainer.global_step)


def _fit(tmp_path: Path, **settings: Any) -> tuple[Any, _Watch]:
    from tuner.runner import prepare_objective
    from tuner.training.fit import fit

    objective, space = prepare_objective(_spec(), tmp_path)
    watch = _Watch()
    result = fit(objective, space.config_from({"schedule": "constant"}), 0, 2, callbacks=[watch], device="cpu",
                 **settings)  # fmt: skip
    return result, watch


@pytest.mark.slow
def test_accumulation_halves_the_optimizer_steps_and_bf16_autocasts_training_and_validation(tmp_path):
    plain, plain_watch = _fit(tmp_path)
    mixed, mixed_watch = _fit(tmp_path, precision="bf16-mixed", accumulate_grad_batches=2)

    assert plain_watch.steps == [4, 8]  # 4 batches an epoch, a step each
    assert mixed_watch.steps == [2, 4]  # a step every 2 batches
    assert plain_watch.dtypes == {"train": {torch.float32}, "val": {torch.float32}}
    assert mixed_watch.dtypes == {"train": {torch.bfloat16}, "val": {torch.bfloat16}}
    assert (plain.info["precision"], plain.info["accumulate_grad_batches"]) == ("32-true", 1)
    assert (mixed.info["precision"], mixed.info["accumulate_grad_batches"]) == ("bf16-mixed", 2)
    assert all(torch.isfinite(torch.tensor(e["mse"])) for e in mixed.history.values())


def test_validation_runs_in_the_given_precision_without_accumulation(tmp_path, monkeypatch):
    from tuner.runner import prepare_objective
    from tuner.training import fit as fit_module

    made: list[pl.Trainer] = []
    real = fit_module.make_trainer

    def spy(*args: Any, **kwargs: Any) -> pl.Trainer:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(fit_module, "make_trainer", spy)
    objective, space = prepare_objective(_spec(accumulate_grad_batches=2), tmp_path)
    metrics = fit_module.validate(objective, space.config_from({}), 0, {}, "cpu", precision="bf16-mixed")
    assert (made[0].precision, made[0].accumulate_grad_batches) == ("bf16-mixed", 1)
    assert metrics["mse"] > 0


@pytest.mark.slow
@pytest.mark.usefixtures("restore_logging")
def test_a_study_records_and_exports_them_and_tuner_train_reuses_or_overrides_them(tmp_path):
    from tuner.cli import main
    from tuner.train import train_exported

    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    run_study(_spec(precision="bf16-mixed", accumulate_grad_batches=2), url, workdir=tmp_path, device="cpu",
              show_progress=False, artifacts=tmp_path / "artifacts")  # fmt: skip

    study = load_existing_study("mixed", url)
    record = StudyRecord.of(study)
    assert (record.precision, record.accumulate_grad_batches) == ("bf16-mixed", 2)
    assert "precision" not in record.trainer
    (trial,) = [TrialRecord.of(t, record) for t in study.trials]
    assert trial.state == "COMPLETE"
    assert (trial.precision, trial.accumulate_grad_batches) == ("bf16-mixed", 2)

    export_best("mixed", tmp_path / "best.yaml", url)
    trained_on = yaml.safe_load((tmp_path / "best.yaml").read_text())["trained_on"]
    assert trained_on["precision"] == "bf16-mixed"
    assert trained_on["accumulate_grad_batches"] == 2
    assert trained_on["effective_batch_size"] == 128  # batch 64 x 2

    again = train_exported(tmp_path / "best.yaml", out_dir=tmp_path / "again", workdir=tmp_path, device="cpu")
    assert (again.fit.info["precision"], again.fit.info["accumulate_grad_batches"]) == ("bf16-mixed", 2)
    assert again.reproduction.comparable and again.reproduction.matches, again.reproduction

    main(["train", str(tmp_path / "best.yaml"), "--out", str(tmp_path / "plain"), "--workdir", str(tmp_path),
          "--device", "cpu", "--precision", "32-true", "--accumulate-grad-batches", "1"])  # fmt: skip
    metrics = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert (metrics["model"]["precision"], metrics["model"]["accumulate_grad_batches"]) == ("32-true", 1)
    reproduction = metrics["reproduction"]
    assert reproduction["comparable"] is False and reproduction["matches"] is None
    assert "precision '32-true' instead of 'bf16-mixed'" in reproduction["reason"]
    assert "accumulate_grad_batches 1 instead of 2" in reproduction["reason"]


@pytest.mark.slow
@pytest.mark.usefixtures("restore_logging")
def test_tuner_run_flags_override_the_study_file_and_a_study_keeps_its_accumulation(tmp_path, capsys, monkeypatch):
    from tuner.cli import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "mixed.py"
    path.write_text(
        "from tuner import StudySpec\n"
        f"study = StudySpec(name='cli_mixed', objective='synthetic', search_space={SPACE!r}, data=None, n_trials=1,\n"
        "                  max_epochs=1, options={'n_train': 256, 'n_val': 128}, precision='32-true')\n"
    )
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    common = ["--storage", url, "--workdir", str(tmp_path), "--device", "cpu"]
    main(["run", str(path), *common, "--precision", "bf16-mixed", "--accumulate-grad-batches", "2"])
    study = load_existing_study("cli_mixed", url)
    record = StudyRecord.of(study)
    assert (record.precision, record.accumulate_grad_batches) == ("bf16-mixed", 2)
    assert TrialRecord.of(study.trials[0], record).accumulate_grad_batches == 2
    capsys.readouterr()

    with pytest.raises(SystemExit) as info:  # the trials' batch_size means 2 x batch_size: not another
        main(["run", str(path), *common, "--n-trials", "1", "--accumulate-grad-batches", "3"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "accumulate_grad_batches: stored 2, now 3 (its trials' batch_size means an effective batch of 2 x" in err
    assert "set accumulate_grad_batches=2" in err and "precision" not in err[err.index("error: ") :]
    assert len(load_existing_study("cli_mixed", url).trials) == 1


@pytest.mark.bad_input
def test_16_mixed_on_the_cpu_is_refused_before_any_training(tmp_path):
    from tuner.training.fit import make_trainer

    db = tmp_path / "tuner.db"
    with pytest.raises(ConfigError) as info:
        run_study(_spec(precision="16-mixed"), f"sqlite:///{db}", workdir=tmp_path, device="cpu", show_progress=False)
    message = str(info.value)
    assert message.startswith("study 'mixed': precision '16-mixed' cannot train on the CPU (device 'cpu')")
    assert "Use precision 'bf16-mixed' (or '32-true') on the CPU, or train on a GPU (--device cuda)" in message
    assert not db.exists()  # refused before the store is touched
    with pytest.raises(ConfigError, match="precision '16-mixed' cannot train on the CPU"):
        make_trainer("cpu", precision="16-mixed")  # the one Trainer factory refuses it too
    assert make_trainer("cpu", precision="bf16-mixed").precision == "bf16-mixed"


@pytest.mark.bad_input
def test_tuner_train_refuses_16_mixed_on_the_cpu_naming_the_export(tmp_path):
    from tuner.train import train_exported

    export = {
        "study": "mixed", "objective": "synthetic", "trial": 0, "params": {}, "fixed": {"batch_size": 64},
        "metric": {"name": "mse", "value": 0.5, "epoch": 0},
        "trained_on": {"data": None, "pretrained": None, "options": {"n_train": 256, "n_val": 128}, "trainer": {},
                       "precision": "16-mixed", "accumulate_grad_batches": 1, "max_epochs": 1, "seed": 0},
    }  # fmt: skip
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(export))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: precision '16-mixed' cannot train on the CPU"):
        train_exported(path, out_dir=tmp_path / "out", workdir=tmp_path, device="cpu")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"^tuner train: 'precision' must be one of 32-true, bf16-mixed, 16-mixed"):
        train_exported(path, out_dir=tmp_path / "out", workdir=tmp_path, device="cpu", precision="fp16")


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"precision": "fp16"}, "study 'mixed': 'precision' must be one of 32-true, bf16-mixed, 16-mixed"),
        ({"precision": "bf16-true"}, "'precision' must be one of 32-true, bf16-mixed, 16-mixed"),
        ({"accumulate_grad_batches": 0}, "study 'mixed': 'accumulate_grad_batches' must be an integer >= 1"),
        ({"accumulate_grad_batches": 1.5}, "'accumulate_grad_batches' must be an integer >= 1"),
        ({"accumulate_grad_batches": True}, "'accumulate_grad_batches' must be an integer >= 1"),
        ({"trainer": {"precision": "half"}}, "study 'mixed' trainer: 'precision' must be one of"),
        (
            {"precision": "bf16-mixed", "trainer": {"precision": "16-mixed"}},
            "precision is given twice, precision='bf16-mixed' and trainer['precision']='16-mixed'",
        ),
    ],
)
def test_a_bad_value_is_refused_naming_the_allowed_ones(overrides, expected):
    with pytest.raises(ConfigError) as info:
        _spec(**overrides)
    assert expected in str(info.value)


def test_trainer_arguments_of_an_older_study_become_the_fields():
    spec = _spec(trainer={"precision": "bf16", "accumulate_grad_batches": 4, "limit_train_batches": 2})
    assert (spec.precision, spec.accumulate_grad_batches) == ("bf16-mixed", 4)
    assert dict(spec.trainer) == {"limit_train_batches": 2}
    assert spec.override(precision="32-true").precision == "32-true"  # a flag overrides what was lifted
    record = StudyRecord.from_attrs("old", {"objective": "synthetic", "trainer": {"precision": "bf16-mixed"}})
    assert (record.precision, record.accumulate_grad_batches, dict(record.trainer)) == ("bf16-mixed", 1, {})


@pytest.mark.bad_input
@pytest.mark.usefixtures("restore_logging")
def test_the_flags_refuse_a_bad_value_listing_the_choices(tmp_path, capsys):
    from tuner.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", str(tmp_path / "none.py"), "--precision", "fp16"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "'fp16' is not one of '32-true', 'bf16-mixed', '16-mixed'" in err
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path / "best.yaml"), "--accumulate-grad-batches", "0"])
    assert "0 is not in the range x>=1" in capsys.readouterr().err


@pytest.mark.bad_input
def test_an_objective_that_trains_nothing_refuses_them(tmp_path):
    from tuner.runner import prepare_objective

    spec = StudySpec(name="pipe", objective="pyannote_pipeline", search_space={}, accumulate_grad_batches=2)
    with pytest.raises(ConfigError, match=r"objective 'pyannote_pipeline' trains nothing .* would change nothing"):
        prepare_objective(spec, tmp_path)


def test_pyannote_segmentation_trains_and_validates_in_bf16(make_spec, tmp_path):
    """pyannote matches speakers with SciPy, which refuses bfloat16: the model's scores leave it in float32."""
    from tuner.runner import prepare_objective
    from tuner.training.fit import fit

    objective, space = prepare_objective(make_spec(), tmp_path)
    config = space.config_from({"optimizer": "Adam", "lr": 1e-3, "schedule": "constant"})
    result = fit(
        objective, config, 0, 1, device="cpu", precision="bf16-mixed", trainer_options={"limit_train_batches": 2}
    )
    assert result.info["precision"] == "bf16-mixed" and 0.0 <= result.history[0]["DER"] < 2.0
