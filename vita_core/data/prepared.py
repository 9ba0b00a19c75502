"""The on-disk form of a prepared corpus: what `vita prepare` writes and `vita pack` reads.

A prepared folder holds, per shard K:
- `shard-K.npy`: int32 token ids of its samples, back to back, in ChatML with audio as
  <|begin_of_audio|> codes <|end_of_audio|> (not yet interleaved: that depends on the stage);
- `shard-K.json`: per sample its id, kind, offset and length in the .npy and the [start, end)
  of each assistant turn's content; plus the samples of that shard that were skipped, and why.
  It is written last, so its presence marks the shard finished.
`manifest.json` names the token ids a packer needs (so packing needs no tokenizer) and the codec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vita_core.errors import InputError
from vita_core.files import write_json, write_npy

FORMAT = "vita-prepared-1"
MANIFEST = "manifest.json"
REPORT = "report.json"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def write_shard(folder: Path, index: int, ids: list[list[int]], samples: list[dict], skipped: list[dict]) -> None:
    """One finished shard: token ids of each sample (in order) and their metadata."""
    offset = 0
    for sample, sample_ids in zip(samples, ids):
        sample["offset"], sample["length"] = offset, len(sample_ids)
        offset += len(sample_ids)
    flat = np.fromiter((t for s in ids for t in s), dtype=np.int32, count=offset)
    write_npy(folder / f"{shard_name(index)}.npy", flat)
    write_json(folder / f"{shard_name(index)}.json", {"samples": samples, "skipped": skipped}, compact=True)


def read_shard_meta(folder: Path, index: int) -> dict | None:
    """A finished shard's metadata, or None if it was not finished."""
    path = folder / f"{shard_name(index)}.json"
    if not path.is_file() or not (folder / f"{shard_name(index)}.npy").is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class SampleRef:
    """Where one prepared sample lives."""

    shard: int
    offset: int
    length: int
    id: str
    kind: str
    assistant: tuple[tuple[int, int], ...]


class PreparedSet:
    """Read-only view of a prepared folder; token ids are memory-mapped."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest_path = self.folder / MANIFEST
        if not manifest_path.is_file():
            raise InputError(f"{self.folder} is not a prepared folder (no {MANIFEST}); run `vita prepare` first")
        self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if self.manifest.get("format") != FORMAT:
            raise InputError(f"{manifest_path} is format {self.manifest.get('format')!r}, expected {FORMAT!r}")
        if not self.manifest.get("complete"):
            raise InputError(f"{self.folder}: the prepare run did not finish; re-run the same `vita prepare` command to resume it")
        self.layout: dict[str, Any] = self.manifest["layout"]
        self.samples: list[SampleRef] = []
        self._arrays: list[np.ndarray] = []
        for index in range(self.manifest["shards"]):
            meta = read_shard_meta(self.folder, index)
            if meta is None:
                raise InputError(f"{self.folder}: {shard_name(index)} is missing; re-run `vita prepare` to finish it")
            self._arrays.append(np.load(self.folder / f"{shard_name(index)}.npy", mmap_mode="r"))
            for s in meta["samples"]:
                spans = tuple((int(a), int(b)) for a, b in s["assistant"])
                self.samples.append(SampleRef(index, s["offset"], s["length"], s["id"], s["kind"], spans))

    def __len__(self) -> int:
        return len(self.samples)

    def ids(self, ref: SampleRef) -> np.ndarray:
        return self._arrays[ref.shard][ref.offset : ref.offset + ref.length]
