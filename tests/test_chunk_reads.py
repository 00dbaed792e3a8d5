"""Training chunks read from disk with a seek (``SeekableWaveform``), not cut from whole decoded files: the
same samples as a whole-file read, and an epoch of the diarization objective that decodes no whole file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tuner.data.audio import SeekableWaveform, WaveformCache, audio_info, read_audio
from tuner.errors import DataError

pytestmark = pytest.mark.slow

PAD = 256
RATE = 16000
FRAMES = 3 * RATE + 123  # not a whole number of seconds


def _write(path: Path, channels: int, subtype: str, fmt: str | None = None) -> np.ndarray:
    """A random waveform (channels, FRAMES) written to ``path``; returns what soundfile reads back whole."""
    rng = np.random.default_rng(len(path.name) + channels)
    samples = (0.5 * rng.standard_normal((FRAMES, channels))).clip(-0.99, 0.99).astype(np.float32)
    sf.write(str(path), samples, RATE, subtype=subtype, format=fmt)
    waveform, _ = read_audio(path)
    return waveform


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray]]:
    """name -> (path, the whole-file read as WaveformCache pads it) for each format soundfile seeks exactly."""
    root = tmp_path_factory.mktemp("audio")
    made = {}
    for name, channels, subtype in [("pcm16.wav", 1, "PCM_16"), ("float.wav", 2, "FLOAT"), ("pcm24.flac", 1, "PCM_24")]:
        whole = _write(root / name, channels, subtype)
        made[name] = (root / name, np.pad(whole, ((0, 0), (0, PAD))))
    return made


SLICES = [
    (0, 1),
    (0, 32000),  # the first 2 s
    (12345, 12345 + 32000),  # inside
    (FRAMES - 1000, FRAMES),  # up to the last sample
    (FRAMES - 1000, FRAMES + 100),  # across the end: zeros after it
    (FRAMES - 1, FRAMES + PAD),  # to the end of the padding
    (FRAMES + 10, FRAMES + 20),  # in the padding alone
    (500, 500),  # empty
    (None, None),  # all of it
    (-300, None),  # from the end, as a tensor counts
    (FRAMES - 10, FRAMES + 10_000),  # past the padding: clipped, as a tensor's slice is
]


@pytest.mark.parametrize("name", ["pcm16.wav", "float.wav", "pcm24.flac"])
def test_slices_hold_the_samples_of_a_whole_file_read(files, name):
    path, whole = files[name]
    waveform = SeekableWaveform(path, pad_samples=PAD)
    assert waveform.shape == whole.shape == (whole.shape[0], FRAMES + PAD)
    assert waveform.sample_rate == RATE
    reference = torch.from_numpy(whole)
    for start, stop in SLICES:
        piece = waveform[:, start:stop]
        expected = reference[:, start:stop]
        assert piece.dtype == torch.float32 and piece.shape == expected.shape, (start, stop)
        assert torch.equal(piece, expected), (name, start, stop)
    assert torch.equal(waveform[0, 100:200], reference[0, 100:200])  # one channel, as a tensor gives it
    assert torch.count_nonzero(waveform[:, FRAMES:]) == 0 and waveform[:, FRAMES - 50 : FRAMES].abs().sum() > 0


def test_a_slice_reads_only_its_own_samples(files, monkeypatch):
    waveform = SeekableWaveform(files["pcm16.wav"][0], pad_samples=PAD)
    calls = []
    real_read = sf.read

    def spy(file, *args, **kwargs):
        calls.append((kwargs.get("start"), kwargs.get("stop")))
        return real_read(file, *args, **kwargs)

    monkeypatch.setattr(sf, "read", spy)
    waveform[:, 20000:40000]
    waveform[:, FRAMES - 100 : FRAMES + PAD]
    waveform[:, FRAMES : FRAMES + PAD]  # padding only: nothing to read
    assert calls == [(20000, 40000), (FRAMES - 100, FRAMES)]


def test_it_pickles_small_and_reads_the_same_after(files):
    path, whole = files["float.wav"]
    waveform = SeekableWaveform(path, pad_samples=PAD)
    data = pickle.dumps(waveform)
    assert len(data) < 1000  # the path and a few numbers: no samples, no open handle
    copy = pickle.loads(data)
    assert copy.shape == waveform.shape and copy.sample_rate == RATE
    assert torch.equal(copy[:, 1000:9000], torch.from_numpy(whole[:, 1000:9000]))


def test_other_indexing_is_refused(files):
    waveform = SeekableWaveform(files["pcm16.wav"][0], pad_samples=PAD)
    with pytest.raises(TypeError, match=r"\[:, start:stop\]"):
        waveform[0]
    with pytest.raises(TypeError, match="step 2"):
        waveform[:, 0:100:2]


def test_a_file_shorter_than_its_header_says_is_an_error(files, tmp_path):
    path = files["pcm16.wav"][0]
    info = audio_info(path)
    longer = type(info)(info.path, info.sample_rate, info.frames + 1000, info.channels, info.format, info.subtype)
    waveform = SeekableWaveform(path, pad_samples=PAD, info=longer)
    with pytest.raises(DataError, match="fewer samples than its header promises"):
        waveform[:, FRAMES - 10 : FRAMES + 500]


def test_pyannote_crops_the_same_chunks_from_it_as_from_a_tensor(files):
    from pyannote.audio.core.io import Audio
    from pyannote.core import Segment

    for name in ("pcm16.wav", "float.wav", "pcm24.flac"):
        path, whole = files[name]
        seekable = {"waveform": SeekableWaveform(path, pad_samples=PAD), "sample_rate": RATE}
        in_memory = {"waveform": torch.from_numpy(whole), "sample_rate": RATE}
        audio = Audio(sample_rate=RATE, mono="downmix")
        end = FRAMES / RATE
        for segment, mode in [
            (Segment(0.0, 2.0), "raise"),
            (Segment(0.4321, 2.4321), "raise"),  # pyannote rounds times to samples
            (Segment(end - 2.0, end), "raise"),  # ends at the last sample: allowed thanks to the padding
            (Segment(end - 1.0, end + 1.0), "pad"),  # past the padding: pyannote pads
        ]:
            chunk, rate = audio.crop(seekable, segment, mode=mode)
            expected, _ = audio.crop(in_memory, segment, mode=mode)
            assert rate == RATE and chunk.shape == expected.shape == (1, round(segment.duration * RATE))
            assert torch.equal(chunk, expected), (name, segment)
        with pytest.raises(ValueError, match="greater than"):  # as for a tensor: past the padding is refused
            audio.crop(seekable, Segment(end - 1.0, end + 1.0))


def test_the_cache_decodes_whole_only_the_formats_soundfile_does_not_seek_exactly(files, tmp_path):
    cache = WaveformCache(pad_samples=PAD)
    for name, (path, _) in files.items():
        waveform, rate = cache.for_crops(path)
        assert isinstance(waveform, SeekableWaveform) and rate == RATE, name
        assert cache.for_crops(path)[0] is waveform  # the header is read once
    assert cache.nbytes == 0
    ogg = tmp_path / "lossy.ogg"
    whole = _write(ogg, 1, "VORBIS", "OGG")
    assert not audio_info(ogg).seeks_exactly
    waveform, rate = cache.for_crops(ogg)
    assert isinstance(waveform, torch.Tensor) and rate == RATE
    assert torch.equal(waveform, torch.from_numpy(np.pad(whole, ((0, 0), (0, PAD)))))
    assert cache.nbytes == waveform.numel() * 4


# ----------------------------------------------------------------- an epoch of the diarization objective


def _independent_read(path: str, start_time: float, duration: float) -> np.ndarray:
    """The samples ``Audio.crop`` cuts for a chunk (it rounds each end to a sample), read with soundfile."""
    start = round(start_time * RATE)
    stop = round((start_time + duration) * RATE)
    data, rate = sf.read(path, start=start, frames=stop - start, dtype="float32", always_2d=True)
    assert rate == RATE
    return np.pad(data.T, ((0, 0), (0, stop - start - len(data))))


def test_an_epoch_reads_every_chunk_from_disk_and_decodes_no_whole_file(make_spec, demo_corpus, monkeypatch):
    import lightning.pytorch as pl

    import tuner.data.audio
    from tuner.objectives.pyannote import _SoundfileSpeakerDiarization
    from tuner.runner import prepare_objective
    from tuner.training.fit import fit

    objective, space = prepare_objective(make_spec())
    cache = objective._waveforms
    corpus_bytes = sum(audio_info(p).frames * 4 for p in demo_corpus.rglob("*.wav"))
    cache.max_bytes = 64_000  # 2 s of audio: every file of the corpus is larger
    assert corpus_bytes > 10 * cache.max_bytes

    def no_whole_file(path):
        raise AssertionError(f"a whole file was decoded: {path}")

    monkeypatch.setattr(tuner.data.audio, "read_audio", no_whole_file)
    chunks = []  # (file path, file id, start, duration, X) of each chunk the task prepared
    prepare_chunk = _SoundfileSpeakerDiarization.prepare_chunk

    def recording(self, file_id, start_time, duration):
        sample = prepare_chunk(self, file_id, start_time, duration)
        path = str(self.prepared_data["audio-path"][file_id])
        chunks.append((path, int(file_id), float(start_time), float(duration), sample["X"]))
        return sample

    monkeypatch.setattr(_SoundfileSpeakerDiarization, "prepare_chunk", recording)
    batches = {"train": [], "val": []}

    class Batches(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            batches["train"].append((batch["X"].clone(), batch["meta"]["file"].clone()))

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            batches["val"].append((batch["X"].clone(), batch["meta"]["file"].clone()))

    config = space.config_from({"optimizer": "AdamW", "lr": 3e-3, "batch_size": 8})
    result = fit(objective, config, seed=0, max_epochs=1, callbacks=[Batches()])
    assert np.isfinite(result.history[0]["DER"])

    # every chunk the task prepared holds the file's samples at its time, read independently
    assert len(chunks) >= 30
    for path, _, start, duration, x in chunks:
        expected = _independent_read(path, start, duration)
        assert x.shape == expected.shape == (1, round(duration * RATE))
        assert torch.equal(x, torch.from_numpy(expected)), (path, start)
    # and the model saw those chunks: each row of each batch is one of them, from the file the batch names
    for kind in ("train", "val"):
        rows = [(x, int(f)) for xs, files in batches[kind] for x, f in zip(xs, files, strict=True)]
        assert len(rows) >= 8, kind
        for x, file_id in rows:
            assert any(f == file_id and torch.equal(x, c) for _, f, _, _, c in chunks), kind
    assert cache.nbytes == 0  # nothing holds the corpus's audio


def test_training_is_the_same_as_with_whole_file_decodes(make_spec, monkeypatch):
    """Same samples in the same order: the figures of an epoch do not move by a digit."""
    from tuner.data.audio import AudioInfo
    from tuner.runner import prepare_objective
    from tuner.training.fit import fit

    def one_epoch() -> tuple[dict[str, float], int]:
        objective, space = prepare_objective(make_spec())
        config = space.config_from({"optimizer": "AdamW", "lr": 3e-3, "batch_size": 8})
        result = fit(objective, config, seed=0, max_epochs=1, trainer_options={"limit_train_batches": 2})
        return {k: v for k, v in result.history[0].items() if k != "seconds"}, objective._waveforms.nbytes

    seeking, seeking_bytes = one_epoch()
    monkeypatch.setattr(AudioInfo, "seeks_exactly", property(lambda self: False))
    decoding, decoding_bytes = one_epoch()
    assert seeking_bytes == 0 and decoding_bytes > 0  # the two paths were really taken
    assert {"DER", "loss/train", "loss/val"} <= set(seeking)
    assert seeking == decoding
