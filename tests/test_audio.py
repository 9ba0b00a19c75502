"""Audio I/O: reading, mono mix, resampling, atomic writes, PCM streaming and the errors for bad input."""

import os

import numpy as np
import pytest
import soundfile as sf

from vita_core.audio import (
    check_waveform,
    load_audio,
    resample,
    to_pcm16,
    wav_stream_header,
    write_audio,
)
from vita_core.errors import AudioError


def tone(freq: float, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stereo_file_is_mixed_to_mono(tmp_path):
    left, right = tone(440, 0.5, 16000), tone(660, 0.5, 16000)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    wav, sr = load_audio(tmp_path / "st.wav")
    assert sr == 16000 and wav.dtype == np.float32 and wav.shape == (8000,)
    np.testing.assert_allclose(wav, (left + right) / 2, atol=1e-7)


def test_load_resamples_to_requested_rate(tmp_path):
    sf.write(tmp_path / "a.flac", tone(440, 1.0, 44100), 44100)
    wav, sr = load_audio(tmp_path / "a.flac", sample_rate=16000)
    assert sr == 16000 and len(wav) == 16000


def test_resample_round_trip_keeps_a_band_limited_signal():
    x = tone(440, 1.0, 16000)
    up = resample(x, 16000, 44100)
    assert len(up) == 44100
    back = resample(up, 44100, 16000)
    assert len(back) == 16000
    # away from the edges the round trip is transparent to within -60 dB
    err = np.abs(back[500:-500] - x[500:-500]).max()
    assert err < 1e-3
    # and the 440 Hz tone stays at 440 Hz after upsampling
    spectrum = np.abs(np.fft.rfft(up))
    assert abs(np.argmax(spectrum) * 44100 / len(up) - 440) < 2


def test_write_is_atomic_and_round_trips(tmp_path):
    x = tone(300, 0.25, 22050)
    out = write_audio(tmp_path / "o.wav", x, 22050)
    y, sr = load_audio(out)
    assert sr == 22050 and np.abs(y - x).max() < 1 / 32767 + 1e-6
    assert sorted(os.listdir(tmp_path)) == ["o.wav"]
    flac = write_audio(tmp_path / "o.flac", x, 22050)
    assert sf.info(str(flac)).format == "FLAC"


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "keep.wav"
    write_audio(target, tone(300, 0.1, 16000), 16000)
    before = target.read_bytes()
    with pytest.raises(AudioError, match="NaN"):
        write_audio(target, np.array([0.1, np.nan], dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=".wav or .flac"):
        write_audio(tmp_path / "x.mp3", tone(300, 0.1, 16000), 16000)
    assert target.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["keep.wav"]


def test_pcm16_and_streaming_header_are_readable(tmp_path):
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0], dtype=np.float32)
    pcm = to_pcm16(x)
    assert np.frombuffer(pcm, "<i2").tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32767]
    header = wav_stream_header(16000)
    assert len(header) == 44 and header[:4] == b"RIFF" and header[40:44] == b"\xff\xff\xff\xff"
    path = tmp_path / "stream.wav"
    path.write_bytes(header + to_pcm16(tone(440, 0.1, 16000)) + to_pcm16(tone(440, 0.1, 16000)))
    y, sr = sf.read(str(path), dtype="int16")
    assert sr == 16000 and len(y) == 3200


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b"this is not audio"), "cannot read"),
        (lambda p: sf.write(p, np.zeros((0,), np.float32), 16000), "no samples"),
        (lambda p: sf.write(p, np.array([0.0, np.nan], np.float32), 16000, subtype="FLOAT"), "NaN"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=message):
        load_audio(path)


@pytest.mark.parametrize("sr", [0, -16000, 384_001, 16000.5])
def test_absurd_sample_rates_are_rejected(sr):
    with pytest.raises(AudioError, match="sample rate"):
        check_waveform(np.zeros(10, np.float32), sr)
    with pytest.raises(AudioError):
        resample(np.zeros(10, np.float32), 16000, sr)


def test_waveform_shape_and_dtype_checks():
    with pytest.raises(AudioError, match="1-D"):
        check_waveform(np.zeros((2, 10), np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        check_waveform(np.zeros(0, np.float32), 16000)
    assert check_waveform(np.zeros(3, np.float64), 16000).dtype == np.float32
