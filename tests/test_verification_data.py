"""Tests of the speaker-verification corpus readers, sampler, and demo verification corpus generator."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tuner.data.demo import ensure_verification_corpus, generate_verification_corpus
from tuner.data.demo.verification import DEV_FACTORS, TEST_FACTORS, TRAIN_FACTORS
from tuner.data.verification import (
    SpeakerBatchSampler,
    Trial,
    Utterance,
    random_crop,
    read_trials,
    scan_speakers,
    validate_audio,
)
from tuner.errors import DataError

SMALL = dict(
    train_factors=(0.9, 1.1),
    eval_factors=((0.85,), (1.15,)),
    utterances_per_speaker=3,
    utterance_seconds=(1.0, 1.5),
    n_dev_trials=6,
    n_test_trials=4,
)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def timed_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The default demo corpus, and the seconds its generation took."""
    start = time.perf_counter()
    root = generate_verification_corpus(tmp_path_factory.mktemp("verification") / "corpus", seed=0)
    return root, time.perf_counter() - start


@pytest.fixture(scope="module")
def corpus(timed_corpus: tuple[Path, float]) -> Path:
    return timed_corpus[0]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A hand-made 2-speaker corpus that a test may break."""
    root = tmp_path / "tiny"
    for spk in ("a", "b"):
        for i in range(2):
            path = root / "dev" / spk / f"{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, np.zeros(1600, dtype=np.float32), 16000, subtype="PCM_16")
    return root


# ------------------------------------------------------------------------------------ generation


def test_default_corpus_layout_and_generation_time(timed_corpus: tuple[Path, float]) -> None:
    root, seconds = timed_corpus
    assert seconds < 20.0
    for name in ("README.md", "corpus.json", "trials/dev.txt", "trials/test.txt"):
        assert (root / name).is_file()
    marker = json.loads((root / "corpus.json").read_text())
    assert marker["params"]["kind"] == "tuner-demo-verification" and marker["params"]["seed"] == 0
    assert marker["stats"]["dev"]["target_trials"] == marker["stats"]["dev"]["nontarget_trials"] == 60
    info = sf.info(str(root / "dev" / "spk90_sp0.87" / "u003.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert 1.5 <= info.duration <= 3.0
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path, corpus: Path) -> None:
    again = _files(generate_verification_corpus(tmp_path / "again", seed=0))
    reference = _files(corpus)
    assert again.keys() == reference.keys()
    assert all(again[name] == reference[name] for name in reference)
    small = _files(generate_verification_corpus(tmp_path / "small0", seed=0, **SMALL))
    other = _files(generate_verification_corpus(tmp_path / "small1", seed=1, **SMALL))
    assert other.keys() == small.keys()
    assert other["train/spk90/u000.wav"] != small["train/spk90/u000.wav"]
    assert other["trials/dev.txt"] != small["trials/dev.txt"]


def test_ensure_reuses_complete_corpus_and_regenerates_otherwise(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    assert ensure_verification_corpus(out, seed=2, **SMALL) == out
    wav = out / "train" / "spk90" / "u000.wav"
    stamps = {p: p.stat().st_mtime_ns for p in (wav, out / "corpus.json")}
    ensure_verification_corpus(out, seed=2, **SMALL)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    ensure_verification_corpus(out, seed=2, **{**SMALL, "utterances_per_speaker": 4})
    assert (out / "train" / "spk90" / "u003.wav").is_file()
    wav.unlink()  # an incomplete corpus is regenerated too
    ensure_verification_corpus(out, seed=2, **{**SMALL, "utterances_per_speaker": 4})
    assert wav.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_generation_refuses_to_overwrite_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(DataError, match="refusing to overwrite"):
        generate_verification_corpus(tmp_path, **SMALL)
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_default_trial_counts_shrink_to_fit_a_small_corpus(tmp_path: Path) -> None:
    small = {k: v for k, v in SMALL.items() if not k.startswith("n_")}
    root = generate_verification_corpus(tmp_path / "c", **small)  # 2 speakers x 3 utterances per eval split
    for split in ("dev", "test"):
        trials = read_trials(root / "trials" / f"{split}.txt", root)
        assert Counter(t.label for t in trials) == {0: 6, 1: 6}  # all 2 x 3 target pairs, as many non-targets


@pytest.mark.parametrize(
    "bad",
    [
        {"eval_factors": ((0.9,), (1.15,))},  # dev factor is a train factor
        {"eval_factors": ((0.85, 1.15), (1.15,))},  # dev and test overlap
        {"train_factors": (1.0,)},
        {"n_dev_trials": 5},
        {"n_dev_trials": 1000},
        {"utterances_per_speaker": 1},
    ],
)
def test_invalid_parameters(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(ValueError):
        generate_verification_corpus(tmp_path / "c", **{**SMALL, **bad})
    assert not (tmp_path / "c").exists()


# ------------------------------------------------------------------------------------ scanning


def test_scan_speakers_on_demo_corpus(corpus: Path) -> None:
    train = scan_speakers(corpus, "train")
    assert len({u.speaker for u in train}) == 2 + 2 * len(TRAIN_FACTORS) == 18
    assert len(train) == 18 * 8
    assert train == sorted(train, key=lambda u: (u.speaker, str(u.path)))
    assert train == scan_speakers(corpus, "train")
    assert all(isinstance(u, Utterance) and u.path.parent.name == u.speaker for u in train)
    for split, factors in (("dev", DEV_FACTORS), ("test", TEST_FACTORS)):
        utterances = scan_speakers(corpus, split)
        assert len({u.speaker for u in utterances}) == 2 * len(factors) == 6 and len(utterances) == 48
    assert validate_audio([u.path for u in train] + [train[0].path], expected_sample_rate=16000) == pytest.approx(
        sum(sf.info(str(u.path)).duration for u in train)
    )


def test_scan_speakers_nested_uppercase_and_hidden_files(tiny: Path) -> None:
    nested = tiny / "dev" / "b" / "session" / "X.FLAC"
    nested.parent.mkdir()
    sf.write(nested, np.zeros(800, dtype=np.float32), 16000, format="FLAC")
    (tiny / "dev" / "a" / "._0.wav").write_bytes(b"resource fork")
    (tiny / "dev" / "a" / "notes.txt").write_text("ignored")
    utterances = scan_speakers(tiny, "dev")
    assert [(u.speaker, u.path.relative_to(tiny / "dev").as_posix()) for u in utterances] == [
        ("a", "a/0.wav"),
        ("a", "a/1.wav"),
        ("b", "b/0.wav"),
        ("b", "b/1.wav"),
        ("b", "b/session/X.FLAC"),
    ]


def test_m4a_files_are_collected_unless_converted_beside_them(tiny: Path) -> None:
    for name in ("2.m4a", "3.m4a"):
        (tiny / "dev" / "a" / name).write_bytes(b"\x00\x00\x00\x20ftypM4A ")
    assert len(scan_speakers(tiny, "dev")) == 6  # read as shipped (decoded with PyAV at setup)
    # files converted earlier may keep their originals beside them: the converted ones are read
    for name in ("2.wav", "3.wav"):
        sf.write(tiny / "dev" / "a" / name, np.zeros(800, dtype=np.float32), 16000)
    paths = [u.path.name for u in scan_speakers(tiny, "dev")]
    assert len(paths) == 6 and "2.wav" in paths and "2.m4a" not in paths


@pytest.mark.bad_input
def test_missing_split_empty_split_and_single_speaker(tiny: Path) -> None:
    with pytest.raises(DataError, match="split folder not found") as info:
        scan_speakers(tiny, "train")
    assert str(tiny / "train") in str(info.value) and "<speaker_id>" in str(info.value)
    (tiny / "empty" / "a").mkdir(parents=True)
    sf.write(tiny / "empty" / "loose.wav", np.zeros(800, dtype=np.float32), 16000)
    with pytest.raises(DataError, match=r"no audio files .* found in speaker folders.*directly in the split folder"):
        scan_speakers(tiny, "empty")
    for path in (tiny / "dev" / "b").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="at least 2 speakers"):
        scan_speakers(tiny, "dev")


@pytest.mark.bad_input
def test_validate_audio_reports_bad_files(tiny: Path) -> None:
    bad = tiny / "dev" / "a" / "bad.wav"
    bad.write_bytes(b"not audio")
    with pytest.raises(DataError, match="cannot read audio file"):
        validate_audio([tiny / "dev" / "a" / "0.wav", bad])
    with pytest.raises(DataError, match="8000 Hz is expected"):
        validate_audio([tiny / "dev" / "a" / "0.wav"], expected_sample_rate=8000)


# ------------------------------------------------------------------------------------ trials


def test_read_trials_round_trip_on_demo_lists(corpus: Path) -> None:
    train_speakers = {u.speaker for u in scan_speakers(corpus, "train")}
    for split in ("dev", "test"):
        path = corpus / "trials" / f"{split}.txt"
        trials = read_trials(path, corpus)
        lines = path.read_text().splitlines()
        assert len(trials) == len(lines) == 120
        assert [
            f"{t.label} {t.enroll.relative_to(corpus).as_posix()} {t.test.relative_to(corpus).as_posix()}"
            for t in trials
        ] == lines
        assert Counter(t.label for t in trials) == {0: 60, 1: 60}
        pairs = [frozenset((t.enroll, t.test)) for t in trials]
        assert all(len(p) == 2 for p in pairs) and len(set(pairs)) == len(pairs)
        for t in trials:
            assert (t.enroll.parent.name == t.test.parent.name) == (t.label == 1)
            assert t.enroll.parts[-3] == t.test.parts[-3] == split
        speakers = {p.parent.name for t in trials for p in (t.enroll, t.test)}
        assert len(speakers) == 6 and not speakers & train_speakers


def _trial_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "trials.txt"
    path.write_text("1 dev/a/0.wav dev/a/1.wav\n\n0 dev/a/0.wav dev/b/0.wav\n" + "".join(f"{x}\n" for x in lines))
    return path


def test_read_trials_accepts_blank_lines_and_absolute_paths(tiny: Path, tmp_path: Path) -> None:
    path = _trial_file(tmp_path, f"0 {tiny / 'dev' / 'b' / '1.wav'} dev/a/1.wav")
    trials = read_trials(path, tiny)
    assert trials[0] == Trial(1, tiny / "dev" / "a" / "0.wav", tiny / "dev" / "a" / "1.wav")
    assert trials[2].enroll == tiny / "dev" / "b" / "1.wav" and len(trials) == 3


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1 dev/a/0.wav", "expected 3 fields, got 2"),
        ("1 dev/a/0.wav dev/a/1.wav extra", "expected 3 fields, got 4"),
        ("2 dev/a/0.wav dev/a/1.wav", "label '2' is not 0 or 1"),
        ("x dev/a/0.wav dev/a/1.wav", "label 'x' is not 0 or 1"),
        ("# enroll test", "comment lines"),
    ],
)
def test_read_trials_rejects_malformed_lines(tiny: Path, tmp_path: Path, line: str, reason: str) -> None:
    path = _trial_file(tmp_path, line)
    with pytest.raises(DataError) as info:
        read_trials(path, tiny)
    message = str(info.value)
    assert message.startswith(f"{path}:4: ") and reason in message


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("line", "which"), [("0 dev/a/9.wav dev/b/0.wav", "first"), ("0 dev/a/0.wav dev/b/9.wav", "second")]
)
def test_read_trials_names_missing_audio(tiny: Path, tmp_path: Path, line: str, which: str) -> None:
    path = _trial_file(tmp_path, line)
    with pytest.raises(DataError) as info:
        read_trials(path, tiny)
    missing = tiny / line.split()[1 if which == "first" else 2]
    assert str(info.value).startswith(f"{path}:4: audio file not found: {missing} ({which} path)")


@pytest.mark.bad_input
def test_read_trials_needs_targets_and_nontargets(tiny: Path, tmp_path: Path) -> None:
    only_targets = tmp_path / "targets.txt"
    only_targets.write_text("1 dev/a/0.wav dev/a/1.wav\n1 dev/b/0.wav dev/b/1.wav\n")
    with pytest.raises(DataError, match="all 2 trials are target"):
        read_trials(only_targets, tiny)
    only_nontargets = tmp_path / "nontargets.txt"
    only_nontargets.write_text("0 dev/a/0.wav dev/b/1.wav\n")
    with pytest.raises(DataError, match="non-target"):
        read_trials(only_nontargets, tiny)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="no trials"):
        read_trials(empty, tiny)
    with pytest.raises(DataError, match="not found"):
        read_trials(tmp_path / "missing.txt", tiny)


# ------------------------------------------------------------------------------------ sampling

LABELS = [spk for spk in range(10) for _ in range(6)] + [10] + [11] * 20  # uneven, one single-utterance speaker


def _batches(sampler: SpeakerBatchSampler, epoch: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_speaker_batches_hold_per_speaker_utterances_of_each_speaker() -> None:
    sampler = SpeakerBatchSampler(LABELS, batch_size=12, per_speaker=3, seed=0)
    batches = _batches(sampler)
    assert len(sampler) == len(batches) == len(LABELS) // 12
    seen: Counter[int] = Counter()
    for batch in batches:
        assert len(batch) == 12
        counts = Counter(LABELS[i] for i in batch)
        assert len(counts) == 4 and set(counts.values()) == {3}
        for spk in counts:  # a speaker's utterances are contiguous, and distinct when it has enough
            items = [i for i in batch if LABELS[i] == spk]
            assert batch[batch.index(items[0]) :][:3] == items
            assert len(set(items)) == 3 or LABELS.count(spk) < 3
        seen.update(batch)
    assert len(seen) >= 0.85 * len(LABELS)  # roughly every utterance once per epoch
    assert max(c for i, c in seen.items() if LABELS[i] != 10) <= 2


def test_speaker_batches_are_deterministic_per_seed_and_epoch() -> None:
    sampler = SpeakerBatchSampler(LABELS, batch_size=8, per_speaker=2, seed=5)
    epoch0, epoch1 = _batches(sampler, 0), _batches(sampler, 1)
    assert epoch0 != epoch1
    assert _batches(sampler, 0) == epoch0
    assert _batches(SpeakerBatchSampler(LABELS, batch_size=8, per_speaker=2, seed=5), 1) == epoch1
    assert _batches(SpeakerBatchSampler(LABELS, batch_size=8, per_speaker=2, seed=6), 0) != epoch0


def test_speaker_batches_larger_than_the_speaker_count(caplog: pytest.LogCaptureFixture) -> None:
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    with caplog.at_level(logging.WARNING, logger="tuner.data.verification"):
        sampler = SpeakerBatchSampler(labels, batch_size=32, per_speaker=2, drop_last=True)
    assert sum("only 3 speakers" in r.getMessage() for r in caplog.records) == 1
    batches = list(sampler)
    assert len(sampler) == len(batches) == 1
    assert Counter(labels[i] for i in batches[0]) == {0: 2, 1: 2, 2: 2}
    assert len(SpeakerBatchSampler(labels, batch_size=4, per_speaker=2, drop_last=False)) == 3
    with pytest.raises(ValueError):
        SpeakerBatchSampler([0, 0, 0], batch_size=4)


def test_speaker_batch_sampler_in_a_dataloader() -> None:
    import torch

    dataset = torch.utils.data.TensorDataset(torch.arange(len(LABELS)), torch.tensor(LABELS))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=SpeakerBatchSampler(LABELS, batch_size=8))
    for index, label in loader:
        assert index.shape == (8,) and Counter(label.tolist()).most_common(1)[0][1] == 2


# ------------------------------------------------------------------------------------ cropping


def test_random_crop() -> None:
    rng = np.random.default_rng(0)
    waveform = np.arange(100, dtype=np.float32)
    crops = [random_crop(waveform, 30, rng) for _ in range(20)]
    for crop in crops:
        assert crop.shape == (30,) and crop.dtype == np.float32
        assert np.array_equal(crop, np.arange(crop[0], crop[0] + 30, dtype=np.float32))
    assert len({float(c[0]) for c in crops}) > 1
    padded = random_crop(waveform[:10], 30, rng)
    assert padded.shape == (30,) and np.array_equal(padded[:10], waveform[:10]) and not padded[10:].any()
    assert np.array_equal(random_crop(waveform, 100, rng), waveform)
    first = random_crop(waveform, 30, np.random.default_rng(7))
    assert np.array_equal(first, random_crop(waveform, 30, np.random.default_rng(7)))
    with pytest.raises(ValueError):
        random_crop(np.zeros((2, 10)), 5, rng)
