"""Content-addressed cache of audio codes, in a folder the user names (never next to the source audio).

Key: SHA-256 of the audio file's bytes, under a folder per codec, so a renamed or copied file
is a hit and an edited one is a miss. Entries are .npy int16 arrays (int32 for a codec with
32768 codes or more), written to a temporary name and renamed, so an interrupted run leaves no
half-written entry. An entry that cannot be read all the same (a disk error, a copy cut short)
is removed and reported as `CorruptEntry`, so the caller encodes that file again.
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


def _fits_int16(codes: np.ndarray) -> bool:
    codes = np.asarray(codes)
    return not codes.size or (int(codes.min()) >= 0 and int(codes.max()) <= np.iinfo(np.int16).max)


class CorruptEntry(Exception):
    """A cache entry that is not a readable code array; it has been removed."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


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
        """The codes stored for `digest`, None if there are none; raises CorruptEntry for a bad entry."""
        path = self._path(digest)
        if not path.is_file():
            return None
        try:
            codes = np.load(path, allow_pickle=False)
            if codes.dtype not in (np.int16, np.int32) or codes.ndim != 1:
                raise ValueError(f"holds {codes.dtype} {codes.shape}, not 1-D int16/int32 codes")
        except (ValueError, OSError, EOFError) as exc:  # numpy says "EOF" for a cut file
            path.unlink(missing_ok=True)
            raise CorruptEntry(path, str(exc)) from None
        return codes.astype(np.int64)

    def put(self, digest: str, codes: np.ndarray) -> None:
        path = self._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_npy(path, np.asarray(codes, dtype=np.int16 if _fits_int16(codes) else np.int32))
