"""Compressed audio read as shipped: PyAV decodes it (its wheel carries FFmpeg), once, into a cache of WAVs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tuner.data import compressed
from tuner.data.audio import WaveformCache, audio_info, read_audio
from tuner.data.compressed import DecodeCache, decode
from tuner.data.verification import scan_speakers
from tuner.errors import DataError
from tuner.testing.audio import ENCODERS, compressed_copy, encode

RATE = 16000


def _tone(seconds: float = 2.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 0.5 * t)).astype(np.float32)


def _aligned_correlation(reference: np.ndarray, decoded: np.ndarray, max_delay: int = 2048) -> float:
    """The best correlation of ``decoded`` with ``reference`` over the encoders' priming delays (AAC: 1024)."""
    n = len(reference) - max_delay
    return max(float(np.corrcoef(reference[:n], decoded[delay : delay + n])[0, 1]) for delay in range(0, max_delay, 16))


@pytest.mark.parametrize("extension", sorted(ENCODERS))
def test_each_format_decodes_to_the_encoded_signal(tmp_path: Path, extension: str) -> None:
    signal = _tone()
    path = encode(tmp_path / f"tone{extension}", signal, RATE)
    waveform, rate = decode(path, RATE)
    assert rate == RATE and waveform.dtype == np.float32 and waveform.shape[0] == 1
    assert abs(waveform.shape[1] - len(signal)) <= 2048  # priming and padding of one or two codec frames
    assert _aligned_correlation(signal, waveform[0]) > 0.99
    info = audio_info(path)
    assert info.compressed and info.channels == 1 and abs(info.duration - 2.0) < 0.15


def test_resampled_to_the_model_rate(tmp_path: Path) -> None:
    """A 44.1 kHz stereo MP3 comes out at 16 kHz, both channels kept."""
    signal = _tone(rate=44100)
    path = encode(tmp_path / "cd.mp3", np.stack([signal, 0.5 * signal]), 44100)
    waveform, rate = decode(path, RATE)
    assert rate == RATE and waveform.shape[0] == 2 and abs(waveform.shape[1] - 2 * RATE) <= 1200
    assert _aligned_correlation(_tone(), waveform[0]) > 0.99
    native, native_rate = read_audio(path)  # without a cache: the file's own rate
    assert native_rate == 44100 and native.shape[0] == 2


def test_decoded_once_keyed_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "corpus").mkdir()
    source = encode(tmp_path / "corpus" / "a.m4a", _tone(), RATE)
    cache = DecodeCache(tmp_path / "decoded", RATE)
    wav = cache.path(source)
    assert wav.parent == tmp_path / "decoded" and sf.info(str(wav)).samplerate == RATE
    decoded, _ = decode(source, RATE)
    np.testing.assert_allclose(sf.read(str(wav), dtype="float32")[0], decoded[0], atol=1 / 32768 + 1e-7)

    # another process (a new cache object), a copy elsewhere, a renamed file: no decode at all
    calls: list[Path] = []
    real_decode = compressed.decode
    monkeypatch.setattr(
        compressed, "decode", lambda path, rate=None: calls.append(Path(path)) or real_decode(path, rate)
    )
    copy = tmp_path / "elsewhere" / "b.m4a"
    copy.parent.mkdir()
    shutil.copy(source, copy)
    assert DecodeCache(tmp_path / "decoded", RATE).paths([source, copy]) == [wav, wav]
    assert calls == []
    # an edited file is another file
    encode(copy, 0.5 * _tone(), RATE)
    assert DecodeCache(tmp_path / "decoded", RATE).path(copy) != wav and calls == [copy]
    # nothing half-written is left: only the two WAVs and the index notes
    assert sorted(p.name.endswith(".wav") for p in (tmp_path / "decoded").iterdir() if p.is_file()) == [True, True]
    assert not list((tmp_path / "decoded").rglob("*.tmp"))


@pytest.mark.bad_input
def test_damaged_file_names_itself_and_how_to_convert(tmp_path: Path) -> None:
    damaged = tmp_path / "u.m4a"
    damaged.write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 64)
    cache = DecodeCache(tmp_path / "decoded", RATE)
    for call in (lambda: audio_info(damaged), lambda: cache.path(damaged)):
        with pytest.raises(DataError) as error:
            call()
        assert str(damaged) in str(error.value) and "ffmpeg -i" in str(error.value)
    assert not list((tmp_path / "decoded").rglob("*.wav"))
    # a copy cut in half: an m4a's index (at its end) is gone, an error; an mp3 decodes what is left, as FFmpeg
    cut = encode(tmp_path / "cut.m4a", _tone(), RATE)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.m4a"):
        cache.path(cut)
    cut = encode(tmp_path / "cut.mp3", _tone(), RATE)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    waveform, _ = decode(cut, RATE)
    assert 0.3 * RATE < waveform.shape[1] < 1.5 * RATE


def test_chunks_of_a_compressed_diarization_file_are_read_from_its_wav(tmp_path: Path) -> None:
    """The diarization objective's crops: a compressed file becomes a seekable WAV of the model's rate."""
    path = encode(tmp_path / "meeting.opus", _tone(4.0, 48000), 48000)
    waveforms = WaveformCache(pad_samples=256, decoded=DecodeCache(tmp_path / "decoded", RATE))
    waveform, rate = waveforms.for_crops(path)
    assert rate == RATE and type(waveform).__name__ == "SeekableWaveform" and waveforms.nbytes == 0
    whole, _ = read_audio(waveforms.decoded.path(path))  # type: ignore[union-attr]
    np.testing.assert_array_equal(waveform[:, 16000:32000].numpy(), whole[:, 16000:32000])


def test_kathbath_layout_of_m4a_files_scans_and_prefers_a_converted_wav(sv_corpus: Path, tmp_path: Path) -> None:
    corpus = compressed_copy(sv_corpus, tmp_path / "kathbath")
    utterances = scan_speakers(corpus, "train")
    assert utterances and all(u.path.suffix == ".m4a" for u in utterances)
    first = utterances[0].path
    sf.write(first.with_suffix(".wav"), _tone(), RATE)  # converted earlier, the original kept beside it
    again = scan_speakers(corpus, "train")
    assert len(again) == len(utterances) and first.with_suffix(".wav") in {u.path for u in again}


def test_verification_trial_on_m4a_files_as_shipped(sv_spec: Any, sv_corpus: Path, tmp_path: Path) -> None:
    """A Kathbath-layout corpus of .m4a files runs a verification trial; a second setup decodes nothing."""
    from tuner import run_study

    corpus = compressed_copy(sv_corpus, tmp_path / "kathbath")

    def make(**overrides: Any) -> Any:
        return sv_spec(data=str(corpus), **overrides)

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = run_study(make(n_trials=1, max_epochs=1), storage=storage, workdir=tmp_path / "work")
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE" and 0.0 <= trial.value <= 100.0
    decoded = sorted((tmp_path / "work" / "cache" / "decoded").glob("*.wav"))
    named = {name for line in (corpus / "trials" / "dev.txt").read_text().splitlines() for name in line.split()[1:]}
    assert len(decoded) == len(list(corpus.glob("train/*/*.m4a"))) + len(named)  # the test split is not read
    mtimes = [p.stat().st_mtime_ns for p in decoded]
    from tuner.runner import prepare_objective

    objective, _ = prepare_objective(make(), tmp_path / "work")
    objective.setup()
    assert [p.stat().st_mtime_ns for p in decoded] == mtimes
