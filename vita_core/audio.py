"""Audio in and out: read any format soundfile knows, mix to mono, resample, write atomically, stream PCM.

Every entry point validates what it is given (empty, NaN, absurd sample rates) and raises
`AudioError` with a message that says how to fix it, so a bad file never reaches a model.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from vita_core.errors import AudioError
from vita_core.files import AtomicFile, disk_full, is_disk_full

MAX_SAMPLE_RATE = 384_000

_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}


def check_sample_rate(sample_rate: int, what: str = "sample rate") -> int:
    """Return `sample_rate` as an int, or raise if it is not a usable rate (1 Hz .. 384 kHz)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise AudioError(f"{what} must be a whole number of Hz, got {sample_rate!r}")
    if not 0 < sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{what} {sample_rate} Hz is out of range: use a rate between 1 and {MAX_SAMPLE_RATE} Hz")
    return int(sample_rate)


def check_waveform(wav: np.ndarray, sample_rate: int, name: str = "audio") -> np.ndarray:
    """Validate a mono waveform and return it as contiguous float32.

    Rejects anything a model cannot use: not 1-D, no samples, NaN or infinite values, a bad rate.
    """
    check_sample_rate(sample_rate, f"{name} sample rate")
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise AudioError(f"{name} must be a 1-D mono waveform, got shape {wav.shape}: mix channels with to_mono() first")
    if wav.size == 0:
        raise AudioError(f"{name} has no samples: give at least one sample of audio")
    if not np.issubdtype(wav.dtype, np.floating) and not np.issubdtype(wav.dtype, np.integer):
        raise AudioError(f"{name} has dtype {wav.dtype}: give float samples in [-1, 1]")
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if not np.isfinite(wav).all():
        raise AudioError(f"{name} contains NaN or infinite samples: the file or array is corrupt")
    return wav


def to_mono(frames: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) by averaging channels; 1-D input is returned as is."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim == 1:
        return frames
    if frames.ndim != 2:
        raise AudioError(f"audio must be (frames,) or (frames, channels), got shape {frames.shape}")
    return frames.mean(axis=1, dtype=np.float32)


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling with soxr (high quality); the same rate returns a float32 copy."""
    wav = check_waveform(wav, sr_in)
    sr_out = check_sample_rate(sr_out, "target sample rate")
    if sr_in == sr_out:
        return wav.copy()
    out = soxr.resample(wav, sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def load_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a file (wav, flac, ogg, mp3... whatever libsndfile reads) as float32 mono.

    With `sample_rate`, the audio is resampled to it; otherwise the file's own rate is kept.
    Returns (waveform, rate).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"cannot read audio file {path}: {exc}; convert it to wav or flac") from exc
    check_sample_rate(sr, f"sample rate of {path}")
    if data.shape[0] == 0:
        raise AudioError(f"audio file {path} has no samples: record or choose a non-empty file")
    wav = check_waveform(to_mono(data), sr, name=str(path))
    if sample_rate is not None and sample_rate != sr:
        return resample(wav, sr, sample_rate), check_sample_rate(sample_rate, "target sample rate")
    return wav, sr


def write_audio(path: str | os.PathLike, wav: np.ndarray, sample_rate: int) -> Path:
    """Write 16-bit wav or flac (chosen by suffix) through a temp file and a rename, so no half-written file remains."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise AudioError(f"cannot write {path}: use a .wav or .flac file name")
    wav = check_waveform(wav, sample_rate)
    if not path.parent.is_dir():
        raise AudioError(f"cannot write {path}: folder {path.parent} does not exist")
    fmt, subtype = _FORMATS[suffix]
    writer = SoundWriter(path, sample_rate, fmt, subtype)
    writer.write(np.clip(wav, -1.0, 1.0))
    return writer.close()


class _KeepError:
    """An unbuffered file for soundfile's virtual I/O that keeps the first OSError of a write.

    soundfile swallows (and prints) an exception raised in its callbacks and then reports only
    "System error", so the cause (a full disk) is kept here to be raised afterwards.
    """

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        if self.error is not None:
            return 0
        view, done = memoryview(data), 0
        try:
            while done < len(view):  # a short write is retried, so a full disk shows as its OSError
                done += self.raw.write(view[done:])
        except OSError as exc:
            self.error = exc
        return done

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def read(self, size: int = -1) -> bytes:
        return self.raw.read(size)


class SoundWriter:
    """A sound file written through soundfile into a temp file; `close()` renames it into place.

    Every audio file vita writes goes through here, so each gets the mode open() would give and a
    full disk is one DiskFullError naming the file, with the temp removed.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, fmt: str = "WAV", subtype: str = "PCM_16",
                 channels: int = 1) -> None:
        self.path = Path(path)
        self._target = AtomicFile(self.path, suffix=self.path.suffix or ".tmp")
        try:
            self._raw = open(self._target.tmp, "r+b", buffering=0)
            self._io = _KeepError(self._raw)
            self._file = sf.SoundFile(self._io, "w", samplerate=sample_rate, channels=channels, subtype=subtype,
                                      format=fmt)
        except BaseException as exc:
            self._abandon()
            self._reraise(exc)

    def _abandon(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None and not file.closed:
            try:
                file.close()
            except Exception:  # the temp is being thrown away; its trailer does not matter
                pass
        raw = getattr(self, "_raw", None)
        if raw is not None:
            raw.close()
        self._target.discard()

    def _reraise(self, exc: BaseException) -> None:
        cause = getattr(getattr(self, "_io", None), "error", None)
        if cause is not None and is_disk_full(cause):
            raise disk_full(self.path) from cause
        if isinstance(exc, Exception) and is_disk_full(exc, self.path.parent):
            raise disk_full(self.path) from exc
        if cause is not None:
            raise cause from exc
        raise exc

    def write(self, frames: np.ndarray) -> None:
        try:
            self._file.write(frames)
            if self._io.error is not None:
                raise self._io.error
        except BaseException as exc:
            self._abandon()
            self._reraise(exc)

    def close(self) -> Path:
        """Finish the file and rename it onto its path."""
        try:
            self._file.close()
            self._raw.close()
            if self._io.error is not None:
                raise self._io.error
        except BaseException as exc:
            self._abandon()
            self._reraise(exc)
        return self._target.commit()

    def abort(self) -> None:
        """Throw the temp file away (the target is left as it was)."""
        self._abandon()


def to_pcm16(wav: np.ndarray) -> bytes:
    """Float samples in [-1, 1] -> little-endian signed 16-bit PCM bytes (clipped, rounded)."""
    wav = np.asarray(wav, dtype=np.float32)
    pcm = np.round(np.clip(wav, -1.0, 1.0) * 32767.0).astype("<i2")
    return pcm.tobytes()


def wav_stream_header(sample_rate: int, channels: int = 1) -> bytes:
    """A 44-byte 16-bit PCM WAV header for a stream of unknown length (stdout, sockets).

    The RIFF and data sizes are set to 0xFFFFFFFF, the usual marker for "until end of stream"
    that sox, ffmpeg and libsndfile accept; follow it with `to_pcm16` chunks.
    """
    sample_rate = check_sample_rate(sample_rate)
    block_align = channels * 2
    unknown = 0xFFFFFFFF
    return (
        b"RIFF" + struct.pack("<I", unknown) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, 16)
        + b"data" + struct.pack("<I", unknown)
    )
