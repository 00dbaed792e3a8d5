"""Bad separation input (LibriMix / SpeechBrain CSVs and their audio) is refused in ``setup()``, naming the
CSV, its line and the file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, TINY_SEP_OPTIONS

from tuner.errors import DataError
from tuner.objectives.sepformer import SepFormerSeparation

pytestmark = pytest.mark.bad_input

TRAIN_CSV = Path("metadata") / "mixture_train_mix_both.csv"
DEV_CSV = Path("metadata") / "mixture_dev_mix_both.csv"
SPEECHBRAIN = {"train_csv": "speechbrain/train.csv", "dev_csv": "speechbrain/dev.csv"}


@pytest.fixture
def sep_copy(sep_corpus: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny separation corpus that a test may break."""
    return Path(shutil.copytree(sep_corpus, tmp_path / "corpus"))


def _objective(root: Path, tmp_path: Path, **options: object) -> SepFormerSeparation:
    return SepFormerSeparation(str(root), options={**TINY_SEP_OPTIONS, **options}, workdir=tmp_path / "work")


def _setup_error(root: Path, tmp_path: Path, **options: object) -> str:
    """The message of the DataError that ``setup()`` raises on the corpus at ``root``."""
    with pytest.raises(DataError) as info:
        _objective(root, tmp_path, **options).setup()
    return str(info.value)


def _row(csv: Path, line: int) -> dict[str, str]:
    """The CSV's record on ``line`` (1 = the header), as column -> value."""
    lines = csv.read_text().splitlines()
    return dict(zip(lines[0].split(","), lines[line - 1].split(",")))


def _file(csv: Path, line: int, column: str) -> Path:
    """The audio file that ``column`` of ``line`` names (relative paths are relative to the CSV's folder)."""
    return Path(os.path.normpath(csv.parent / _row(csv, line)[column]))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------------------------------- audio


def test_truncated_mixture(sep_copy: Path, tmp_path: Path) -> None:
    csv = sep_copy / TRAIN_CSV
    wav = _file(csv, 3, "mixture_path")
    _truncate(wav)
    message = _setup_error(sep_copy, tmp_path)
    assert message.startswith(
        f"{csv}:3: mixture '{_row(csv, 3)['mixture_ID']}': mixture: audio file {wav} is truncated"
    )
    assert "copy or export it again" in message
    assert "length column" not in message  # not mistaken for a wrong length in the CSV


def test_truncated_source_in_a_speechbrain_csv(sep_copy: Path, tmp_path: Path) -> None:
    csv = sep_copy / SPEECHBRAIN["dev_csv"]
    wav = _file(csv, 2, "s2_wav")
    _truncate(wav)
    message = _setup_error(sep_copy, tmp_path, **SPEECHBRAIN)
    assert message.startswith(f"{csv}:2: mixture '{_row(csv, 2)['ID']}': source 2: audio file {wav} is truncated")


def test_empty_noise_file(sep_copy: Path, tmp_path: Path) -> None:
    csv = sep_copy / DEV_CSV
    wav = _file(csv, 2, "noise_path")
    sf.write(wav, np.zeros(0, dtype=np.float32), 8000)
    message = _setup_error(sep_copy, tmp_path)
    assert message.startswith(f"{csv}:2: mixture '{_row(csv, 2)['mixture_ID']}': noise: audio file {wav} is empty")
    assert "remove it from the corpus" in message


def test_source_at_another_rate_than_the_corpus(sep_copy: Path, tmp_path: Path) -> None:
    """An 8 kHz corpus with one 16 kHz file: same length in samples, so only the rate tells."""
    csv = sep_copy / TRAIN_CSV
    wav = _file(csv, 4, "source_1_path")
    audio, _ = sf.read(wav, dtype="float32")
    sf.write(wav, audio, 16000, subtype="PCM_16")
    message = _setup_error(sep_copy, tmp_path)
    assert message.startswith(f"{csv}:4: mixture '{_row(csv, 4)['mixture_ID']}': source 1 file {wav} is 16000 Hz")
    assert "is 8000 Hz" in message and "all files of a corpus must share one sample rate" in message
    assert "sox in.wav -r 8000 out.wav" in message


def test_source_at_an_unsupported_rate(sep_copy: Path, tmp_path: Path) -> None:
    csv = sep_copy / TRAIN_CSV
    wav = _file(csv, 2, "mixture_path")
    audio, _ = sf.read(wav, dtype="float32")
    sf.write(wav, audio, 44100, subtype="PCM_16")
    message = _setup_error(sep_copy, tmp_path)
    assert message.startswith(f"{csv}:2: ") and str(wav) in message
    assert "44100 Hz but 8000 or 16000 Hz is supported" in message and "wav8k/wav16k" in message


def test_train_and_dev_at_different_rates(sep_copy: Path, tmp_path: Path) -> None:
    from tuner.data.demo import generate_separation_corpus

    other = generate_separation_corpus(
        tmp_path / "wav16k_corpus", seed=1, sample_rate=16000, n_train=2, n_dev=2, n_test=1, mixture_seconds=(1.0, 1.2)
    )
    dev_csv = other / DEV_CSV
    message = _setup_error(sep_copy, tmp_path, dev_csv=str(dev_csv))
    assert message.startswith(
        f"{dev_csv}: its mixtures are 16000 Hz but those of the train CSV {sep_copy / TRAIN_CSV} are 8000 Hz"
    )
    assert "options['dev_csv']" in message and "wav8k" in message


def test_train_and_dev_with_different_numbers_of_sources(sep_copy: Path, tmp_path: Path) -> None:
    """A dev list of three-source mixtures (the noise file stands in as a third source) for a two-source train list."""
    csv = sep_copy / DEV_CSV
    text = csv.read_text().replace("noise_path", "source_3_path", 1)
    csv.write_text(text)
    message = _setup_error(sep_copy, tmp_path)
    assert message.startswith(
        f"{csv}: its mixtures have 3 sources but those of the train CSV {sep_copy / TRAIN_CSV} have 2"
    )
    assert "same LibriMix variant" in message


def test_setup_succeeds_once_the_file_is_repaired(sep_copy: Path, tmp_path: Path) -> None:
    """A failed setup() leaves nothing half done: after the fix, the same objective sets up fully."""
    wav = _file(sep_copy / DEV_CSV, 2, "source_1_path")
    good = wav.read_bytes()
    _truncate(wav)
    objective = _objective(sep_copy, tmp_path)
    with pytest.raises(DataError, match="truncated"):
        objective.setup()
    wav.write_bytes(good)
    objective.setup()
    assert objective.data_summary["dev"]["mixtures"] == 3 and objective.data_summary["train"]["sample_rate"] == 8000


# ------------------------------------------------------------------------------------------- CSVs


def test_misspelled_train_csv_option(sep_copy: Path, tmp_path: Path) -> None:
    message = _setup_error(sep_copy, tmp_path, train_csv="metadata/mixture_train_mix_bth.csv")
    assert str(sep_copy / "metadata" / "mixture_train_mix_bth.csv") in message and "train CSV not found" in message
    assert "options['train_csv']" in message


@pytest.mark.parametrize(("text", "why"), [("", "the CSV is empty"), (None, "has a header but no mixtures")])
def test_empty_split(sep_copy: Path, tmp_path: Path, text: str | None, why: str) -> None:
    csv = sep_copy / TRAIN_CSV
    csv.write_text(csv.read_text().splitlines()[0] + "\n" if text is None else text)
    message = _setup_error(sep_copy, tmp_path)
    assert message.startswith(f"{csv}: ") and why in message


def test_empty_split_in_a_speechbrain_csv(sep_copy: Path, tmp_path: Path) -> None:
    csv = sep_copy / SPEECHBRAIN["dev_csv"]
    csv.write_text(csv.read_text().splitlines()[0] + "\n\n")
    message = _setup_error(sep_copy, tmp_path, **SPEECHBRAIN)
    assert message.startswith(f"{csv}: the CSV has a header but no mixtures") and "add one row per mixture" in message


def test_row_with_missing_fields(sep_copy: Path, tmp_path: Path) -> None:
    csv = sep_copy / TRAIN_CSV
    lines = csv.read_text().splitlines()
    lines[2] = ",".join(lines[2].split(",")[:3])
    csv.write_text("\n".join(lines) + "\n")
    message = _setup_error(sep_copy, tmp_path)
    assert message.startswith(f"{csv}:3: expected 6 comma-separated fields") and "got 3" in message
    assert "fix or delete this row" in message


def test_row_with_a_length_in_seconds(sep_copy: Path, tmp_path: Path) -> None:
    csv = sep_copy / DEV_CSV
    lines = csv.read_text().splitlines()
    fields = lines[1].split(",")
    fields[-1] = "2.56"
    lines[1] = ",".join(fields)
    csv.write_text("\n".join(lines) + "\n")
    message = _setup_error(sep_copy, tmp_path)
    assert message.startswith(
        f"{csv}:2: mixture '{fields[0]}': length '2.56' is not a positive whole number of samples"
    )


def test_row_with_absolute_paths_of_another_machine(sep_copy: Path, tmp_path: Path) -> None:
    csv = sep_copy / SPEECHBRAIN["train_csv"]
    lines = csv.read_text().splitlines()
    fields = lines[2].split(",")
    fields[2] = "/data/LibriMix/Libri2Mix/wav8k/min/train-360/mix_both/x.wav"
    lines[2] = ",".join(fields)
    csv.write_text("\n".join(lines) + "\n")
    message = _setup_error(sep_copy, tmp_path, **SPEECHBRAIN)
    assert message.startswith(f"{csv}:3: mixture '{fields[0]}': mix_wav file not found: {fields[2]}")
    assert "written on another machine? Rewrite its prefix or regenerate the CSV" in message


def test_mixing_parameters_file_instead_of_the_mixture_list(sep_copy: Path, tmp_path: Path) -> None:
    csv = sep_copy / "metadata" / "libri2mix_dev.csv"
    csv.write_text(
        "mixture_ID,source_1_path,source_1_gain,source_2_path,source_2_gain,noise_path,noise_gain\n"
        "a_b,dev/a.flac,0.5,dev/b.flac,0.4,noise/n.wav,0.1\n"
    )
    message = _setup_error(sep_copy, tmp_path, dev_csv="metadata/libri2mix_dev.csv")
    assert message.startswith(f"{csv}: unknown separation CSV header") and "mixing-parameters file" in message
    assert "mixture_<split>_mix_both.csv" in message


def test_missing_corpus_folder(tmp_path: Path) -> None:
    message = _setup_error(tmp_path / "Libri2Mix" / "wav8k" / "min", tmp_path)
    assert message.startswith(f"sepformer_separation data not found: {tmp_path / 'Libri2Mix' / 'wav8k' / 'min'}")
    assert "metadata/mixture_*_mix_both.csv" in message


# ------------------------------------------------------------------------------------------- CLI


@pytest.mark.usefixtures("restore_logging")
def test_cli_run_on_a_csv_row_pointing_nowhere(
    sep_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.cli import main

    monkeypatch.chdir(tmp_path)
    csv = sep_copy / DEV_CSV
    missing = _file(csv, 3, "source_2_path")
    missing.unlink()
    study_file = tmp_path / "sep_study.py"
    study_file.write_text(
        "from tuner import StudySpec\n"
        f"study = StudySpec(name='sep_bad', objective='sepformer_separation',\n"
        f"                  search_space={str(REPO / 'search_spaces' / 'sepformer.yaml')!r},\n"
        f"                  options={TINY_SEP_OPTIONS!r}, n_trials=1, max_epochs=1)\n",
        encoding="utf-8",
    )
    db = tmp_path / "x.db"
    with pytest.raises(SystemExit) as info:
        main(
            [
                "run",
                str(study_file),
                "--data",
                str(sep_copy),
                "--storage",
                f"sqlite:///{db}",
                "--workdir",
                str(tmp_path / "work"),
            ]
        )
    err = capsys.readouterr().err
    assert info.value.code == 2
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]  # the error is one line
    assert line.startswith(f"error: {csv}:3: ") and f"source_2_path file not found: {missing}" in line
    assert "Traceback" not in err
    assert not db.exists()  # refused before the store was touched
