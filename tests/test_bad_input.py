"""Bad input of every kind is a TunerError whose message names the file (and line or key)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tuner.data.diarization import DiarizationCorpus, resolve_diarization_corpus
from tuner.errors import ConfigError, DataError, TunerError
from tuner.study import StudySpec, load_study_file

pytestmark = pytest.mark.bad_input

TRAIN_URI = "demo_train_001"
PROTOCOL = "Demo.SpeakerDiarization.Default"


def _validate(data: str | Path, workdir: Path) -> dict:
    return resolve_diarization_corpus(data, workdir=workdir).validate()


def _data_error(data: str | Path, workdir: Path) -> str:
    with pytest.raises(DataError) as info:
        _validate(data, workdir)
    assert isinstance(info.value, TunerError)
    return str(info.value)


def _insert_line(path: Path, line: str, lineno: int) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(lineno - 1, line + "\n")
    path.write_text("".join(lines), encoding="utf-8")


# ================================================================================ data: accepted forms


def _check_summary(summary: dict) -> None:
    assert summary["train"]["files"] == 3
    assert summary["development"]["files"] == 2
    assert summary["train"]["hours"] > 0 and summary["development"]["hours"] > 0


@pytest.mark.parametrize("form", ["dir", "yml", "yml:protocol"])
def test_corpus_resolves_from_each_accepted_form(corpus_copy: Path, tmp_path: Path, form: str) -> None:
    data = {
        "dir": str(corpus_copy),
        "yml": str(corpus_copy / "database.yml"),
        "yml:protocol": f"{corpus_copy / 'database.yml'}:{PROTOCOL}",
    }[form]
    corpus = resolve_diarization_corpus(data, workdir=tmp_path / "work")
    assert isinstance(corpus, DiarizationCorpus)
    assert corpus.database_yml == (corpus_copy / "database.yml").resolve()
    assert corpus.protocol_name == PROTOCOL
    _check_summary(corpus.validate())


def test_layout_without_database_yml_is_accepted(corpus_copy: Path, tmp_path: Path) -> None:
    (corpus_copy / "database.yml").unlink()
    workdir = tmp_path / "work"
    corpus = resolve_diarization_corpus(corpus_copy, workdir=workdir)
    assert corpus.protocol_name == "Corpus.SpeakerDiarization.Default"
    assert corpus.database_yml.is_file()
    assert workdir.resolve() in corpus.database_yml.resolve().parents  # written in tuner's cache
    assert not (corpus_copy / "database.yml").exists()  # the corpus is left untouched
    _check_summary(corpus.validate())
    files = list(corpus.protocol().train())
    assert {f["uri"] for f in files} == {"demo_train_000", "demo_train_001", "demo_train_002"}


# ================================================================================ data: errors


def test_missing_audio_file(corpus_copy: Path, tmp_path: Path) -> None:
    wav = corpus_copy / "train" / "wav" / f"{TRAIN_URI}.wav"
    wav.unlink()
    message = _data_error(corpus_copy, tmp_path)
    assert f"'{TRAIN_URI}'" in message
    assert str(wav) in message
    assert "train" in message


def test_missing_audio_file_in_layout_without_database_yml(corpus_copy: Path, tmp_path: Path) -> None:
    (corpus_copy / "database.yml").unlink()
    wav = corpus_copy / "train" / "wav" / f"{TRAIN_URI}.wav"
    wav.unlink()
    message = _data_error(corpus_copy, tmp_path)
    assert f"'{TRAIN_URI}'" in message and str(wav) in message


def test_audio_file_that_is_not_audio(corpus_copy: Path, tmp_path: Path) -> None:
    wav = corpus_copy / "train" / "wav" / f"{TRAIN_URI}.wav"
    wav.write_text("this is not audio\n", encoding="utf-8")
    message = _data_error(corpus_copy, tmp_path)
    assert str(wav) in message
    assert "soundfile" in message and "convert" in message


def test_empty_audio_file(corpus_copy: Path, tmp_path: Path) -> None:
    wav = corpus_copy / "train" / "wav" / f"{TRAIN_URI}.wav"
    sf.write(str(wav), np.zeros(0, dtype="float32"), 16000)
    assert sf.info(str(wav)).frames == 0  # a valid header with no samples
    message = _data_error(corpus_copy, tmp_path)
    assert str(wav) in message
    assert "empty" in message


def test_malformed_rttm_line_with_a_non_numeric_onset(corpus_copy: Path, tmp_path: Path) -> None:
    rttm = corpus_copy / "train" / "rttm" / f"{TRAIN_URI}.rttm"
    _insert_line(rttm, "SPEAKER x 1 abc 1.0 <NA> <NA> spk <NA> <NA>", 2)
    message = _data_error(corpus_copy, tmp_path)
    assert f"{rttm}:2" in message


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (f"SPEAKER {TRAIN_URI} 1 1.0", "expected at least 8 fields"),
        (f"SPEAKER {TRAIN_URI} 1 1.0 -2.0 <NA> <NA> spk <NA> <NA>", "not positive"),
        (f"TURN {TRAIN_URI} 1 1.0 2.0 <NA> <NA> spk <NA> <NA>", "unknown record type"),
    ],
)
def test_malformed_rttm_line(corpus_copy: Path, tmp_path: Path, line: str, why: str) -> None:
    rttm = corpus_copy / "train" / "rttm" / f"{TRAIN_URI}.rttm"
    _insert_line(rttm, line, 2)
    message = _data_error(corpus_copy, tmp_path)
    assert f"{rttm}:2" in message
    assert why in message


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (f"{TRAIN_URI} 1 0.000\n", "expected 4 fields"),
        (f"{TRAIN_URI} 1 5.000 2.000\n", "not after start"),
        (f"{TRAIN_URI} 1 0.000 20.000\n{TRAIN_URI} 1 -1.000 20.000\n", "negative"),
    ],
)
def test_malformed_uem_line(corpus_copy: Path, tmp_path: Path, content: str, why: str) -> None:
    uem = corpus_copy / "train" / "uem" / f"{TRAIN_URI}.uem"
    uem.write_text(content, encoding="utf-8")
    message = _data_error(corpus_copy, tmp_path)
    line = content.count("\n")
    assert f"{uem}:{line}" in message
    assert why in message


@pytest.mark.parametrize("content", [f"{TRAIN_URI} 1 abc 20.000\n", f"{TRAIN_URI} 1 0.000 20.000 extra\n"])
def test_malformed_uem_line_with_a_non_numeric_field(corpus_copy: Path, tmp_path: Path, content: str) -> None:
    uem = corpus_copy / "train" / "uem" / f"{TRAIN_URI}.uem"
    uem.write_text(content, encoding="utf-8")
    message = _data_error(corpus_copy, tmp_path)
    assert f"{uem}:1" in message


@pytest.mark.parametrize("kind", ["rttm", "uem"])
def test_comment_line_is_rejected_with_its_file_and_line(corpus_copy: Path, tmp_path: Path, kind: str) -> None:
    """pyannote.database cannot read comment lines, so tuner names them before training starts."""
    path = corpus_copy / "train" / kind / f"{TRAIN_URI}.{kind}"
    path.write_text("# reviewed by hand on 2024-05-01\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    message = _data_error(corpus_copy, tmp_path)
    assert f"{path}:1" in message and "comment" in message


def test_missing_rttm_file(corpus_copy: Path, tmp_path: Path) -> None:
    (corpus_copy / "train" / "rttm" / f"{TRAIN_URI}.rttm").unlink()
    message = _data_error(corpus_copy, tmp_path)
    assert f"{TRAIN_URI}.rttm" in message
    assert "train subset" in message


def test_empty_train_list(corpus_copy: Path, tmp_path: Path) -> None:
    (corpus_copy / "train.txt").write_text("", encoding="utf-8")
    message = _data_error(corpus_copy, tmp_path)
    assert "train subset is empty" in message
    assert "train.txt" in message


def test_empty_development_list_in_layout(corpus_copy: Path, tmp_path: Path) -> None:
    (corpus_copy / "database.yml").unlink()
    (corpus_copy / "dev.txt").write_text("", encoding="utf-8")
    message = _data_error(corpus_copy, tmp_path)
    assert "development subset is empty" in message
    assert str(corpus_copy / "dev.txt") in message


def test_layout_missing_dev_list(corpus_copy: Path, tmp_path: Path) -> None:
    (corpus_copy / "database.yml").unlink()
    (corpus_copy / "dev.txt").unlink()
    message = _data_error(corpus_copy, tmp_path)
    assert str(corpus_copy / "dev.txt") in message
    assert "train.txt and dev.txt" in message


def test_nonexistent_data_path(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "corpus"
    message = _data_error(missing, tmp_path)
    assert str(missing) in message
    for form in ("the pyannote folder layout", "database.yml", "'demo'"):
        assert form in message


def test_nonexistent_data_path_with_a_protocol_suffix(tmp_path: Path) -> None:
    message = _data_error(f"{tmp_path / 'nope' / 'database.yml'}:{PROTOCOL}", tmp_path)
    assert "data not found" in message and "nope" in message


def test_directory_that_is_neither_layout_nor_database(tmp_path: Path) -> None:
    folder = tmp_path / "random"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello", encoding="utf-8")
    message = _data_error(folder, tmp_path)
    assert str(folder.resolve()) in message
    assert "neither a database.yml nor the pyannote folder layout" in message


def test_database_yml_that_is_not_yaml(corpus_copy: Path, tmp_path: Path) -> None:
    database_yml = corpus_copy / "database.yml"
    database_yml.write_text("Protocols: [\n", encoding="utf-8")
    message = _data_error(corpus_copy, tmp_path)
    assert str(database_yml.resolve()) in message and "invalid YAML" in message


def test_database_yml_with_two_protocols_needs_a_name(corpus_copy: Path, tmp_path: Path) -> None:
    database_yml = corpus_copy / "database.yml"
    text = database_yml.read_text(encoding="utf-8")
    protocol = text[text.index("      Default:") :]
    database_yml.write_text(text + protocol.replace("Default:", "Other:", 1), encoding="utf-8")
    message = _data_error(corpus_copy, tmp_path)
    assert str(database_yml.resolve()) in message
    assert "Demo.SpeakerDiarization.Default" in message and "Demo.SpeakerDiarization.Other" in message
    # naming one of them works
    _check_summary(_validate(f"{database_yml}:Demo.SpeakerDiarization.Other", tmp_path))


def test_unknown_protocol_name(corpus_copy: Path, tmp_path: Path) -> None:
    database_yml = corpus_copy / "database.yml"
    message = _data_error(f"{database_yml}:Demo.SpeakerDiarization.Nope", tmp_path)
    assert "Nope" in message and str(database_yml) in message


def test_malformed_protocol_name(corpus_copy: Path, tmp_path: Path) -> None:
    database_yml = corpus_copy / "database.yml"
    message = _data_error(f"{database_yml}:Default", tmp_path)
    assert "Default" in message and str(database_yml) in message


# ================================================================================ study files


def _study_file(tmp_path: Path, body: str, name: str = "my_study.py") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def test_study_file_loads(tmp_path: Path) -> None:
    path = _study_file(
        tmp_path,
        "from tuner import StudySpec\n"
        "study = StudySpec(name='ok', objective='pyannote_segmentation', search_space='s.yaml', n_trials=3)\n",
    )
    study = load_study_file(path)
    assert isinstance(study, StudySpec)
    assert (study.name, study.n_trials) == ("ok", 3)


def test_missing_study_file(tmp_path: Path) -> None:
    path = tmp_path / "studies" / "nope.py"
    with pytest.raises(ConfigError) as info:
        load_study_file(path)
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


def test_study_file_with_a_syntax_error(tmp_path: Path) -> None:
    path = _study_file(tmp_path, "from tuner import StudySpec\n\nstudy = StudySpec(name='x',\n    objective=)\n")
    with pytest.raises(ConfigError) as info:
        load_study_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:4: syntax error")


def test_study_file_without_a_study(tmp_path: Path) -> None:
    path = _study_file(tmp_path, "from tuner import StudySpec\nspec = 3\n")
    with pytest.raises(ConfigError) as info:
        load_study_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "study = StudySpec(...)" in message


def test_study_file_whose_study_is_not_a_spec(tmp_path: Path) -> None:
    path = _study_file(tmp_path, "study = {'name': 'x'}\n")
    with pytest.raises(ConfigError, match="found dict") as info:
        load_study_file(path)
    assert str(path) in str(info.value)


def test_study_file_with_an_invalid_spec(tmp_path: Path) -> None:
    path = _study_file(
        tmp_path,
        "from tuner import StudySpec\n"
        "study = StudySpec(name='x', objective='pyannote_segmentation', search_space='s.yaml', n_trials=0)\n",
    )
    with pytest.raises(ConfigError) as info:
        load_study_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "'n_trials' must be a positive integer" in message


def test_study_file_raising_an_ordinary_exception(tmp_path: Path) -> None:
    path = _study_file(tmp_path, "import os\n\nbudget = int('many')\n")
    with pytest.raises(ConfigError) as info:
        load_study_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ValueError")
    assert "'many'" in message


def test_unknown_objective_name_suggests_the_right_one() -> None:
    from tuner.objectives.base import get_objective_class

    with pytest.raises(ConfigError) as info:
        get_objective_class("pyannote_segmentaton")
    message = str(info.value)
    assert "'pyannote_segmentaton'" in message
    assert "did you mean 'pyannote_segmentation'" in message


# ================================================================================ CLI


@pytest.fixture(scope="module")
def pyannote_objective_imported() -> None:
    """`tuner run` imports the objective (pyannote.audio: several seconds) before reading the search
    space; import it once per module so the CLI tests themselves stay fast."""
    import tuner.objectives.pyannote  # noqa: F401


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from tuner.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    return info.value.code, captured.err


def _cli_study_file(tmp_path: Path, corpus: Path, space: Path) -> Path:
    return _study_file(
        tmp_path,
        "from tuner import StudySpec\n"
        "study = StudySpec(\n"
        "    name='cli_bad_space',\n"
        "    objective='pyannote_segmentation',\n"
        f"    search_space={str(space)!r},\n"
        f"    data={str(corpus)!r},\n"
        "    n_trials=1,\n"
        "    max_epochs=1,\n"
        ")\n",
        name="cli_study.py",
    )


@pytest.mark.usefixtures("restore_logging", "pyannote_objective_imported")
def test_cli_run_with_a_bad_search_space_exits_2_without_traceback(
    corpus_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "bad_space.yaml"
    space.write_text(
        "optimizer: {choices: [Adam, SGD]}\nlr: {low: 1.0e-4, high: 1.0e-2, log: true}\n", encoding="utf-8"
    )
    study_file = _cli_study_file(tmp_path, corpus_copy, space)
    db = tmp_path / "x.db"
    code, err = _cli(
        ["run", str(study_file), "--storage", f"sqlite:///{db}", "--workdir", str(tmp_path / "work")], capsys
    )
    assert code == 2
    assert str(space) in err
    assert "key 'optimizer'" in err and "'SGD'" in err
    assert "Traceback" not in err
    assert not db.exists()  # it failed before the store was touched, let alone any training


@pytest.mark.usefixtures("restore_logging", "pyannote_objective_imported")
def test_cli_run_with_a_broken_corpus_exits_2_naming_the_file(
    corpus_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    wav = corpus_copy / "dev" / "wav" / "demo_dev_001.wav"
    wav.write_bytes(b"RIFF not really")
    space = tmp_path / "space.yaml"
    space.write_text("optimizer: Adam\nlr: 1.0e-3\n", encoding="utf-8")
    study_file = _cli_study_file(tmp_path, corpus_copy, space)
    db = tmp_path / "x.db"
    code, err = _cli(
        ["run", str(study_file), "--storage", f"sqlite:///{db}", "--workdir", str(tmp_path / "work")], capsys
    )
    assert code == 2
    assert "demo_dev_001.wav" in err and "soundfile" in err
    assert "Traceback" not in err
    assert not db.exists()


@pytest.mark.usefixtures("restore_logging")
def test_cli_run_with_a_missing_study_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "studies" / "nope.py"
    code, err = _cli(["run", str(missing), "--storage", f"sqlite:///{tmp_path / 'x.db'}"], capsys)
    assert code == 2
    assert str(missing) in err and "not found" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("restore_logging")
def test_cli_export_of_an_unknown_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _cli(
        ["export", "nosuchstudy", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--out", str(tmp_path / "best.yaml")],
        capsys,
    )
    assert code == 2
    assert "'nosuchstudy'" in err
    assert "Studies there: none" in err
    assert "Traceback" not in err
    assert not (tmp_path / "best.yaml").exists()


@pytest.mark.usefixtures("restore_logging")
def test_cli_usage_error_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _cli(["run"], capsys)
    assert code == 2
    assert "STUDY_FILE" in err
    assert "Traceback" not in err


def test_copy_fixture_is_private(corpus_copy: Path, demo_corpus: Path) -> None:
    """Sanity check of what the data tests rely on: breaking the copy leaves the shared corpus intact."""
    shutil.rmtree(corpus_copy / "train")
    assert (demo_corpus / "train" / "wav" / f"{TRAIN_URI}.wav").is_file()
