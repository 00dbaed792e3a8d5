"""Bad diarization input the checks of tests/test_bad_input.py do not reach: truncated or off-rate audio,
RTTM/UEM lines that point at another file or past the end of the audio, a database.yml with a syntax error;
and a study whose corpus breaks after trials completed keeps them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_OPTIONS

from tuner.data.diarization import resolve_diarization_corpus
from tuner.errors import DataError

pytestmark = pytest.mark.bad_input

TRAIN_URI = "demo_train_001"


def _data_error(data: str | Path, workdir: Path) -> str:
    with pytest.raises(DataError) as info:
        resolve_diarization_corpus(data, workdir=workdir).validate()
    return str(info.value)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _duration(wav: Path) -> float:
    return sf.info(str(wav)).duration


def _wav(corpus: Path, uri: str = TRAIN_URI) -> Path:
    return corpus / ("train" if "train" in uri else "dev") / "wav" / f"{uri}.wav"


# ------------------------------------------------------------------------------------------- audio


def test_truncated_wav(corpus_copy: Path, tmp_path: Path) -> None:
    wav = _wav(corpus_copy)
    _truncate(wav)
    message = _data_error(corpus_copy, tmp_path)
    assert message.startswith(f"audio file {wav} is truncated: its header promises")
    assert "copy or export it again, or remove it from the corpus" in message


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        (36, "is a WAV file whose header is damaged or cut short (Error opening"),  # RIFF + fmt, no data chunk
        (0, "is empty (0 bytes)"),
    ],
)
def test_wav_cut_inside_its_header(corpus_copy: Path, tmp_path: Path, keep: int, expected: str) -> None:
    """A WAV cut before its samples begin is damaged, not in a format to convert (no ffmpeg hint)."""
    wav = _wav(corpus_copy)
    wav.write_bytes(wav.read_bytes()[:keep])
    message = _data_error(corpus_copy, tmp_path)
    assert message.startswith(f"audio file {wav} {expected}")
    assert "remove it from the corpus" in message and "ffmpeg" not in message


def test_truncated_flac_in_a_layout_without_database_yml(corpus_copy: Path, tmp_path: Path) -> None:
    (corpus_copy / "database.yml").unlink()
    wav = _wav(corpus_copy, "demo_dev_001")
    audio, rate = sf.read(wav, dtype="float32")
    flac = wav.with_suffix(".flac")
    sf.write(flac, audio, rate, format="FLAC")
    wav.unlink()
    _truncate(flac)
    message = _data_error(corpus_copy, tmp_path)
    assert message.startswith(f"audio file {flac} is truncated or corrupt") and "copy or export it again" in message


def test_file_at_another_rate_than_the_model_is_named_in_a_warning(
    corpus_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pyannote resamples a file whose rate differs from the model's, chunk by chunk: it is accepted,
    and the warning names it and says how to resample the corpus once."""
    from tuner.objectives.pyannote import PyannoteSegmentation

    wav = _wav(corpus_copy)
    audio, _ = sf.read(wav, dtype="float32")
    sf.write(wav, audio[::2], 8000)
    objective = PyannoteSegmentation(str(corpus_copy), options=TINY_OPTIONS, workdir=tmp_path / "work")
    with caplog.at_level(logging.WARNING, logger="tuner.data.diarization"):
        objective.setup()
    (warning,) = [r.getMessage() for r in caplog.records if "Hz" in r.getMessage()]
    assert "1 audio file(s) are not at the model's 16000 Hz" in warning and f"{wav} (8000 Hz)" in warning
    assert "high frequencies" in warning and "sox in.wav -r 16000 out.wav" in warning
    assert objective.data_summary["train"]["files"] == 3


def test_corpus_at_the_model_rate_gives_no_rate_warning(
    corpus_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tuner.data.diarization"):
        resolve_diarization_corpus(corpus_copy, workdir=tmp_path).validate(sample_rate=16000)
    assert not [r for r in caplog.records if "Hz" in r.getMessage()]


def test_setup_succeeds_once_the_file_is_repaired(corpus_copy: Path, tmp_path: Path) -> None:
    """A failed setup() leaves nothing half done: after the fix, the same objective sets up fully."""
    from tuner.objectives.pyannote import PyannoteSegmentation

    wav = _wav(corpus_copy, "demo_dev_000")
    good = wav.read_bytes()
    _truncate(wav)
    objective = PyannoteSegmentation(str(corpus_copy), options=TINY_OPTIONS, workdir=tmp_path / "work")
    with pytest.raises(DataError, match="truncated"):
        objective.setup()
    wav.write_bytes(good)
    objective.setup()
    assert objective.data_summary["development"]["files"] == 2


# ------------------------------------------------------------------------------------------- UEM


def test_uem_region_past_the_end_of_the_audio(corpus_copy: Path, tmp_path: Path) -> None:
    """pyannote would crop training chunks past the end and crash mid-trial; tuner refuses it up front."""
    uem = corpus_copy / "train" / "uem" / f"{TRAIN_URI}.uem"
    uem.write_text(f"{TRAIN_URI} 1 0.000 200.000\n")
    wav = _wav(corpus_copy)
    message = _data_error(corpus_copy, tmp_path)
    duration = f"{_duration(wav):.3f}"
    assert message.startswith(f"{uem}:1: UEM region 0.000-200.000 s of uri '{TRAIN_URI}' ends at 200.000 s")
    assert f"{wav} lasts {duration} s" in message and f"may end at {duration} s at most" in message


def test_uem_region_rounded_up_by_a_millisecond_is_accepted(corpus_copy: Path, tmp_path: Path) -> None:
    uem = corpus_copy / "train" / "uem" / f"{TRAIN_URI}.uem"
    uem.write_text(f"{TRAIN_URI} 1 0.000 {_duration(_wav(corpus_copy)) + 0.001:.3f}\n")
    assert resolve_diarization_corpus(corpus_copy, workdir=tmp_path).validate()["train"]["files"] == 3


def test_uem_regions_shorter_than_a_chunk_are_named_in_a_warning(
    corpus_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pyannote silently drops regions shorter than its chunks: tuner says which, and how to keep them."""
    uem = corpus_copy / "train" / "uem" / f"{TRAIN_URI}.uem"
    uem.write_text(f"{TRAIN_URI} 1 0.000 2.000\n{TRAIN_URI} 1 2.500 12.500\n")
    with caplog.at_level(logging.WARNING, logger="tuner.data.diarization"):
        summary = resolve_diarization_corpus(corpus_copy, workdir=tmp_path).validate(chunk_duration=3.0)
    assert summary["train"]["files"] == 3
    (warning,) = [r.getMessage() for r in caplog.records if "shorter than" in r.getMessage()]
    assert "1 of the 4 evaluated regions of the train subset (2.0 s) are shorter than the 3 s chunks" in warning
    assert f"e.g. {uem}:1: UEM region 0.000-2.000 s of uri '{TRAIN_URI}'" in warning
    assert "options={'duration': ...}" in warning


def test_a_chunk_longer_than_every_file_leaves_nothing_to_train_on(corpus_copy: Path, tmp_path: Path) -> None:
    """The study's chunk duration reaches the check: setup fails before any trial, saying what to change."""
    from tuner.objectives.pyannote import PyannoteSegmentation

    objective = PyannoteSegmentation(
        str(corpus_copy), options={**TINY_OPTIONS, "duration": 60.0}, workdir=tmp_path / "work"
    )
    with pytest.raises(DataError) as info:
        objective.setup()
    message = str(info.value)
    assert "3 of the 3 evaluated regions of the train subset" in message and "shorter than the 60 s chunks" in message
    assert "no audio at all" in message and "options={'duration': ...}" in message


def test_uem_line_of_another_uri(corpus_copy: Path, tmp_path: Path) -> None:
    uem = corpus_copy / "train" / "uem" / f"{TRAIN_URI}.uem"
    uem.write_text(f"{TRAIN_URI} 1 0.000 10.000\ndemo_train_01 1 10.000 20.000\n")
    message = _data_error(corpus_copy, tmp_path)
    assert message.startswith(
        f"{uem}:2: UEM region of uri 'demo_train_01', but this file is the UEM file of uri '{TRAIN_URI}'"
    )
    assert "Fix the uri on this line" in message


def test_uem_file_without_a_region(corpus_copy: Path, tmp_path: Path) -> None:
    uem = corpus_copy / "dev" / "uem" / "demo_dev_001.uem"
    uem.write_text("\n")
    message = _data_error(corpus_copy, tmp_path)
    assert message.startswith(f"{uem}: no UEM region for uri 'demo_dev_001' (development subset)")
    assert "'demo_dev_001 1 0.000 <duration>'" in message and "dev.txt" in message


def test_missing_uem_file(corpus_copy: Path, tmp_path: Path) -> None:
    uem = corpus_copy / "dev" / "uem" / "demo_dev_000.uem"
    uem.unlink()
    message = _data_error(corpus_copy, tmp_path)
    assert message.startswith(f"{uem}: file not found") and "'demo_dev_000', development subset" in message
    assert "Add it or remove 'demo_dev_000'" in message


# ------------------------------------------------------------------------------------------- RTTM


def test_rttm_line_of_another_uri(corpus_copy: Path, tmp_path: Path) -> None:
    """A per-file RTTM line naming another uri (a renamed file, a typo) would be dropped silently by pyannote."""
    rttm = corpus_copy / "train" / "rttm" / f"{TRAIN_URI}.rttm"
    lines = rttm.read_text().splitlines()
    lines[2] = lines[2].replace(TRAIN_URI, "demo_train_1")
    rttm.write_text("\n".join(lines) + "\n")
    message = _data_error(corpus_copy, tmp_path)
    assert message.startswith(
        f"{rttm}:3: RTTM turn of uri 'demo_train_1', but this file is the RTTM file of uri '{TRAIN_URI}'"
    )
    assert "move the line to the file of 'demo_train_1'" in message


def test_rttm_turn_after_the_end_of_the_audio(corpus_copy: Path, tmp_path: Path) -> None:
    rttm = corpus_copy / "dev" / "rttm" / "demo_dev_000.rttm"
    with rttm.open("a") as handle:
        handle.write("SPEAKER demo_dev_000 1 75.000 2.500 <NA> <NA> spk90 <NA> <NA>\n")
    line = len(rttm.read_text().splitlines())
    wav = _wav(corpus_copy, "demo_dev_000")
    message = _data_error(corpus_copy, tmp_path)
    assert message.startswith(f"{rttm}:{line}: RTTM turn 75.000-77.500 s of uri 'demo_dev_000' starts at 75.000 s")
    assert f"{wav} lasts {_duration(wav):.3f} s" in message and "complete recording" in message
    assert "UEM" not in message


def test_rttm_turn_running_past_the_end_is_accepted(corpus_copy: Path, tmp_path: Path) -> None:
    """Turns that start inside the audio may end a little after it (pyannote crops them)."""
    rttm = corpus_copy / "dev" / "rttm" / "demo_dev_000.rttm"
    start = _duration(_wav(corpus_copy, "demo_dev_000")) - 0.5
    with rttm.open("a") as handle:
        handle.write(f"SPEAKER demo_dev_000 1 {start:.3f} 1.000 <NA> <NA> spk90 <NA> <NA>\n")
    assert resolve_diarization_corpus(corpus_copy, workdir=tmp_path).validate()["development"]["files"] == 2


# ------------------------------------------------------------------------------------------- database.yml


def test_database_yml_syntax_error_names_its_line(corpus_copy: Path, tmp_path: Path) -> None:
    database_yml = corpus_copy / "database.yml"
    lines = database_yml.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, start=1) if "annotated:" in line)
    lines[number - 1] = lines[number - 1].replace("annotated:", "annotated", 1)  # a key without its colon
    database_yml.write_text("\n".join(lines) + "\n")
    message = _data_error(corpus_copy, tmp_path)
    assert message.startswith(f"{database_yml.resolve()}:{number + 1}: invalid YAML")


def test_database_yml_that_is_a_list(corpus_copy: Path, tmp_path: Path) -> None:
    database_yml = corpus_copy / "database.yml"
    database_yml.write_text("- Databases\n- Protocols\n")
    message = _data_error(f"{database_yml}:Demo.SpeakerDiarization.Default", tmp_path)
    assert str(database_yml) in message and "'Databases' and 'Protocols' keys, got list" in message


@pytest.mark.parametrize(
    ("text", "key", "got"),
    [
        ("Protocols: [Demo]\n", "Protocols", "list"),
        ("Protocols:\n  Demo:\n    SpeakerDiarization: [Default]\n", "Protocols.Demo.SpeakerDiarization", "list"),
        (
            "Protocols:\n  Demo:\n    SpeakerDiarization:\n      Default:\n        train: train.txt\n",
            "Protocols.Demo.SpeakerDiarization.Default.train",
            "str",
        ),
    ],
)
def test_database_yml_with_a_level_that_is_not_a_mapping(
    corpus_copy: Path, tmp_path: Path, text: str, key: str, got: str
) -> None:
    database_yml = corpus_copy / "database.yml"
    database_yml.write_text(text)
    message = _data_error(f"{database_yml}:Demo.SpeakerDiarization.Default", tmp_path)
    assert message.startswith(f"{database_yml}: '{key}' must be a mapping, got {got}")
    assert "Protocols > <Database> > SpeakerDiarization > <Protocol>" in message


def test_uri_list_that_is_not_utf8(corpus_copy: Path, tmp_path: Path) -> None:
    uris = corpus_copy / "dev.txt"
    uris.write_bytes("demo_dev_000\ndemo_dév_001\n".encode("latin-1"))
    message = _data_error(corpus_copy, tmp_path)
    assert message.startswith(f"{uris}: uri list is not valid UTF-8") and "re-export it as UTF-8" in message


# ------------------------------------------------------------------------------------------- the store


def test_completed_trials_survive_a_corpus_that_breaks_before_a_resume(
    make_spec: Callable[..., Any], corpus_copy: Path, tmp_path: Path
) -> None:
    """Resuming a study on a corpus broken since its first run fails in setup(), before the store is
    touched: the completed trial and its records are kept, and no failed trial is added."""
    import optuna

    from tuner import run_study

    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    spec = make_spec(
        data=str(corpus_copy), n_trials=1, max_epochs=1, trainer={"limit_train_batches": 1, "limit_val_batches": 1}
    )
    run_study(spec, url, workdir=tmp_path / "work", show_progress=False)
    before = optuna.load_study(study_name=spec.name, storage=url).trials
    assert [t.state for t in before] == [optuna.trial.TrialState.COMPLETE]

    wav = _wav(corpus_copy, "demo_dev_001")
    _truncate(wav)
    with pytest.raises(DataError, match="truncated") as info:
        run_study(spec, url, n_trials=1, workdir=tmp_path / "work", show_progress=False)
    assert str(wav) in str(info.value)
    after = optuna.load_study(study_name=spec.name, storage=url).trials
    assert [(t.number, t.state, t.value, t.params) for t in after] == [
        (t.number, t.state, t.value, t.params) for t in before
    ]
    assert after[0].user_attrs == before[0].user_attrs
    assert np.isfinite(after[0].value)
