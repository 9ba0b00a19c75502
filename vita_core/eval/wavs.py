"""Reading outputs for ASR (first channel, 16 kHz float32) and writing wavs atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from vita_core import files
from vita_core.audio import SoundWriter
from vita_core.errors import AudioError

ASR_RATE = 16000


def read_16k(path: Path) -> np.ndarray:
    """First channel of `path` as float32 at 16 kHz (soxr high quality); an empty file gives an empty array."""
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as exc:  # soundfile raises LibsndfileError, a RuntimeError
        raise AudioError(f"{path}: cannot read audio ({exc}); re-create or remove the file") from exc
    wav = wav[:, 0]
    if sr != ASR_RATE and wav.size:
        wav = soxr.resample(wav, sr, ASR_RATE, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(wav)


def is_complete_wav(path: Path) -> bool:
    """True for a readable RIFF/WAVE file holding every byte its header announces (0 samples is complete).

    A file cut short (a run killed mid-write by a tool without atomic writes, a full disk) is not,
    although libsndfile would read its first part without complaint.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(12)
        sf.info(str(path))
    except (OSError, RuntimeError):  # soundfile raises LibsndfileError, a RuntimeError
        return False
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return False
    return int.from_bytes(head[4:8], "little") + 8 <= size


def write_wav(path: Path, wav: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM through a temp file + rename, so an interrupted run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = SoundWriter(path, sample_rate)
    writer.write(np.asarray(wav, dtype=np.float32).reshape(-1))
    writer.close()


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_text(path, text)
