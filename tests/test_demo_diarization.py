"""Tests of the RTTM/UEM readers and of the demo diarization corpus generator."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tuner.data.annotations import Turn, read_rttm, read_uem, write_rttm, write_uem
from tuner.data.demo import (
    EVAL_FACTORS,
    PROTOCOL,
    TRAIN_FACTORS,
    build_speaker_pool,
    ensure_diarization_corpus,
    generate_diarization_corpus,
    load_sample,
    perturb,
    speaker_segments,
)
from tuner.errors import DataError

SMALL = dict(n_train=2, n_dev=1, n_test=1, file_duration=15.0)
SPLITS = {"train": 2, "dev": 1, "test": 1}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _turns(root: Path, split: str) -> list[Turn]:
    return [t for f in sorted((root / split / "rttm").glob("*.rttm")) for t in read_rttm(f)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_diarization_corpus(tmp_path_factory.mktemp("demo") / "corpus", seed=0, **SMALL)


# ------------------------------------------------------------------------------------ generation


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path, corpus: Path) -> None:
    again = _files(generate_diarization_corpus(tmp_path / "again", seed=0, **SMALL))
    reference = _files(corpus)
    assert again.keys() == reference.keys()
    assert all(again[name] == reference[name] for name in reference)
    other = _files(generate_diarization_corpus(tmp_path / "other", seed=1, **SMALL))
    assert other.keys() == reference.keys()
    assert other["train/wav/demo_train_000.wav"] != reference["train/wav/demo_train_000.wav"]
    assert other["train/rttm/demo_train_000.rttm"] != reference["train/rttm/demo_train_000.rttm"]


def test_layout_and_counts(corpus: Path) -> None:
    for name in ("database.yml", "README.md", "corpus.json"):
        assert (corpus / name).is_file()
    for split, n in SPLITS.items():
        uris = (corpus / f"{split}.txt").read_text().split()
        assert uris == [f"demo_{split}_{i:03d}" for i in range(n)]
        for sub in ("wav", "rttm", "uem"):
            assert sorted(p.stem for p in (corpus / split / sub).iterdir()) == uris
        for uri in uris:
            info = sf.info(str(corpus / split / "wav" / f"{uri}.wav"))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.frames == 15 * 16000
    marker = json.loads((corpus / "corpus.json").read_text())
    assert marker["params"]["seed"] == 0 and marker["params"]["n_train"] == 2
    assert not [p for p in corpus.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_rttm_and_uem_round_trip(corpus: Path, tmp_path: Path) -> None:
    for split in SPLITS:
        for rttm in sorted((corpus / split / "rttm").glob("*.rttm")):
            copy = tmp_path / rttm.name
            write_rttm(copy, read_rttm(rttm))
            assert copy.read_bytes() == rttm.read_bytes()
            uem = corpus / split / "uem" / f"{rttm.stem}.uem"
            assert read_uem(uem) == [(rttm.stem, 0.0, 15.0)]
            copy = tmp_path / uem.name
            write_uem(copy, rttm.stem, 0.0, 15.0)
            assert copy.read_bytes() == uem.read_bytes()


def test_turns_lie_within_files_and_match_the_audio(corpus: Path) -> None:
    for split in SPLITS:
        for wav in sorted((corpus / split / "wav").glob("*.wav")):
            audio, sr = sf.read(str(wav))
            duration = len(audio) / sr
            turns = read_rttm(corpus / split / "rttm" / f"{wav.stem}.rttm")
            assert len(turns) >= 2 and len({t.speaker for t in turns}) >= 2
            for t in turns:
                assert t.uri == wav.stem
                assert t.start >= 0 and t.end <= duration
                assert 1.0 <= t.duration <= 6.0
            # speech is far louder than the -45 dBFS noise floor, which is all there is outside turns
            speech = np.zeros(len(audio), dtype=bool)
            for t in turns:
                speech[round(t.start * sr) : round(t.end * sr)] = True
            rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
            assert rms(audio[~speech]) < 10 ** (-40 / 20) and rms(audio[speech]) > 10 ** (-35 / 20)


def test_corpus_contains_overlaps_but_no_self_overlap(corpus: Path) -> None:
    overlaps = 0
    for split in SPLITS:
        for rttm in sorted((corpus / split / "rttm").glob("*.rttm")):
            turns = read_rttm(rttm)
            for i, a in enumerate(turns):
                for b in turns[i + 1 :]:
                    if b.start < a.end and a.start < b.end:
                        assert a.speaker != b.speaker
                        overlaps += 1
    assert overlaps >= 1


def test_dev_and_test_speakers_are_unseen_in_train(corpus: Path) -> None:
    train = {t.speaker for t in _turns(corpus, "train")}
    evaluation = {t.speaker for split in ("dev", "test") for t in _turns(corpus, split)}
    assert train and evaluation and not train & evaluation
    train_ids = set(build_speaker_pool(TRAIN_FACTORS))
    eval_ids = set(build_speaker_pool(EVAL_FACTORS, include_original=False))
    assert train <= train_ids and evaluation <= eval_ids and not train_ids & eval_ids


def test_database_yml_loads_with_pyannote_database(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyannote.database import FileFinder
    from pyannote.database.registry import Registry

    monkeypatch.chdir(tmp_path)  # relative paths must resolve against the yml, not the working directory
    registry = Registry()
    registry.load_database(corpus / "database.yml")
    protocol = registry.get_protocol(PROTOCOL, preprocessors={"audio": FileFinder(registry=registry)})
    for subset, split in (("train", "train"), ("development", "dev"), ("test", "test")):
        files = list(getattr(protocol, subset)())
        assert [f["uri"] for f in files] == (corpus / f"{split}.txt").read_text().split()
        for f in files:
            assert Path(f["audio"]).resolve() == (corpus / split / "wav" / f"{f['uri']}.wav").resolve()
            expected = sorted(
                (round(t.start, 3), round(t.end, 3), t.speaker)
                for t in read_rttm(corpus / split / "rttm" / f"{f['uri']}.rttm")
            )
            got = sorted(
                (round(s.start, 3), round(s.end, 3), label)
                for s, _, label in f["annotation"].itertracks(yield_label=True)
            )
            assert got == expected
            assert [(s.start, s.end) for s in f["annotated"]] == [(0.0, 15.0)]


def test_ensure_reuses_complete_corpus_and_regenerates_otherwise(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    assert ensure_diarization_corpus(out, seed=3, **SMALL) == out
    wav = out / "train" / "wav" / "demo_train_000.wav"
    stamps = {p: p.stat().st_mtime_ns for p in (wav, out / "corpus.json")}
    ensure_diarization_corpus(out, seed=3, **SMALL)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    ensure_diarization_corpus(out, seed=3, **{**SMALL, "n_train": 3})
    assert (out / "train.txt").read_text().split() == ["demo_train_000", "demo_train_001", "demo_train_002"]
    assert json.loads((out / "corpus.json").read_text())["params"]["n_train"] == 3

    wav.unlink()  # an incomplete corpus is regenerated too
    ensure_diarization_corpus(out, seed=3, **{**SMALL, "n_train": 3})
    assert wav.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_generation_refuses_to_overwrite_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(DataError, match="refusing to overwrite"):
        generate_diarization_corpus(tmp_path, **SMALL)
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_one_info_line_per_split(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tuner.data.demo.diarization"):
        generate_diarization_corpus(tmp_path / "c", **SMALL)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(lines) == 3
    assert [split for split in SPLITS if any(f"{split} split" in line for line in lines)] == list(SPLITS)


# ------------------------------------------------------------------------------------ speakers


def test_speaker_material() -> None:
    waveform, sr, turns = load_sample()
    assert waveform.dtype == np.float32 and sr == 16000 and len(waveform) == 30 * sr
    assert {t.speaker for t in turns} == {"speaker90", "speaker91"}
    segments = speaker_segments(waveform, sr, turns)
    assert sorted(segments) == ["spk90", "spk91"]
    for spk, pieces in segments.items():
        assert all(len(p) >= 0.3 * sr for p in pieces)
        annotated = sum(t.duration for t in turns if t.speaker == "speaker" + spk[3:])
        assert sum(len(p) for p in pieces) / sr < annotated  # overlapped stretches are removed
    piece = segments["spk90"][0]
    assert len(perturb(piece, sr, 0.85)) == pytest.approx(len(piece) / 0.85, abs=2)
    assert len(perturb(piece, sr, 1.16)) == pytest.approx(len(piece) / 1.16, abs=2)
    pool = build_speaker_pool((0.9,))
    assert sorted(pool) == ["spk90", "spk90_sp0.90", "spk91", "spk91_sp0.90"]


# ------------------------------------------------------------------------------------ parsers

GOOD_RTTM = "\nSPKR-INFO f 1 <NA> <NA> <NA> unknown spk <NA> <NA>\nSPEAKER f 1 6.690 0.430 <NA> <NA> s1 <NA> <NA>\n"


def test_read_rttm_accepts_blank_lines_and_other_types(tmp_path: Path) -> None:
    path = tmp_path / "ok.rttm"
    path.write_text(GOOD_RTTM)
    assert read_rttm(path) == [Turn("f", 6.69, 0.43, "s1")]
    assert read_rttm(path)[0].end == pytest.approx(7.12)


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("SPEAKER f 1 abc 0.430 <NA> <NA> s1 <NA> <NA>", "not a number"),
        ("SPEAKER f 1 6.690 0.430 <NA> <NA>", "at least 8 fields"),
        ("SPEAKER f 1 6.690 -0.5 <NA> <NA> s1 <NA> <NA>", "not positive"),
        ("SPEAKER f 1 6.690 0 <NA> <NA> s1 <NA> <NA>", "not positive"),
        ("SPEAKER f 1 -1.0 0.430 <NA> <NA> s1 <NA> <NA>", "negative"),
        ("SPEAKER f 1 nan 0.430 <NA> <NA> s1 <NA> <NA>", "finite"),
        ("SPEAKR f 1 6.690 0.430 <NA> <NA> s1 <NA> <NA>", "record type"),
        ("# a comment", "comment lines"),
        ("SPEAKER f 1 6.690 0.430 <NA> <NA> s1 <NA> <NA> extra", "at most 10 fields"),
    ],
)
def test_read_rttm_rejects_malformed_lines(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "bad.rttm"
    path.write_text(GOOD_RTTM + line + "\n")
    with pytest.raises(DataError) as info:
        read_rttm(path)
    message = str(info.value)
    assert message.startswith(f"{path}:4: malformed RTTM line {line!r}")
    assert reason in message and "fix or delete this line" in message


@pytest.mark.bad_input
def test_read_missing_files(tmp_path: Path) -> None:
    for reader in (read_rttm, read_uem):
        with pytest.raises(DataError, match="not found") as info:
            reader(tmp_path / "missing.txt")
        assert str(tmp_path / "missing.txt") in str(info.value)


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("f 1 0.0", "expected 4 fields"),
        ("f 1 0.0 10.0 extra", "expected 4 fields"),
        ("f 1 zero 10.0", "not a number"),
        ("f 1 -1.0 10.0", "negative"),
        ("f 1 10.0 10.0", "not after start"),
        ("f 1 0.0 inf", "finite"),
        ("# reviewed", "comment lines"),
    ],
)
def test_read_uem_rejects_malformed_lines(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "bad.uem"
    path.write_text("\nf 1 0.000 40.000\n" + line + "\n")
    with pytest.raises(DataError) as info:
        read_uem(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: malformed UEM line {line!r}")
    assert reason in message and "fix or delete this line" in message
