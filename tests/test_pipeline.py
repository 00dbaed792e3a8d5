"""The diarization pipeline objective: pyannote's SpeakerDiarization built from local parts (segmentation-3.0,
CAM++), tuned file by file with Wilcoxon pruning, evaluated on the test split, exported as a folder that
pyannote's Pipeline.from_pretrained loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from conftest import REPO

from tuner import StudySpec, run_study
from tuner.errors import ConfigError, DataError
from tuner.pretrained import fetch, present

State = optuna.trial.TrialState
SPACE = str(REPO / "search_spaces" / "pyannote_pipeline.yaml")
GOOD = {"clustering.threshold": 0.45, "clustering.method": "complete", "clustering.min_cluster_size": 1}
BAD = {"clustering.threshold": 1.39, "clustering.method": "average", "clustering.min_cluster_size": 20}


@pytest.fixture(scope="session")
def pipeline_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 dev and 2 test conversations of 20 s (the demo's unseen speakers)."""
    from tuner.data.demo import ensure_diarization_corpus

    root = tmp_path_factory.mktemp("pipeline") / "corpus"
    return ensure_diarization_corpus(root, seed=1, n_train=1, n_dev=6, n_test=2, file_duration=20.0)


@pytest.fixture(scope="session")
def pretrained_root() -> Path:
    """segmentation-3.0 and CAM++ fetched once into the repository's storage (`make test` fetches them first)."""
    root = REPO / "storage" / "pretrained"
    for name in ("segmentation-3.0", "campplus"):
        if present(name, root) is None:
            fetch(name, root)
    return root


@pytest.fixture
def workdir(tmp_path: Path, pretrained_root: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "pretrained").symlink_to(pretrained_root)
    return work


def _spec(corpus: Path, **overrides: Any) -> StudySpec:
    values: dict[str, Any] = {
        "name": "pipe",
        "objective": "pyannote_pipeline",
        "data": str(corpus),
        "pretrained": "segmentation-3.0",
        "options": {"segmentation_step": 0.5},
        "search_space": SPACE,
        "sampler": optuna.samplers.TPESampler(seed=0),
        "pruner": optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2),
        "warm_start": [GOOD, BAD],
        "n_trials": 4,
    }
    values.update(overrides)
    return StudySpec(**values)


@pytest.mark.slow
@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)  # store-independent: one backend is enough
def test_trials_report_each_files_der_and_wilcoxon_prunes_a_worse_one(pipeline_corpus, workdir, storage_url, tmp_path):
    from tuner.evaluate import evaluate_study
    from tuner.reports.markdown import report_markdown
    from tuner.store.records import StudyRecord, TrialRecord

    study = run_study(_spec(pipeline_corpus), storage_url, workdir=workdir, show_progress=False,
                      artifacts=tmp_path / "artifacts")  # fmt: skip
    record = StudyRecord.of(study)
    assert record.baseline_label == "pyannote's default parameters" and 0 < record.baseline_value < 1.5
    good, bad = study.trials[0], study.trials[1]
    assert good.state == State.COMPLETE and sorted(good.intermediate_values) == list(range(6))  # one per file
    steps = TrialRecord.of(good, record).steps
    assert sorted(steps) == [f"demo_dev_{k:03d}" for k in range(6)]
    # the trial's value is the DER over every file: errors summed over the files' reference speech
    errors = sum(v["confusion_s"] + v["false_alarm_s"] + v["miss_s"] for v in steps.values())
    assert good.value == pytest.approx(errors / sum(v["total_s"] for v in steps.values()))
    assert {round(v["DER"], 6) for v in steps.values()} == {round(v, 6) for v in good.intermediate_values.values()}
    # a configuration worse on the same files is stopped before the last one
    assert bad.state == State.PRUNED and 4 <= len(bad.intermediate_values) < 6
    report = report_markdown(study, storage_url)
    assert "pruned" in report.lower() and "| item | DER | Confusion | FalseAlarm | Miss |" in report
    assert "| demo_dev_000 |" in report and "optimizer" not in report and "epochs run" not in report

    result = evaluate_study("pipe", storage_url, workdir=workdir, artifacts=tmp_path / "artifacts")
    assert result["split"] == "test" and result["trial"] == study.best_trial.number
    assert set(result["best"]) == set(result["baseline"]) == {"DER", "Confusion", "FalseAlarm", "Miss"}
    assert result["baseline_label"] == "pyannote's default parameters"
    assert StudyRecord.of(optuna.load_study(study_name="pipe", storage=storage_url)).test == result
    # the difference on the same test files, with its paired bootstrap interval (files weighted as DER weighs them)
    paired = result["paired"]
    assert paired["difference"] == pytest.approx(result["best"]["DER"] - result["baseline"]["DER"])
    assert paired["low"] <= paired["difference"] <= paired["high"] and paired["items"] >= 2
    assert paired["weighted_by"] == "total_s"
    stored = StudyRecord.of(optuna.load_study(study_name="pipe", storage=storage_url))
    assert "95 % paired bootstrap interval" in (stored.test_text or "")

    # `tuner export` of a pipeline study writes the folder a user runs, its parameters the best trial's
    from click.testing import CliRunner

    from tuner.cli import cli

    out = tmp_path / "exported"
    arguments = ["--storage", storage_url, "--out", str(out), "--workdir", str(workdir)]
    exported = CliRunner().invoke(cli, ["export", "pipe", *arguments, "--artifacts", str(tmp_path / "artifacts")])
    assert exported.exit_code == 0, exported.output
    assert "Pipeline.from_pretrained" in exported.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    best = study.best_trial.params
    assert config["params"]["clustering"]["threshold"] == pytest.approx(best["clustering.threshold"])
    assert yaml.safe_load((out / "tuner_export.yaml").read_text())["trial"] == study.best_trial.number
    assert all((out / part / "pytorch_model.bin").is_file() for part in ("segmentation", "embedding"))


@pytest.mark.slow
def test_the_exported_folder_loads_with_pipeline_from_pretrained_and_diarizes(pipeline_corpus, workdir, tmp_path):
    """What a user runs: pyannote.audio.Pipeline.from_pretrained(folder), offline, on a test file."""
    import soundfile as sf
    from pyannote.audio import Pipeline

    from tuner.objectives.pipeline import PyannotePipeline

    objective = PyannotePipeline(str(pipeline_corpus), "segmentation-3.0", {"segmentation_step": 0.5}, workdir=workdir)
    folder = objective.export(tmp_path / "exported", GOOD)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["params"]["clustering"] == {"threshold": 0.45, "method": "complete", "min_cluster_size": 1}
    assert config["params"]["segmentation"] == {"min_duration_off": 0.0}

    pipeline = Pipeline.from_pretrained(folder)
    assert pipeline.segmentation_step == 0.5 and pipeline.klustering == "AgglomerativeClustering"
    waveform, sample_rate = sf.read(pipeline_corpus / "test" / "wav" / "demo_test_000.wav", dtype="float32")
    output = pipeline({"waveform": torch.from_numpy(waveform)[None], "sample_rate": sample_rate})
    turns = list(output.speaker_diarization.itertracks(yield_label=True))
    assert turns and 1 <= len(output.speaker_diarization.labels()) <= 4
    assert output.speaker_embeddings.shape == (len(output.speaker_diarization.labels()), 192)  # CAM++'s


@pytest.mark.bad_input
def test_a_segmentation_study_that_does_not_exist_is_named(pipeline_corpus, workdir, tmp_path):
    spec = _spec(pipeline_corpus, pretrained="study:no_such_study")
    with pytest.raises(ConfigError, match=r"pretrained='study:no_such_study': no study 'no_such_study' in sqlite:///"):
        run_study(spec, f"sqlite:///{tmp_path / 'tuner.db'}", workdir=workdir, show_progress=False)


@pytest.mark.bad_input
def test_an_embedding_path_that_is_not_a_model_is_named(pipeline_corpus, workdir, tmp_path):
    junk = tmp_path / "embedding.bin"
    junk.write_bytes(b"not a checkpoint")
    spec = _spec(pipeline_corpus, options={"embedding": str(junk)})
    with pytest.raises(ConfigError, match=rf"{junk}: not a pyannote.audio speaker-embedding model"):
        run_study(spec, f"sqlite:///{tmp_path / 'tuner.db'}", workdir=workdir, show_progress=False)


@pytest.mark.bad_input
def test_a_key_the_pipeline_lacks_is_refused_naming_it(pipeline_corpus, workdir, tmp_path):
    spec = _spec(pipeline_corpus, search_space={"clustering.Fa": {"low": 0.01, "high": 0.5}}, warm_start=None)
    with pytest.raises(ConfigError, match=r"key 'clustering.Fa' is VBx's; this pipeline clusters agglomeratively"):
        run_study(spec, f"sqlite:///{tmp_path / 'tuner.db'}", workdir=workdir, show_progress=False)
    spec = _spec(pipeline_corpus, search_space={"segmentation.threshold": {"low": 0.3, "high": 0.7}}, warm_start=None)
    with pytest.raises(ConfigError, match=r"'segmentation.threshold' is .*powerset"):
        run_study(spec, f"sqlite:///{tmp_path / 'tuner.db'}", workdir=workdir, show_progress=False)


@pytest.mark.bad_input
def test_a_corpus_without_a_test_split_is_named_when_evaluated(pipeline_corpus, workdir, tmp_path):
    import shutil

    from tuner.objectives.pipeline import PyannotePipeline

    corpus = tmp_path / "no_test"
    shutil.copytree(pipeline_corpus, corpus)
    (corpus / "test.txt").unlink()  # a corpus in the pyannote folder layout with no test split
    (corpus / "database.yml").unlink()
    objective = PyannotePipeline(str(corpus), "segmentation-3.0", {"segmentation_step": 0.5}, workdir=workdir)
    objective.setup()
    with pytest.raises(DataError, match=r"no test subset .* add test.txt"):
        objective.steps("test")


@pytest.mark.slow
def test_a_wavlm_sv_studys_embedder_diarizes_behind_pyannotes_interface(pipeline_corpus, sv_spec, workdir, tmp_path):
    """embedding='study:NAME': the WavLM + ECAPA embedder a wavlm_sv study trained (its best trial's checkpoint)."""
    from tuner.models.wavlm_embedding import WavLMEmbedding
    from tuner.store.records import StudyRecord

    url, artifacts = f"sqlite:///{tmp_path / 'tuner.db'}", tmp_path / "artifacts"
    run_study(sv_spec(n_trials=1, max_epochs=1), url, workdir=workdir, show_progress=False, artifacts=artifacts)
    spec = _spec(pipeline_corpus, name="pipe_wavlm", options={"segmentation_step": 0.5, "embedding": "study:sv_tiny"},
                 warm_start=[GOOD], n_trials=1, pruner=optuna.pruners.NopPruner())  # fmt: skip
    study = run_study(spec, url, workdir=workdir, show_progress=False, artifacts=artifacts)
    assert study.trials[0].state == State.COMPLETE and 0 <= study.trials[0].value < 2
    assert StudyRecord.of(study).options["embedding_source"]["study"] == "sv_tiny"

    # pyannote's speaker-activity weights: all on is no weights; frames off are left out of the pooling
    (kept,) = (workdir / "cache" / "embedding").glob("sv_tiny-trial*.ckpt")
    from tuner.models.wavlm_embedding import load_wavlm_sv_embedding

    model = load_wavlm_sv_embedding(kept)
    assert isinstance(model, WavLMEmbedding) and model.dimension == 64
    waveforms = torch.randn(2, 1, 32000)
    with torch.inference_mode():
        plain = model(waveforms)
        ones = model(waveforms, weights=torch.ones(2, 293))
        half = model(waveforms, weights=torch.cat([torch.ones(2, 150), torch.zeros(2, 143)], dim=1))
    assert plain.shape == (2, 64) and torch.allclose(plain, ones, atol=1e-5)
    assert not torch.allclose(plain, half, atol=1e-3)


@pytest.mark.bad_input
def test_an_embedding_study_without_a_wavlm_checkpoint_is_named(pipeline_corpus, workdir, tmp_path):
    spec = _spec(pipeline_corpus, options={"embedding": "study:no_such_sv"}, n_trials=1)
    with pytest.raises(ConfigError, match=r"options\['embedding'\]='study:no_such_sv': .*no_such_sv"):
        run_study(spec, f"sqlite:///{tmp_path / 'tuner.db'}", workdir=workdir, show_progress=False)
