"""Bad speaker-verification input (Kathbath layout + trial list) is refused in ``setup()``, naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, TINY_SV_OPTIONS

from tuner.errors import ConfigError, DataError
from tuner.objectives.wavlm_sv import WavLMSpeakerVerification

pytestmark = pytest.mark.bad_input

TRAIN_WAV = Path("train") / "spk90" / "u000.wav"


@pytest.fixture
def sv_copy(sv_corpus: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny verification corpus that a test may break."""
    return Path(shutil.copytree(sv_corpus, tmp_path / "corpus"))


def _objective(root: Path, tmp_path: Path, **options: object) -> WavLMSpeakerVerification:
    return WavLMSpeakerVerification(str(root), options={**TINY_SV_OPTIONS, **options}, workdir=tmp_path / "work")


def _setup_error(root: Path, tmp_path: Path, **options: object) -> str:
    """The message of the DataError that ``setup()`` raises on the corpus at ``root``."""
    with pytest.raises(DataError) as info:
        _objective(root, tmp_path, **options).setup()
    return str(info.value)


def _dev_wav(root: Path) -> Path:
    """The first utterance named by the dev trial list (a file the training split does not hold)."""
    return root / (root / "trials" / "dev.txt").read_text().split()[1]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _insert_trial(root: Path, line: str, lineno: int = 3) -> Path:
    trials = root / "trials" / "dev.txt"
    lines = trials.read_text().splitlines()
    lines.insert(lineno - 1, line)
    trials.write_text("\n".join(lines) + "\n")
    return trials


# ------------------------------------------------------------------------------------------- audio


def test_truncated_training_utterance(sv_copy: Path, tmp_path: Path) -> None:
    wav = sv_copy / TRAIN_WAV
    _truncate(wav)
    message = _setup_error(sv_copy, tmp_path)
    assert str(wav) in message and "truncated" in message
    assert "header promises" in message and "copy or export it again" in message


def test_truncated_utterance_of_the_dev_trial_list(sv_copy: Path, tmp_path: Path) -> None:
    wav = _dev_wav(sv_copy)
    _truncate(wav)
    message = _setup_error(sv_copy, tmp_path)
    assert str(wav) in message and "truncated" in message


def test_truncated_flac_utterance(sv_copy: Path, tmp_path: Path) -> None:
    wav = sv_copy / TRAIN_WAV
    audio, rate = sf.read(wav, dtype="float32")
    flac = wav.with_suffix(".flac")
    sf.write(flac, audio, rate, format="FLAC")
    wav.unlink()
    _truncate(flac)
    assert sf.info(str(flac)).frames == len(audio)  # the header still promises every sample
    message = _setup_error(sv_copy, tmp_path)
    assert str(flac) in message and "truncated or corrupt" in message and "copy or export it again" in message


@pytest.mark.parametrize("rate", [8000, 44100])
@pytest.mark.parametrize("split", ["train", "dev"])
def test_utterance_at_another_sample_rate(sv_copy: Path, tmp_path: Path, split: str, rate: int) -> None:
    """WavLM takes 16 kHz input: a file at another rate is named with the resampling command."""
    wav = sv_copy / TRAIN_WAV if split == "train" else _dev_wav(sv_copy)
    audio, _ = sf.read(wav, dtype="float32")
    sf.write(wav, audio, rate)
    message = _setup_error(sv_copy, tmp_path)
    assert str(wav) in message and f"is {rate} Hz but 16000 Hz is expected" in message
    assert "sox in.wav -r 16000 out.wav" in message


def test_empty_utterance(sv_copy: Path, tmp_path: Path) -> None:
    wav = sv_copy / TRAIN_WAV
    sf.write(wav, np.zeros(0, dtype=np.float32), 16000)
    message = _setup_error(sv_copy, tmp_path)
    assert str(wav) in message and "empty (0 samples)" in message and "remove it from the corpus" in message


def test_utterance_that_is_not_audio(sv_copy: Path, tmp_path: Path) -> None:
    wav = _dev_wav(sv_copy)
    wav.write_bytes(b"<html>404 Not Found</html>")
    message = _setup_error(sv_copy, tmp_path)
    assert str(wav) in message and "cannot read audio file" in message and "ffmpeg" in message


def test_undecodable_m4a_utterance(sv_copy: Path, tmp_path: Path) -> None:
    m4a = sv_copy / "train" / "spk91" / "u900.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A ")
    message = _setup_error(sv_copy, tmp_path)
    assert str(m4a) in message and "cannot open compressed audio" in message and "ffmpeg -i" in message


def test_setup_succeeds_once_the_file_is_repaired(sv_copy: Path, tmp_path: Path) -> None:
    """A failed setup() leaves nothing half done: after the fix, the same objective sets up fully."""
    wav = sv_copy / TRAIN_WAV
    good = wav.read_bytes()
    _truncate(wav)
    objective = _objective(sv_copy, tmp_path)
    with pytest.raises(DataError, match="truncated"):
        objective.setup()
    wav.write_bytes(good)
    objective.setup()
    assert objective.data_summary["train"]["utterances"] == len(list((sv_copy / "train").rglob("*.wav")))


# ------------------------------------------------------------------------------------------- splits


def test_misspelled_train_split(sv_copy: Path, tmp_path: Path) -> None:
    message = _setup_error(sv_copy, tmp_path, train_split="trian")
    assert str(sv_copy / "trian") in message and "split folder not found" in message
    assert "holds dev, test, train, trials" in message and "<speaker_id>" in message


def test_empty_train_split(sv_copy: Path, tmp_path: Path) -> None:
    shutil.rmtree(sv_copy / "train")
    (sv_copy / "train").mkdir()
    message = _setup_error(sv_copy, tmp_path)
    assert str(sv_copy / "train") in message and "no audio files (.wav, .flac, .m4a, ...) found" in message
    assert "<root>/<split>/<speaker_id>/<utterance>.wav" in message


def test_train_split_with_one_speaker(sv_copy: Path, tmp_path: Path) -> None:
    for speaker in (sv_copy / "train").iterdir():
        if speaker.name != "spk90":
            shutil.rmtree(speaker)
    message = _setup_error(sv_copy, tmp_path)
    assert str(sv_copy / "train") in message and "(spk90)" in message and "at least 2 speakers" in message


def test_utterances_outside_speaker_folders(sv_copy: Path, tmp_path: Path) -> None:
    train = sv_copy / "train"
    for wav in sorted(train.rglob("*.wav")):
        wav.rename(train / f"{wav.parent.name}_{wav.name}")
    for speaker in [p for p in train.iterdir() if p.is_dir()]:
        speaker.rmdir()
    message = _setup_error(sv_copy, tmp_path)
    assert str(train) in message and "lie directly in the split folder" in message
    assert "folder named after the speaker" in message


# ------------------------------------------------------------------------------------------- trial list


def test_missing_dev_trial_list(sv_copy: Path, tmp_path: Path) -> None:
    message = _setup_error(sv_copy, tmp_path, dev_trials="trials/dev.tx")
    assert str(sv_copy / "trials" / "dev.tx") in message and "trial list not found" in message


def test_empty_dev_trial_list(sv_copy: Path, tmp_path: Path) -> None:
    trials = sv_copy / "trials" / "dev.txt"
    trials.write_text("\n")
    message = _setup_error(sv_copy, tmp_path)
    assert str(trials) in message and "holds no trials" in message and "'<label> <path1> <path2>'" in message


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1 dev/spk90_sp0.87/u000.wav", "expected 3 fields, got 2"),
        ("same dev/spk90_sp0.87/u000.wav dev/spk90_sp0.87/u001.wav", "label 'same' is not 0 or 1"),
        ("1,dev/spk90_sp0.87/u000.wav,dev/spk90_sp0.87/u001.wav", "expected 3 fields, got 1"),
        ("# label enroll test", "comment lines are not part of the trial-list format"),
    ],
)
def test_malformed_trial_line(sv_copy: Path, tmp_path: Path, line: str, reason: str) -> None:
    trials = _insert_trial(sv_copy, line)
    message = _setup_error(sv_copy, tmp_path)
    assert message.startswith(f"{trials}:3: ") and reason in message
    assert "delete this line" in message


def test_trial_line_with_paths_of_another_machine(sv_copy: Path, tmp_path: Path) -> None:
    trials = _insert_trial(sv_copy, "0 /data/kathbath/hindi/dev/a/1.wav dev/spk90_sp0.87/u000.wav", lineno=5)
    message = _setup_error(sv_copy, tmp_path)
    assert message.startswith(f"{trials}:5: audio file not found: /data/kathbath/hindi/dev/a/1.wav (first path)")
    assert f"relative to {sv_copy}" in message and "regenerate the list" in message


def test_trial_list_without_non_target_trials(sv_copy: Path, tmp_path: Path) -> None:
    trials = sv_copy / "trials" / "dev.txt"
    trials.write_text("".join(line + "\n" for line in trials.read_text().splitlines() if line.startswith("1 ")))
    message = _setup_error(sv_copy, tmp_path)
    assert str(trials) in message and "are target (label 1) trials" in message
    assert "Add non-target (label 0) trials" in message


# ------------------------------------------------------------------------------------------- options


def test_misspelled_option(sv_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _objective(sv_corpus, tmp_path, dev_trial="trials/dev.txt")
    message = str(info.value)
    assert "['dev_trial']" in message and "'wavlm_sv' (did you mean 'dev_trials'?)" in message


def test_missing_corpus_folder(tmp_path: Path) -> None:
    message = _setup_error(tmp_path / "kathbath", tmp_path)
    assert str(tmp_path / "kathbath") in message and "<root>/<train_split>/<speaker>/<utterance>.wav" in message


# ------------------------------------------------------------------------------------------- CLI


@pytest.mark.usefixtures("restore_logging")
def test_cli_run_on_a_corpus_with_a_truncated_file(
    sv_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.cli import main

    monkeypatch.chdir(tmp_path)
    wav = sv_copy / TRAIN_WAV
    _truncate(wav)
    study_file = tmp_path / "sv_study.py"
    study_file.write_text(
        "from tuner import StudySpec\n"
        "study = StudySpec(name='sv_bad', objective='wavlm_sv', "
        f"search_space={str(REPO / 'search_spaces' / 'wavlm_sv.yaml')!r},\n"
        f"                  options={TINY_SV_OPTIONS!r}, n_trials=1, max_epochs=1)\n",
        encoding="utf-8",
    )
    db = tmp_path / "x.db"
    with pytest.raises(SystemExit) as info:
        main(
            [
                "run",
                str(study_file),
                "--data",
                str(sv_copy),
                "--storage",
                f"sqlite:///{db}",
                "--workdir",
                str(tmp_path / "work"),
            ]
        )
    err = capsys.readouterr().err
    assert info.value.code == 2
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]  # the error is one line
    assert str(wav) in line and "truncated" in line
    assert "Traceback" not in err
    assert not db.exists()  # refused before the store was touched
