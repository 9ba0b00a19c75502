"""Writing outputs without losing data: one place for every file and folder vita writes.

A file is written to a hidden temp name beside its target and renamed onto it when complete, so
a failure or a kill never leaves half a file under the real name. The result gets the mode a
plain `open()` would give (0666 less the umask), or keeps the mode of the file it replaces; a
staged folder likewise gets 0777 less the umask. A full disk becomes a `DiskFullError` naming the
path (the temp is removed), instead of whatever the writing library raised.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vita_core.errors import DiskFullError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NEARLY_FULL = 1 << 20  # bytes: below this a write failure without an errno is taken for a full disk


def current_umask() -> int:
    """The process umask: from /proc on Linux, else by setting it and straight back (racy with threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode(path: Path, base: int) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return base & ~current_umask()


def file_mode(path: str | os.PathLike) -> int:
    """The mode open() gives a new file at `path`, or the mode of the file already there."""
    return _mode(Path(path), 0o666)


def folder_mode(path: str | os.PathLike) -> int:
    """The mode mkdir() gives a new folder at `path`, or the mode of the folder already there."""
    return _mode(Path(path), 0o777)


def disk_full(path: str | os.PathLike) -> DiskFullError:
    """The one-line error for a write that ran out of space."""
    return DiskFullError(f"cannot write {path}: no space left on device; free some space or write elsewhere")


def is_disk_full(exc: BaseException, where: str | os.PathLike | None = None) -> bool:
    """Whether `exc` means the disk (or quota) is full.

    OSError carries errno; Rust (safetensors) says "os error 28"; libsndfile and torch's zip
    writer say only that writing failed, so for those the free space left at `where` decides.
    """
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return True
    text = str(exc)
    if "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text:
        return True
    if where is not None and isinstance(exc, (OSError, RuntimeError)):
        try:
            return shutil.disk_usage(Path(where)).free < _NEARLY_FULL
        except OSError:
            return False
    return False


@contextmanager
def reporting_full_disk(path: str | os.PathLike, where: str | os.PathLike | None = None) -> Iterator[None]:
    """Turn a full-disk failure inside the block into DiskFullError(path); other errors pass through."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if is_disk_full(exc, where):
            raise disk_full(path) from exc
        raise


class AtomicFile:
    """A hidden temp file beside `path`; `commit()` renames it onto `path`, `discard()` removes it.

    As a context manager it yields the temp path, commits on success and discards on any error
    (a full disk re-raised as DiskFullError).
    """

    def __init__(self, path: str | os.PathLike, suffix: str = ".tmp") -> None:
        self.path = Path(path)
        self.mode = file_mode(self.path)
        with reporting_full_disk(self.path):
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=suffix, dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> Path:
        try:
            with reporting_full_disk(self.path):
                os.chmod(self.tmp, self.mode)
                os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if kind is None:
            self.commit()
            return
        self.discard()
        if isinstance(exc, Exception) and not isinstance(exc, DiskFullError) and is_disk_full(exc, self.path.parent):
            raise disk_full(self.path) from exc


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with AtomicFile(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: Any, compact: bool = False) -> Path:
    """JSON (keys sorted, so the bytes follow from the data) written atomically."""
    layout: dict[str, Any] = {"separators": (",", ":")} if compact else {"indent": 1}
    return write_text(path, json.dumps(data, ensure_ascii=False, sort_keys=True, **layout) + "\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """One array in .npy format, written atomically."""
    with AtomicFile(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
    return Path(path)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line (a log row); a full disk is reported as DiskFullError."""
    with reporting_full_disk(path), open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def staging_folder(folder: str | os.PathLike, tag: str = "partial") -> Path:
    """A new hidden folder beside `folder` (`.NAME.TAG-xxxx`), with the mode `folder` will have."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with reporting_full_disk(folder):
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.{tag}-", dir=folder.parent))
    os.chmod(staging, folder_mode(folder))
    return staging


def swap_folder(staging: Path, folder: Path) -> None:
    """Put a complete `staging` folder in place of `folder` (which may not exist); the old one goes last."""
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.rename(folder, old)
    os.rename(staging, folder)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_folder(folder: str | os.PathLike, tag: str = "partial") -> Iterator[Path]:
    """Yield a staging folder to fill; on success it replaces `folder`, on any error it is removed.

    A full disk is reported against `folder` (the staging name means nothing to the user).
    """
    folder = Path(folder)
    staging = staging_folder(folder, tag)
    try:
        with reporting_full_disk(folder, staging):
            yield staging
        swap_folder(staging, folder)
    except DiskFullError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise disk_full(folder) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_stale(folder: str | os.PathLike, names: tuple[str, ...]) -> list[Path]:
    """Remove leftovers of killed writes in `folder` whose names start with any of `names`; return them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = sorted(p for p in folder.iterdir() if p.name.startswith(names))
    for p in gone:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return gone
