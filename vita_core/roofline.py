"""The speed limit of a decoding schedule: the weight bytes its forwards must read over the read rate.

At batch 1 a forward pass is bound by reading its weights (a decoder layer's matrices, plus the
lm_head rows the chosen token needs), not by arithmetic, so the fastest a schedule can possibly
go on a machine is its forwards' bytes over the measured read bandwidth. `vita bench` prints the
measured rate as a percentage of that limit. Key/value reads are left out: for the bench's few
hundred positions they are well under 1% of the weights.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterable

import torch

from vita_core.model.modeling import VitaAudioForCausalLM
from vita_core.schedule import BACKBONE


def free_cores() -> int:
    """Cores this process may use that other processes are not keeping busy (1-min load), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, round(cores - os.getloadavg()[0])))


def load_average() -> float:
    """The 1-minute load average (reported beside every figure: the machine is shared)."""
    return round(os.getloadavg()[0], 2)


def read_bandwidth(device: torch.device, gib: float = 1.0, repeats: int = 3) -> float:
    """Best-of-`repeats` bytes/s of summing a buffer bigger than the caches (the weights' read rate)."""
    buf = torch.ones(int(gib * 2**30) // 4, dtype=torch.float32, device=device)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        buf.sum()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return buf.numel() * 4 / best


def _nbytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class WeightBytes:
    """Bytes one forward of each producer reads, and one lm_head row."""

    backbone: int
    mtp: tuple[int, ...]
    logit_row: int

    @classmethod
    def of(cls, model: VitaAudioForCausalLM) -> "WeightBytes":
        layers, nb = model.model.layers, model.num_backbone_layers
        norm = _nbytes(model.model.norm.parameters())
        backbone = sum(_nbytes(layers[i].parameters()) for i in range(nb)) + norm
        mtp = tuple(_nbytes(layers[nb + k].parameters()) + _nbytes(model.mtp_projs[k].parameters())
                    + _nbytes(model.mtp_embed_norms[k].parameters()) + _nbytes(model.mtp_hidden_norms[k].parameters())
                    + norm for k in range(model.num_mtp))
        w = model.lm_head.weight
        return cls(backbone, mtp, w.shape[1] * w.element_size())

    def forward(self, producer: int, logit_rows: int) -> int:
        """Bytes of one forward of `producer` that then reads `logit_rows` lm_head rows."""
        return (self.backbone if producer == BACKBONE else self.mtp[producer]) + logit_rows * self.logit_row


def limit_tokens_per_s(weights: WeightBytes, forwards: Iterable[tuple[int, int]], tokens: int,
                       bandwidth: float) -> float:
    """tokens/s if every (producer, logit_rows) forward ran at the read bandwidth."""
    total = sum(weights.forward(p, rows) for p, rows in forwards)
    return tokens * bandwidth / total if total else float("inf")
