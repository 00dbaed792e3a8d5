"""`tuner train best.yaml`: the exported configuration trains again and reproduces its trial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from conftest import REPO, TINY_OPTIONS

from tuner import StudySpec, export_best, run_study
from tuner.errors import ConfigError
from tuner.store.records import epochs_of
from tuner.train import DEFAULT_TOLERANCE, load_export, train_exported

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def exported(demo_corpus, tmp_path_factory):
    """A tiny pyannote study (2 trials x 2 epochs) and the export of its best trial."""
    work = tmp_path_factory.mktemp("train")
    spec = StudySpec(
        name="tiny_train",
        objective="pyannote_segmentation",
        search_space=str(REPO / "search_spaces" / "pyannote_scratch.yaml"),
        data=str(demo_corpus),
        n_trials=2,
        max_epochs=2,
        fixed={"batch_size": 8},
        options=TINY_OPTIONS,
        trainer={"limit_train_batches": 4},
    )
    url = f"sqlite:///{work / 'tuner.db'}"
    run_study(spec, url, workdir=work, show_progress=False)
    export_best("tiny_train", work / "best.yaml", url)
    best = optuna.load_study(study_name="tiny_train", storage=url).best_trial
    return work, work / "best.yaml", best


def test_train_reproduces_the_exported_trial(exported):
    work, path, best = exported
    result = train_exported(path, out_dir=work / "run", workdir=work)
    export = yaml.safe_load(path.read_text())
    assert result.max_epochs == export["trained_on"]["max_epochs"] == 2
    assert result.seed == best.user_attrs["seed"] and result.config == best.user_attrs["config"]
    check = result.reproduction
    assert check.comparable and check.matches, check
    assert check.epoch + 1 == export["metric"]["epoch"] and export["metric"]["epochs_counted_from"] == 1
    assert check.exported == pytest.approx(export["metric"]["value"])
    assert check.difference <= DEFAULT_TOLERANCE
    # every epoch, every component, as the trial recorded it (same seed, same CPU: identical here)
    for epoch, record in result.fit.history.items():
        stored = epochs_of(best)[epoch]
        for key in ("DER", "Confusion", "FalseAlarm", "Miss", "loss/train", "loss/val", "lr"):
            assert record[key] == pytest.approx(stored[key], abs=DEFAULT_TOLERANCE), (epoch, key)

    # the final checkpoint is a pyannote model: Model.from_pretrained (and `tuner run --pretrained`) read it
    from tuner.objectives.pyannote import load_pretrained_segmentation

    assert result.checkpoint == work / "run" / "final.ckpt" and result.checkpoint.is_file()
    model = load_pretrained_segmentation(result.checkpoint)
    checkpoint = torch.load(result.checkpoint, map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 2
    assert type(model).__name__ == "PyanNet"
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, checkpoint["state_dict"][name]), name

    metrics = json.loads(result.metrics_file.read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]  # counted from 1, as the log and the tables count
    assert metrics["best_epoch"] == result.best_epoch + 1
    assert metrics["export"]["path"] == str(path) and metrics["export"]["content"]["trial"] == best.number
    assert metrics["reproduction"]["matches"] is True and metrics["checkpoint"] == str(result.checkpoint)
    assert metrics["config"] == best.user_attrs["config"] and metrics["seed"] == best.user_attrs["seed"]


def test_cli_trains_in_a_fresh_process_and_reports(exported):
    """A new process (as a user runs it) reproduces the study's value too; default folder under --workdir."""
    work, path, best = exported
    env = {**os.environ, "PYANNOTE_METRICS_ENABLED": "false", "COLUMNS": "200"}
    result = subprocess.run(
        [str(BIN / "tuner"), "train", str(path), "--workdir", str(work)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = work / "train" / f"tiny_train-trial{best.number}"
    assert (out / "final.ckpt").is_file()
    assert "reproduced within tolerance 0.0001" in " ".join(result.stdout.split()) and "NOT" not in result.stdout
    assert "DER" in result.stdout and "exported" in result.stdout  # the per-epoch table
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reproduction"]["difference"] <= DEFAULT_TOLERANCE


def test_longer_cosine_training_is_not_compared(exported, tmp_path):
    """A cosine schedule over more epochs changes every rate after the first: not a reproduction."""
    work, path, _ = exported
    export = yaml.safe_load(path.read_text())
    export["params"]["schedule"] = "cosine"
    export["metric"]["epoch"] = 2  # the second epoch, counted from 1
    changed = tmp_path / "cosine.yaml"
    changed.write_text(yaml.safe_dump(export))
    result = train_exported(changed, max_epochs=3, out_dir=tmp_path / "out", workdir=work)
    assert sorted(result.fit.history) == [0, 1, 2]
    assert result.reproduction.comparable is False and result.reproduction.matches is None
    assert "cosine schedule spans 3 epochs here and 2 in the trial" in result.reproduction.reason
    assert (tmp_path / "out" / "final.ckpt").is_file()


def _broken(tmp_path, path, change) -> Path:
    export = yaml.safe_load(path.read_text())
    change(export)
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(export))
    return broken


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda e: e["trained_on"].pop("seed"), r"missing key 'trained_on.seed'"),
        (lambda e: e.pop("params"), r"missing key 'params'"),
        (
            lambda e: e.update(objective="pyannote_segmentaton"),
            r"key 'objective': unknown objective 'pyannote_segmentaton' \(did you mean 'pyannote_segmentation'\?\)",
        ),
        (lambda e: e.update(fixed=[1, 2]), r"key 'fixed' must be a mapping"),
        (lambda e: e["trained_on"].update(max_epochs="two"), r"key 'trained_on.max_epochs' must be int"),
        (lambda e: e["params"].update(optimizer="SGD"), r"key 'optimizer': unknown value 'SGD'"),
        (lambda e: e["params"].update(momentum=0.9), r"unknown key 'momentum'"),
        (
            lambda e: e["metric"].update(name="EER"),
            r"key 'metric.name' is 'EER' but objective 'pyannote_segmentation' reports 'DER'",
        ),
    ],
)
def test_broken_export_names_the_file_and_key(exported, tmp_path, change, expected):
    work, path, _ = exported
    broken = _broken(tmp_path, path, change)
    with pytest.raises(ConfigError, match=rf"^{broken}: .*{expected}"):
        train_exported(broken, out_dir=tmp_path / "out", workdir=work)
    assert not (tmp_path / "out" / "final.ckpt").exists()


@pytest.mark.bad_input
def test_unreadable_exports(tmp_path):
    with pytest.raises(ConfigError, match=r"export file not found: .*nothing.yaml"):
        load_export(tmp_path / "nothing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{bad}:\d+: invalid YAML"):
        load_export(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"not an export of `tuner export`"):
        load_export(bad)


@pytest.mark.bad_input
def test_cli_broken_export_is_one_line_with_status_2(tmp_path):
    bad = tmp_path / "best.yaml"
    bad.write_text("study: x\nobjective: pyannote_segmentation\n")
    env = {**os.environ, "PYANNOTE_METRICS_ENABLED": "false"}
    result = subprocess.run(
        [str(BIN / "tuner"), "train", str(bad)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert f"error: {bad}: missing key 'trial'" in result.stderr and "Traceback" not in result.stderr


def test_wavlm_export_reproduces_too(tmp_path_factory):
    """Another objective through the same path: every epoch record of a WavLM SV trial comes back."""
    from test_wavlm_sv import TINY_SV_OPTIONS

    from tuner.data.demo import ensure_verification_corpus

    work = tmp_path_factory.mktemp("train_sv")
    corpus = ensure_verification_corpus(work / "verification", seed=0, utterances_per_speaker=4, n_dev_trials=40)
    spec = StudySpec(
        name="sv_train",
        objective="wavlm_sv",
        data=str(corpus),
        search_space=str(REPO / "search_spaces" / "wavlm_sv.yaml"),
        n_trials=1,
        max_epochs=2,
        fixed={"batch_size": 8, "loss": "aam"},
        options=TINY_SV_OPTIONS,
        trainer={"limit_train_batches": 2},
    )
    url = f"sqlite:///{work / 'tuner.db'}"
    run_study(spec, url, workdir=work, show_progress=False)
    export_best("sv_train", work / "best.yaml", url)
    best = optuna.load_study(study_name="sv_train", storage=url).best_trial
    result = train_exported(work / "best.yaml", out_dir=work / "run", workdir=work)
    assert result.reproduction.matches, result.reproduction
    for epoch, record in result.fit.history.items():
        stored = {k: v for k, v in epochs_of(best)[epoch].items() if k != "epoch"}
        assert {k: v for k, v in record.items() if k != "seconds"} == pytest.approx(
            {k: v for k, v in stored.items() if k != "seconds"}, abs=DEFAULT_TOLERANCE
        )
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert {name.split(".")[0] for name in state} >= {"upstream", "featurizer", "head"}  # WavLM, layer weights, ECAPA
