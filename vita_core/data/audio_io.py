"""The one place the data pipeline reads audio: any file soundfile reads, as float32 mono at a given rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


def read_mono(path: Path, sample_rate: int) -> np.ndarray:
    """Decode, average channels, resample to `sample_rate`. Raises soundfile/OS errors on unreadable files."""
    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    wav = wav.mean(axis=1)
    if sr != sample_rate and len(wav):
        wav = soxr.resample(wav, sr, sample_rate)
    return np.ascontiguousarray(wav, dtype=np.float32)


def duration_seconds(path: Path) -> float:
    """Length from the header only, to reject long files before decoding them."""
    info = sf.info(str(path))
    return info.frames / info.samplerate
