"""Content-addressed cache of audio codes, in a folder the user names (never next to the source audio).

Key: SHA-256 of the audio file's bytes, under a folder per codec, so a renamed or copied file
is a hit and an edited one is a miss. Entries are .npy int16 arrays (int32 for a codec with
32768 codes or more), written to a temporary name and renamed, so an interrupted run leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from vita_core.errors import InputError


def file_digest(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fits_int16(codes: np.ndarray) -> bool:
    codes = np.asarray(codes)
    return not codes.size or (int(codes.min()) >= 0 and int(codes.max()) <= np.iinfo(np.int16).max)


class CodeCache:
    """Codes of one codec, keyed by audio content."""

    def __init__(self, folder: str | Path, codec: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", codec):
            raise InputError(f"codec name {codec!r} must be letters, digits, '.', '_' or '-'")
        self.folder = Path(folder) / codec
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        path = self._path(digest)
        if not path.is_file():
            return None
        return np.load(path).astype(np.int64)

    def put(self, digest: str, codes: np.ndarray) -> None:
        path = self._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            np.save(f, np.asarray(codes, dtype=np.int16 if _fits_int16(codes) else np.int32))
        os.replace(tmp, path)
