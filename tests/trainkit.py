"""Helpers for the training tests: a tiny stage spec and packed data with learnable audio."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vita_core.train.stages import RECIPES, StageSpec

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
    """recipes/tiny's stage, shortened for a test (64-token sequences, no warm-up)."""
    from vita_core.train.stages import load_stage

    base = dict(max_steps=2, seq_len=64, warmup_ratio=0.0)
    base.update(changes)
    return load_stage(RECIPES / "tiny", stage).with_overrides(**base)


def small_config(num_mtp: int) -> dict:
    """The tiny preset at half width: the real 168072-id vocabulary, 2 backbone layers."""
    from vita_core.model.checkpoint import preset_config

    config = preset_config("tiny", num_mtp=num_mtp)
    config.update(hidden_size=32, intermediate_size=64)
    return config


def save_random(folder: Path, num_mtp: int, seed: int, tokenizer_dir: Path | None = None,
                random_norms: bool = False) -> Path:
    """A random-init checkpoint in the released format (norms randomised to make copies visible)."""
    from vita_core.model.checkpoint import random_model, save_model

    model = random_model(small_config(num_mtp), seed=seed)
    if random_norms:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "norm" in name:
                    param.copy_(1 + 0.1 * torch.randn(param.shape, generator=gen))
    save_model(model, folder)
    for f in (tokenizer_dir.iterdir() if tokenizer_dir else []):
        shutil.copy(f, folder / f.name)
    return folder
