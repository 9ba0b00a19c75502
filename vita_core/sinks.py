"""Where generated PCM goes as it arrives: a file (written atomically) or a byte stream.

A file sink writes through soundfile into a hidden temp file beside the target and renames it
on success, so a failed or interrupted run never leaves a half-written file. A stream sink
writes raw 16-bit PCM, or a WAV header with an unknown length followed by PCM, and flushes
after every chunk so a reader (aplay, ffplay, a pipe) hears it while generation goes on.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from vita_core.audio import SoundWriter
from vita_core.errors import InputError
from vita_core.files import reporting_full_disk

FILE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
STREAM_FORMATS = ("wav", "pcm")


def pcm16(wav: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> little-endian int16 (clipped), the one conversion every sink uses.

    Files get these integers too rather than soundfile's own float conversion (libsndfile scales
    by 32768), so `--out x.wav` and `--out -` of the same run hold the same samples.
    """
    return (np.clip(wav, -1.0, 1.0) * 32767.0).round().astype("<i2")


def to_pcm16(wav: np.ndarray) -> bytes:
    """float32 in [-1, 1] -> little-endian int16 bytes (clipped)."""
    return pcm16(wav).tobytes()


def streaming_wav_header(sample_rate: int, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV header whose sizes say 'unknown' (0xFFFFFFFF), as streaming tools write."""
    block = 2 * channels
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))


def check_target(out: str, fmt: str = "wav") -> None:
    """Fail before any slow work if `out` (a path or - for stdout) cannot be written as asked."""
    if out == "-":
        if fmt not in STREAM_FORMATS:
            raise InputError(f"--format {fmt!r}: choose wav or pcm for stdout")
        return
    path = Path(out)
    if path.suffix.lower() not in FILE_FORMATS:
        raise InputError(f"--out {path}: use a .wav or .flac file name, or - for stdout")
    if not path.parent.is_dir():
        raise InputError(f"--out {path}: folder {path.parent} does not exist")


class FileSink:
    """Streams chunks into `path` (.wav or .flac) through a temp file; `close()` renames it in place."""

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        check_target(str(path))
        self.path = Path(path)
        self._file = SoundWriter(self.path, sample_rate, FILE_FORMATS[self.path.suffix.lower()])
        self.frames = 0

    def write(self, wav: np.ndarray) -> None:
        if wav.size:
            self._file.write(pcm16(wav))
            self.frames += int(wav.size)

    def close(self) -> None:
        self._file.close()

    def abort(self) -> None:
        self._file.abort()


class StreamSink:
    """Writes 16-bit PCM (with a streaming WAV header for 'wav') to a binary stream, chunk by chunk."""

    def __init__(self, stream: BinaryIO, sample_rate: int, fmt: str = "wav") -> None:
        check_target("-", fmt)
        self.stream = stream
        self.frames = 0
        if fmt == "wav":
            with reporting_full_disk("stdout"):
                stream.write(streaming_wav_header(sample_rate))
                stream.flush()

    def write(self, wav: np.ndarray) -> None:
        if wav.size:
            with reporting_full_disk("stdout"):
                self.stream.write(to_pcm16(wav))
                self.stream.flush()
            self.frames += int(wav.size)

    def close(self) -> None:
        with reporting_full_disk("stdout"):
            self.stream.flush()

    def abort(self) -> None:
        try:
            self.stream.flush()
        except OSError:  # already failing (a full disk or a closed pipe); the run is being abandoned
            pass


def flac_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    """A whole 16-bit FLAC file in memory (FLAC's header holds its length, so it cannot be streamed open-ended)."""
    buffer = io.BytesIO()
    sf.write(buffer, pcm16(wav), sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()
