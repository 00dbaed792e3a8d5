"""Tests of the separation corpus reader (LibriMix / SpeechBrain CSVs) and the demo separation corpus."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tuner.data.demo import ensure_separation_corpus, generate_separation_corpus
from tuner.data.demo.separation import speaker_of
from tuner.data.separation import (
    Mixture,
    check_mixtures,
    load_mixture,
    random_segment,
    read_mixture_csv,
)
from tuner.errors import DataError

SMALL = dict(n_train=4, n_dev=2, n_test=2, mixture_seconds=(1.0, 1.5))
LIBRIMIX = "mixture_ID,mixture_path,source_1_path,source_2_path,noise_path,length\n"
SPEECHBRAIN = (
    "ID,duration,mix_wav,mix_wav_format,mix_wav_opts,s1_wav,s1_wav_format,s1_wav_opts,"
    "s2_wav,s2_wav_format,s2_wav_opts,noise_wav,noise_wav_format,noise_wav_opts\n"
)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _speakers(mixtures: list[Mixture]) -> set[str]:
    return {speaker_of(utterance) for m in mixtures for utterance in m.id.split("_")}


@pytest.fixture(scope="module")
def timed_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The default demo corpus, and the seconds its generation took."""
    start = time.perf_counter()
    root = generate_separation_corpus(tmp_path_factory.mktemp("separation") / "corpus", seed=0)
    return root, time.perf_counter() - start


@pytest.fixture(scope="module")
def corpus(timed_corpus: tuple[Path, float]) -> Path:
    return timed_corpus[0]


def _wav(path: Path, samples: int, sample_rate: int = 8000, seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.random.default_rng(seed).uniform(-0.1, 0.1, samples).astype(np.float32)
    sf.write(path, audio, sample_rate, subtype="PCM_16")
    return path.name


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A hand-made LibriMix-style corpus of 2 mixtures (800 samples at 8 kHz): its CSV, which a test may break."""
    for folder in ("mix", "s1", "s2", "noise"):
        for i, name in enumerate(("a_b", "c_d")):
            _wav(tmp_path / folder / f"{name}.wav", 800, seed=i)
    rows = "".join(f"{n},mix/{n}.wav,s1/{n}.wav,s2/{n}.wav,noise/{n}.wav,800\n" for n in ("a_b", "c_d"))
    (tmp_path / "mixtures.csv").write_text(LIBRIMIX + rows, encoding="utf-8")
    return tmp_path / "mixtures.csv"


# ------------------------------------------------------------------------------------- demo corpus


def test_demo_corpus_layout_size_and_speed(timed_corpus: tuple[Path, float]) -> None:
    root, seconds = timed_corpus
    assert seconds < 10
    for split, n in (("train", 48), ("dev", 12), ("test", 12)):
        for folder in ("mix_both", "s1", "s2", "noise"):
            assert len(list((root / "wav8k" / "min" / split / folder).glob("*.wav"))) == n
        assert (root / "metadata" / f"mixture_{split}_mix_both.csv").is_file()
        assert (root / "speechbrain" / f"{split}.csv").is_file()
    assert sum(len(b) for b in _files(root).values()) < 20e6
    marker = json.loads((root / "corpus.json").read_text())
    assert marker["params"]["kind"] == "tuner-demo-separation"
    assert marker["stats"]["train"]["mixtures"] == 48
    assert (root / "README.md").read_text().startswith("# tuner demo separation corpus")


def test_both_csv_formats_read_the_same_mixtures(corpus: Path) -> None:
    for split in ("train", "dev", "test"):
        librimix = read_mixture_csv(corpus / "metadata" / f"mixture_{split}_mix_both.csv")
        speechbrain = read_mixture_csv(corpus / "speechbrain" / f"{split}.csv")
        assert all(m.length is not None and m.length > 0 for m in librimix)
        assert all(m.length is None for m in speechbrain)  # SpeechBrain's duration is not a checked length
        assert [dataclasses.replace(m, length=None) for m in librimix] == speechbrain
        m = librimix[0]
        assert m.mixture == corpus / "wav8k" / "min" / split / "mix_both" / f"{m.id}.wav"
        assert m.sources == tuple(corpus / "wav8k" / "min" / split / f"s{k}" / f"{m.id}.wav" for k in (1, 2))
        assert m.noise == corpus / "wav8k" / "min" / split / "noise" / f"{m.id}.wav"
        assert len(m.id.split("_")) == 2


def test_check_mixtures_summary(corpus: Path) -> None:
    csv_path = corpus / "metadata" / "mixture_dev_mix_both.csv"
    summary = check_mixtures(read_mixture_csv(csv_path), csv_path, expected_sample_rate=8000)
    assert summary["mixtures"] == 12 and summary["sources"] == 2 and summary["sample_rate"] == 8000
    assert 12 * 2.5 / 3600 <= summary["hours"] <= 12 * 4.0 / 3600
    with pytest.raises(DataError, match="16000 Hz is expected"):
        check_mixtures(read_mixture_csv(csv_path), csv_path, expected_sample_rate=16000)


def test_mixture_is_exactly_the_sum_of_its_parts(corpus: Path) -> None:
    mixtures = read_mixture_csv(corpus / "metadata" / "mixture_train_mix_both.csv")
    for m in mixtures[:12]:
        mix, sources, sample_rate = load_mixture(m)
        noise, _ = sf.read(m.noise, dtype="float32")
        assert sample_rate == 8000 and mix.dtype == sources.dtype == np.float32
        assert sources.shape == (2, len(mix)) == (2, m.length)
        np.testing.assert_allclose(mix, sources.sum(axis=0) + noise, atol=1e-6)
        assert np.max(np.abs(mix)) <= 0.9 + 1e-4
        assert min(np.sqrt(np.mean(s**2)) for s in sources) > 0.01  # speech at -30 to -20 dBFS, not silence


def test_dev_and_test_speakers_are_not_train_speakers(corpus: Path) -> None:
    train, dev, test = (
        _speakers(read_mixture_csv(corpus / "speechbrain" / f"{split}.csv")) for split in ("train", "dev", "test")
    )
    assert len(train) > 6 and len(dev) >= 3 and len(test) >= 3
    assert not train & dev and not train & test and not dev & test
    for m in read_mixture_csv(corpus / "speechbrain" / "train.csv"):
        first, second = (speaker_of(u).split("-")[0] for u in m.id.split("_"))
        assert first != second  # the two sources come from different real speakers


def test_generation_is_deterministic_and_ensure_reuses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = generate_separation_corpus(tmp_path / "a", seed=3, **SMALL)
    b = ensure_separation_corpus(tmp_path / "b", seed=3, **SMALL)
    assert _files(a) == _files(b)
    assert _files(a) != _files(generate_separation_corpus(tmp_path / "c", seed=4, **SMALL))
    stamp = (b / "corpus.json").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="tuner.data.demo.separation"):
        assert ensure_separation_corpus(tmp_path / "b", seed=3, **SMALL) == b
    assert "reusing" in caplog.text and (b / "corpus.json").stat().st_mtime_ns == stamp
    next((b / "wav8k").rglob("*.wav")).unlink()  # an incomplete corpus is regenerated
    ensure_separation_corpus(tmp_path / "b", seed=3, **SMALL)
    assert _files(a) == _files(b)
    moved = shutil.move(str(b), tmp_path / "moved")  # paths are relative: the corpus can move
    assert len(read_mixture_csv(Path(moved) / "metadata" / "mixture_train_mix_both.csv")) == 4


def test_16khz_generation(tmp_path: Path) -> None:
    root = generate_separation_corpus(tmp_path / "c16", seed=0, sample_rate=16000, **SMALL)
    csv_path = root / "speechbrain" / "test.csv"
    mixtures = read_mixture_csv(csv_path)
    assert all("/wav16k/min/test/" in m.mixture.as_posix() for m in mixtures)
    assert check_mixtures(mixtures, csv_path)["sample_rate"] == 16000
    mix, _sources, sample_rate = load_mixture(mixtures[0])
    assert sample_rate == 16000 and 16000 <= len(mix) <= 24000


def test_invalid_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        generate_separation_corpus(tmp_path / "x", sample_rate=22050)
    with pytest.raises(ValueError, match="mixture_seconds"):
        generate_separation_corpus(tmp_path / "x", mixture_seconds=(3.0, 2.0))
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------ reader


def test_hand_made_speechbrain_csv_with_format_columns(tmp_path: Path, tiny: Path) -> None:
    rows = "".join(
        f"{i},1.0,{tiny.parent}/mix/{n}.wav,wav,,s1/{n}.wav,wav,,s2/{n}.wav,wav,,,wav,\n"
        for i, n in enumerate(("a_b", "c_d"))
    )
    (tmp_path / "sb.csv").write_text(SPEECHBRAIN + rows, encoding="utf-8")
    mixtures = read_mixture_csv(tmp_path / "sb.csv")
    assert [m.id for m in mixtures] == ["0", "1"] and all(m.noise is None for m in mixtures)
    assert mixtures[1].sources[1] == tiny.parent / "s2" / "c_d.wav"
    assert check_mixtures(mixtures, tmp_path / "sb.csv") == {
        "mixtures": 2,
        "sources": 2,
        "sample_rate": 8000,
        "hours": 1600 / 8000 / 3600,
    }


@pytest.mark.bad_input
def test_root_overrides_the_csv_folder(tmp_path: Path, tiny: Path) -> None:
    elsewhere = tmp_path / "lists" / "m.csv"
    elsewhere.parent.mkdir()
    shutil.copy(tiny, elsewhere)
    with pytest.raises(DataError, match="not found"):
        read_mixture_csv(elsewhere)
    assert len(read_mixture_csv(elsewhere, root=tiny.parent)) == 2


@pytest.mark.bad_input
def test_unknown_header(tiny: Path) -> None:
    tiny.write_text("mixture_ID,source_1_path,source_1_gain,source_2_path,source_2_gain\nx,a,1,b,1\n")
    with pytest.raises(DataError) as error:
        read_mixture_csv(tiny)
    message = str(error.value)
    assert str(tiny) in message and "mixture_ID,mixture_path,source_1_path" in message
    assert "ID,duration,mix_wav,s1_wav,s2_wav" in message and "mixing-parameters" in message


@pytest.mark.bad_input
def test_missing_source_file(tiny: Path) -> None:
    (tiny.parent / "s2" / "c_d.wav").unlink()
    with pytest.raises(DataError) as error:
        read_mixture_csv(tiny)
    message = str(error.value)
    assert f"{tiny}:3" in message and "'c_d'" in message and "source_2_path" in message
    assert str(tiny.parent / "s2" / "c_d.wav") in message


@pytest.mark.bad_input
def test_lengths_that_disagree(tiny: Path) -> None:
    _wav(tiny.parent / "s1" / "c_d.wav", 700)
    with pytest.raises(DataError) as error:
        check_mixtures(read_mixture_csv(tiny), tiny)
    message = str(error.value)
    assert f"{tiny}:3" in message and "'c_d'" in message and "700" in message and "800" in message
    assert str(tiny.parent / "s1" / "c_d.wav") in message
    tiny.write_text(LIBRIMIX + "a_b,mix/a_b.wav,s1/a_b.wav,s2/a_b.wav,noise/a_b.wav,801\n")
    with pytest.raises(DataError, match=r"800 samples but the CSV gives length 801"):
        check_mixtures(read_mixture_csv(tiny), tiny)


@pytest.mark.bad_input
def test_unsupported_sample_rate(tiny: Path) -> None:
    _wav(tiny.parent / "noise" / "a_b.wav", 800, sample_rate=22050)
    with pytest.raises(DataError) as error:
        check_mixtures(read_mixture_csv(tiny), tiny)
    message = str(error.value)
    assert f"{tiny}:2" in message and "22050 Hz" in message and "noise/a_b.wav" in message
    assert "sox in.wav -r 8000 out.wav" in message


@pytest.mark.bad_input
def test_mixed_sample_rates_and_stereo(tiny: Path) -> None:
    for folder in ("mix", "s1", "s2", "noise"):
        _wav(tiny.parent / folder / "c_d.wav", 800, sample_rate=16000)
    with pytest.raises(DataError, match=r":3: .* is 16000 Hz but .* is 8000 Hz"):
        check_mixtures(read_mixture_csv(tiny), tiny)
    sf.write(tiny.parent / "s1" / "a_b.wav", np.zeros((800, 2), np.float32), 8000, subtype="PCM_16")
    with pytest.raises(DataError, match="2 channels"):
        check_mixtures(read_mixture_csv(tiny), tiny)


@pytest.mark.bad_input
@pytest.mark.parametrize("length", ["abc", "12.5", "0", ""])
def test_non_numeric_length(tiny: Path, length: str) -> None:
    tiny.write_text(LIBRIMIX + f"a_b,mix/a_b.wav,s1/a_b.wav,s2/a_b.wav,noise/a_b.wav,{length}\n")
    expected = f"{tiny}:2: mixture 'a_b': length '{length}' is not a positive whole number"
    with pytest.raises(DataError, match=re.escape(expected)):
        read_mixture_csv(tiny)


@pytest.mark.bad_input
@pytest.mark.parametrize("text", ["", "\n\n", LIBRIMIX])
def test_empty_csv(tiny: Path, text: str) -> None:
    tiny.write_text(text)
    with pytest.raises(DataError, match=re.escape(str(tiny))):
        read_mixture_csv(tiny)


@pytest.mark.bad_input
def test_malformed_rows(tiny: Path) -> None:
    lines = tiny.read_text().splitlines(keepends=True)
    tiny.write_text(lines[0] + lines[1] + "\n" + "c_d,mix/c_d.wav,s1/c_d.wav\n")
    with pytest.raises(DataError, match=re.escape(f"{tiny}:4: expected 6 comma-separated fields") + ".* got 3"):
        read_mixture_csv(tiny)
    tiny.write_text(lines[0] + lines[1] + lines[1])
    with pytest.raises(DataError, match="already used on line 2"):
        read_mixture_csv(tiny)
    with pytest.raises(DataError, match="not found"):
        read_mixture_csv(tiny.parent / "nope.csv")


@pytest.mark.bad_input
def test_inconsistent_number_of_sources(tmp_path: Path, tiny: Path) -> None:
    _wav(tiny.parent / "s3" / "a_b.wav", 800)
    header = "mixture_ID,mixture_path,source_1_path,source_2_path,source_3_path,length\n"
    tiny.write_text(
        header
        + "a_b,mix/a_b.wav,s1/a_b.wav,s2/a_b.wav,s3/a_b.wav,800\n"
        + "c_d,mix/c_d.wav,s1/c_d.wav,s2/c_d.wav,,800\n"
    )
    expected = f"{tiny}:3: mixture 'c_d' has 2 sources but the row on line 2 has 3"
    with pytest.raises(DataError, match=re.escape(expected)):
        read_mixture_csv(tiny)
    tiny.write_text(header + "a_b,mix/a_b.wav,s1/a_b.wav,s2/a_b.wav,s3/a_b.wav,800\n")
    assert read_mixture_csv(tiny)[0].noise is None and len(read_mixture_csv(tiny)[0].sources) == 3


def test_random_segment() -> None:
    rng = np.random.default_rng(0)
    mix = np.arange(100, dtype=np.float32)
    sources = np.stack([mix * 2, mix * 3])
    seg_mix, seg_sources = random_segment(mix, sources, 10, rng)
    assert seg_mix.shape == (10,) and seg_sources.shape == (2, 10)
    np.testing.assert_array_equal(seg_sources, np.stack([seg_mix * 2, seg_mix * 3]))
    assert np.all(np.diff(seg_mix) == 1)
    padded_mix, padded_sources = random_segment(mix[:5], sources[:, :5], 8, rng)
    np.testing.assert_array_equal(padded_mix, [0, 1, 2, 3, 4, 0, 0, 0])
    assert padded_sources.shape == (2, 8) and padded_sources[1, 4] == 12 and padded_sources[1, 5] == 0
    with pytest.raises(ValueError):
        random_segment(mix, sources[:, :50], 10, rng)
