"""Content-addressed cache of audio codes, in a folder the user names (never next to the source audio).

Key: SHA-256 of the audio file's bytes, under a folder per codec, so a renamed or copied file
is a hit and an edited one is a miss. Entries are .npy int16 arrays (codes < 16384),
written to a temporary name and renamed, so an interrupted run leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from vita_core.errors import InputError
from vita_core.files import write_npy


def file_digest(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
        write_npy(path, np.asarray(codes, dtype=np.int16))
