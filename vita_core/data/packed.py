"""The trainer's view of packed shards: a torch Dataset over memory-mapped numpy arrays.

Each item is one packed sequence as int64 tensors: `input_ids`, `labels`, `position_ids`
(each [seq_len]; positions restart at 0 for every sample and for the padding) and `seq_lens`
(the real sample lengths in order, padding excluded). Padding fills the rest of the sequence
with <|endoftext|> and label -100 and forms its own final segment, so a block-diagonal mask or
flash-attn `cu_seqlens` is `cumsum([0, *seq_lens, seq_len - sum(seq_lens)])`.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vita_core.data.pack import FORMAT
from vita_core.errors import InputError


def position_ids(seq_lens: np.ndarray, seq_len: int) -> np.ndarray:
    """0..n-1 for each sample, then 0.. again over the padding."""
    lens = np.asarray(seq_lens, dtype=np.int64)
    pad = seq_len - int(lens.sum())
    segments = np.concatenate([lens, [pad]]) if pad else lens
    starts = np.repeat(np.cumsum(segments) - segments, segments)
    return np.arange(seq_len, dtype=np.int64) - starts


class PackedDataset(Dataset):
    """Packed sequences written by `vita pack`, read lazily with memory mapping."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest = self.folder / "manifest.json"
        if not manifest.is_file():
            raise InputError(f"{self.folder} has no manifest.json; it is not the output of a finished `vita pack`")
        self.manifest = json.loads(manifest.read_text(encoding="utf-8"))
        if self.manifest.get("format") != FORMAT:
            raise InputError(f"{manifest} is format {self.manifest.get('format')!r}, expected {FORMAT!r}")
        self.seq_len = int(self.manifest["seq_len"])
        self._names = [shard["name"] for shard in self.manifest["shards"]]
        self._starts = [0]
        for shard in self.manifest["shards"]:
            self._starts.append(self._starts[-1] + int(shard["packs"]))
        self._shards: list[dict[str, np.ndarray]] | None = None

    def _open(self) -> list[dict[str, np.ndarray]]:
        """Map the shard files on first use (in each DataLoader worker), never pickling their contents."""
        if self._shards is None:
            self._shards = [
                {part: np.load(self.folder / f"{name}.{part}.npy", mmap_mode="r") for part in ("tokens", "labels", "lens", "offsets")}
                for name in self._names
            ]
        return self._shards

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_shards": None}

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"pack {index} out of range ({len(self)} packs)")
        index %= len(self)
        k = bisect.bisect_right(self._starts, index) - 1
        row = index - self._starts[k]
        shard = self._open()[k]
        lens = np.asarray(shard["lens"][shard["offsets"][row] : shard["offsets"][row + 1]], dtype=np.int64)
        return {
            "input_ids": torch.from_numpy(np.asarray(shard["tokens"][row], dtype=np.int64)),
            "labels": torch.from_numpy(np.asarray(shard["labels"][row], dtype=np.int64)),
            "position_ids": torch.from_numpy(position_ids(lens, self.seq_len)),
            "seq_lens": torch.from_numpy(lens),
        }
