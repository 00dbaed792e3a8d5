"""`tuner evaluate`: a study's best trial on the test split, with the code that validated it, beside the starting
model, for every trained objective (the pipeline's is in test_pipeline.py)."""

from __future__ import annotations

import shutil

import optuna
import pytest
from conftest import REPO

from tuner import StudySpec, run_study
from tuner.cli import main
from tuner.errors import ConfigError, DataError
from tuner.evaluate import evaluate_study
from tuner.store.records import StudyRecord, TrialRecord

pytestmark = pytest.mark.slow


def _study_then_evaluate(spec: StudySpec, tmp_path, **kwargs):
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    study = run_study(spec, url, workdir=tmp_path, show_progress=False, artifacts=tmp_path / "artifacts")
    result = evaluate_study(spec.name, url, workdir=tmp_path, artifacts=tmp_path / "artifacts", **kwargs)
    stored = StudyRecord.of(optuna.load_study(study_name=spec.name, storage=url))
    return study, result, stored


def _check(result, stored, metric, components, study, items):
    assert result["split"] == "test" and result["trial"] == study.best_trial.number
    assert set(result["best"]) == set(result["baseline"]) == {metric, *components} - {"loss/train"}
    assert result["checkpoint_epoch"] == study.best_trial.user_attrs["best_epoch"]  # the best epoch's weights
    assert stored.test == result
    # the paired interval: the difference of the two figures, over the test items scored by both models
    paired = result["paired"]
    assert paired["difference"] == pytest.approx(result["best"][metric] - result["baseline"][metric], abs=1e-6)
    assert paired["low"] <= paired["difference"] <= paired["high"]
    assert (paired["items"], paired["runs"]) == (items, 1)
    return paired


def test_segmentation_on_the_test_files(make_spec, tmp_path):
    from conftest import TINY_SIZES

    from tuner.data.demo import ensure_diarization_corpus

    corpus = ensure_diarization_corpus(tmp_path / "two_test_files", seed=0, **{**TINY_SIZES, "n_test": 2})
    study, result, stored = _study_then_evaluate(make_spec(n_trials=1, data=corpus), tmp_path)
    components = ("Confusion", "FalseAlarm", "Miss", "loss/train", "loss/val")
    paired = _check(result, stored, "DER", components, study, items=2)  # the corpus's 2 test files
    assert paired["weighted_by"] == "reference speech (frames)"
    assert result["baseline_label"] == "untrained model"
    # validation on the test subset, not the development one: other files, other figures
    last_epoch = TrialRecord.of(study.best_trial, stored).epochs[-1]
    assert result["best"]["DER"] != last_epoch["DER"]


def test_speaker_verification_on_the_test_trials(sv_spec, sv_corpus, tmp_path):
    study, result, stored = _study_then_evaluate(sv_spec(n_trials=1, max_epochs=1), tmp_path)
    trials = len((sv_corpus / "trials" / "test.txt").read_text().split("\n")) - 1
    paired = _check(result, stored, "EER", ("minDCF", "threshold", "loss/train"), study, items=trials)
    assert paired["statistic"] == "EER of the resampled trials"


def test_separation_on_the_test_mixtures(sep_spec, sep_corpus, tmp_path):
    study, result, stored = _study_then_evaluate(sep_spec(n_trials=1, max_epochs=1), tmp_path)
    mixtures = len((sep_corpus / "metadata" / "mixture_test_mix_both.csv").read_text().strip().split("\n")) - 1
    _check(result, stored, "SI-SNRi", ("SDRi", "SI-SNR", "SDR", "loss/train", "loss/val"), study, items=mixtures)


def test_the_cli_prints_the_figures_beside_the_starting_model(tmp_path, capsys, restore_logging):
    space = str(REPO / "search_spaces" / "synthetic.yaml")
    spec = StudySpec(name="syn", objective="synthetic", data=None, search_space=space,
                     options={"n_train": 128, "n_val": 64}, n_trials=1, max_epochs=2)  # fmt: skip
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    run_study(spec, url, workdir=tmp_path, show_progress=False, artifacts=tmp_path / "artifacts")
    main(["evaluate", "syn", "--storage", url, "--artifacts", str(tmp_path / "artifacts"), "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "study syn on its test split" in out and "trial 0 (checkpoint after epoch 2)" in out
    assert "untrained model" in out and "stored in study 'syn'" in out
    # the report's header and optuna-dashboard's study note show them
    from tuner.reports.markdown import report_markdown
    from tuner.reports.notes import study_note

    study = optuna.load_study(study_name="syn", storage=url)
    test = StudyRecord.of(study).test
    figure = f"{test['best'][StudyRecord.of(study).metric]:.4g}"
    header = next(line for line in report_markdown(study, url).splitlines() if "tuner evaluate" in line)
    assert "test split, trial 0 (checkpoint after epoch 2)" in header
    assert figure in header and "untrained model" in header
    assert "Evaluated with `tuner evaluate`: test split, trial 0" in study_note(study) and figure in study_note(study)


@pytest.mark.bad_input
def test_a_corpus_without_a_test_split_is_named(make_spec, corpus_copy, tmp_path):
    (corpus_copy / "test.txt").unlink()
    (corpus_copy / "database.yml").unlink()  # the pyannote folder layout, without its test split
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    run_study(make_spec(n_trials=1, max_epochs=1, data=str(corpus_copy)), url, workdir=tmp_path, show_progress=False,
              artifacts=tmp_path / "artifacts")  # fmt: skip
    with pytest.raises(DataError, match=r"no test subset \(no test uri list declared\)\. Evaluating a study needs"):
        evaluate_study("tiny", url, workdir=tmp_path, artifacts=tmp_path / "artifacts")


@pytest.mark.bad_input
def test_a_trial_without_a_kept_checkpoint_is_refused_saying_what_to_do(tmp_path):
    """tuner keeps the checkpoint of the best trial so far only: a worse trial has none to evaluate."""
    space = str(REPO / "search_spaces" / "synthetic.yaml")
    spec = StudySpec(name="syn", objective="synthetic", data=None, search_space=space,
                     options={"n_train": 128, "n_val": 64}, warm_start=[{"lr": 1e-2}, {"lr": 1e-4}],
                     fixed={"optimizer": "Adam", "schedule": "constant", "batch_size": 32, "unfrozen_layers": 3},
                     n_trials=2, max_epochs=2)  # fmt: skip
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    study = run_study(spec, url, workdir=tmp_path, show_progress=False, artifacts=tmp_path / "artifacts")
    assert study.best_trial.number == 0  # lr 1e-4 learns less in 2 epochs: trial 1 kept no checkpoint
    with pytest.raises(
        ConfigError, match=r"trial 1 of study 'syn' kept no checkpoint .*; trials that can be evaluated: 0 "
    ):
        evaluate_study("syn", url, trial_number=1, workdir=tmp_path, artifacts=tmp_path / "artifacts")
    with pytest.raises(ConfigError, match=r"study 'syn' has no trial 7; trials that can be evaluated: 0\."):
        evaluate_study("syn", url, trial_number=7, workdir=tmp_path, artifacts=tmp_path / "artifacts")
    # the study's own figures (its choice) stay when a trial is evaluated by number: that one is kept apart
    chosen = evaluate_study("syn", url, workdir=tmp_path, artifacts=tmp_path / "artifacts")
    by_number = evaluate_study("syn", url, trial_number=0, workdir=tmp_path, artifacts=tmp_path / "artifacts")
    attrs = optuna.load_study(study_name="syn", storage=url).user_attrs
    assert attrs["test"] == chosen and attrs["test/trial/0"] == by_number


@pytest.mark.bad_input
def test_a_missing_test_trial_list_is_named(sv_spec, sv_corpus, tmp_path):
    copy = tmp_path / "sv"
    shutil.copytree(sv_corpus, copy)
    (copy / "trials" / "test.txt").unlink()
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    run_study(sv_spec(n_trials=1, max_epochs=1, data=str(copy)), url, workdir=tmp_path, show_progress=False,
              artifacts=tmp_path / "artifacts")  # fmt: skip
    with pytest.raises(DataError, match=r"trials/test.txt: no test trial list\. Evaluating a study needs one"):
        evaluate_study("sv_tiny", url, workdir=tmp_path, artifacts=tmp_path / "artifacts")
