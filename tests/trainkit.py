"""Helpers for the training tests: a tiny stage spec and packed data with learnable audio."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from vita_core.train.stages import StageSpec

AUDIO0, BOA, EOA, IM_START, IM_END, PAD = 151685, 151674, 151675, 151644, 151645, 151643
CODES = 32  # audio codes in use: code c is followed by (5c + 3) mod 32, so later codes are predictable


def sample(gen: torch.Generator, audio_len: int, text_len: int) -> tuple[list[int], list[int]]:
    """[im_start, prompt text, BOA, codes, EOA, im_end]; labels cover BOA..im_end."""
    text = torch.randint(1000, 1064, (text_len,), generator=gen).tolist()
    code = int(torch.randint(0, CODES, (1,), generator=gen))
    codes = []
    for _ in range(audio_len):
        codes.append(AUDIO0 + code)
        code = (5 * code + 3) % CODES
    ids = [IM_START, *text, BOA, *codes, EOA, IM_END]
    labels = [-100] * (1 + text_len) + ids[1 + text_len:]
    return ids, labels


class SyntheticPacked(Dataset):
    """Items shaped like vita_core.data.packed.PackedDataset's: int64 input_ids, labels,
    position_ids [seq_len] (restarting per sample and over the padding) and seq_lens."""

    def __init__(self, n: int, seq_len: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            ids, labels, lens = [], [], []
            while True:
                a, t = int(torch.randint(6, 20, (1,), generator=gen)), int(torch.randint(2, 6, (1,), generator=gen))
                s_ids, s_labels = sample(gen, a, t)
                if len(ids) + len(s_ids) > seq_len:
                    break
                ids += s_ids
                labels += s_labels
                lens.append(len(s_ids))
            pad = seq_len - len(ids)
            pos = [p for n_ in lens for p in range(n_)] + list(range(pad))
            self.items.append({
                "input_ids": torch.tensor(ids + [PAD] * pad), "labels": torch.tensor(labels + [-100] * pad),
                "position_ids": torch.tensor(pos), "seq_lens": torch.tensor(lens),
            })

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.items[index]


def tiny_spec(stage: int, **changes) -> StageSpec:
    """Stage semantics from recipes/stages, sizes for a test."""
    from vita_core.train.stages import load_stage

    base = dict(max_steps=4, seq_len=64, grad_accum=2, micro_batch_size=1, warmup_ratio=0.0,
                gradient_checkpointing=False, lr=1e-3 if stage in (2, 3) else 3e-4)
    base.update(changes)
    return load_stage(None, stage).with_overrides(**base)
