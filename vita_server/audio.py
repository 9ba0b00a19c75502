"""Audio as OpenAI's chat and realtime APIs carry it: base64 PCM16, mono, 24 kHz, both ways.

The model's decoder speaks at its own rate (22.05 kHz for GLM-4-Voice) and hears at 16 kHz, so both
directions go through soxr's streaming resampler: chunk by chunk, with no seam between chunks.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import soundfile as sf
import soxr

from vita_core.sinks import to_pcm16

API_RATE = 24000  # OpenAI's pcm16


class Pcm16Out:
    """Float PCM at `rate` in, PCM16 bytes at 24 kHz out, one chunk at a time."""

    def __init__(self, rate: int) -> None:
        self._stream = None if rate == API_RATE else soxr.ResampleStream(rate, API_RATE, 1, dtype="float32")

    def push(self, wav: np.ndarray, last: bool = False) -> bytes:
        wav = np.asarray(wav, dtype=np.float32)
        if self._stream is not None:
            wav = self._stream.resample_chunk(wav, last=last)
        return to_pcm16(wav)


class Pcm16In:
    """PCM16 bytes at 24 kHz in (any chunking, even odd byte counts), float32 at `rate` out."""

    def __init__(self, rate: int) -> None:
        self._stream = None if rate == API_RATE else soxr.ResampleStream(API_RATE, rate, 1, dtype="float32")
        self._odd = b""

    def push(self, data: bytes) -> np.ndarray:
        data, self._odd = self._odd + data, b""
        if len(data) % 2:
            data, self._odd = data[:-1], data[-1:]
        wav = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        return wav if self._stream is None else self._stream.resample_chunk(wav)


def b64decode(text: object) -> bytes | None:
    """Strict base64 -> bytes; None when `text` is not a base64 string."""
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_file(pcm: bytes, fmt: str) -> bytes:
    """24 kHz PCM16 bytes as a whole `fmt` file (wav, flac) or left raw (pcm16)."""
    if fmt == "pcm16":
        return pcm
    buffer = io.BytesIO()
    samples = np.frombuffer(pcm, dtype="<i2")
    sf.write(buffer, samples, API_RATE, format=fmt.upper(), subtype="PCM_16")
    return buffer.getvalue()

