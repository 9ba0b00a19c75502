"""Data order for training: a seeded permutation per epoch, cut to whole global batches.

The order depends only on (seed, epoch), never on hidden RNG state, so a resumed run sees the
same sequences as an uninterrupted one; and every epoch is a whole number of optimizer steps,
so one process with accumulation 2g and two processes with accumulation g see the same
sequences in each step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from vita_core.errors import InputError


class EpochSampler(Sampler[int]):
    """Permutation of range(n) seeded by (seed, epoch), truncated to a multiple of `block`."""

    def __init__(self, n: int, block: int, seed: int) -> None:
        if n < block:
            raise InputError(
                f"the data holds {n} packed sequences, fewer than one global batch ({block}: micro batch x "
                "grad accumulation x processes); pack more data or lower grad_accum in the recipe"
            )
        self.n, self.block, self.seed, self.epoch = n, block, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n - self.n % self.block

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen)[: len(self)].tolist())


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack packed sequences; position ids alone mark the sample boundaries."""
    return {key: torch.stack([item[key] for item in items]) for key in ("input_ids", "labels", "position_ids")}


def open_packed(data: str | Path | Dataset, seq_len: int) -> Dataset:
    """`vita pack` output (or a ready Dataset), checked against the stage's sequence length."""
    if isinstance(data, Dataset):
        dataset = data
    else:
        from vita_core.data.packed import PackedDataset

        if not Path(data).is_dir():
            raise InputError(f"--data {data} is not a folder; make one with `vita pack`")
        dataset = PackedDataset(data)
    if len(dataset) == 0:
        raise InputError(f"--data {data} holds no packed sequences; re-run `vita pack` with more input")
    found = int(dataset[0]["input_ids"].shape[-1])
    if found != seq_len:
        raise InputError(
            f"the data is packed to {found} tokens but the stage recipe says seq_len {seq_len}; "
            f"re-run `vita pack --seq-len {seq_len}` or change seq_len in the recipe"
        )
    return dataset
