"""The speed limit of a decoding schedule: each forward's weight reads and matmul work at the machine's rates.

A one-position pass is bound by reading its weights (a decoder layer's matrices, plus the lm_head
rows the chosen token needs). A pass over P positions reads the same bytes but does P times the
multiply-adds, and on a CPU core in float32 an 11-position catch-up already needs about as long
for its arithmetic as for its reads. So each forward costs at least the larger of its bytes over
the measured read bandwidth and its FLOPs over the measured matmul rate (a roofline), and the
fastest a schedule can possibly go is its tokens over the sum. `vita bench` prints the measured
rate as a percentage of that limit. Key/value reads and attention are left out: for the bench's
few hundred positions they are well under 1% of the weights.
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


def matmul_flops(device: torch.device, dtype: torch.dtype, repeats: int = 3) -> float:
    """Best-of-`repeats` FLOP/s of a 256x2048 by 2048x2048 product, through the kernel the engine uses
    (oneDNN on a prepacked weight on CPU where it runs this dtype, else torch's matmul)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(256, 2048, generator=g).to(device=device, dtype=dtype)
    w = torch.randn(2048, 2048, generator=g).to(device=device, dtype=dtype)
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and dtype in (torch.float32, torch.bfloat16):
        packed = torch.ops.mkldnn._reorder_linear_weight(w, None)

        def run() -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    else:
        def run() -> torch.Tensor:
            return x @ w.T
    run()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * x.shape[0] * w.numel() / best


def _nbytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class WeightBytes:
    """Bytes one forward of each producer reads, one lm_head row, and the bytes of one weight."""

    backbone: int
    mtp: tuple[int, ...]
    logit_row: int
    element: int = 4

    @classmethod
    def of(cls, model: VitaAudioForCausalLM) -> "WeightBytes":
        layers, nb = model.model.layers, model.num_backbone_layers
        norm = _nbytes(model.model.norm.parameters())
        backbone = sum(_nbytes(layers[i].parameters()) for i in range(nb)) + norm
        mtp = tuple(_nbytes(layers[nb + k].parameters()) + _nbytes(model.mtp_projs[k].parameters())
                    + _nbytes(model.mtp_embed_norms[k].parameters()) + _nbytes(model.mtp_hidden_norms[k].parameters())
                    + norm for k in range(model.num_mtp))
        w = model.lm_head.weight
        return cls(backbone, mtp, w.shape[1] * w.element_size(), w.element_size())

    def forward(self, producer: int, logit_rows: int) -> int:
        """Bytes of one forward of `producer` that then reads `logit_rows` lm_head rows."""
        return (self.backbone if producer == BACKBONE else self.mtp[producer]) + logit_rows * self.logit_row

    def flops(self, producer: int, positions: int, logit_rows: int) -> int:
        """Multiply-adds x 2 of that forward over `positions` rows (logits for the last one only)."""
        decoder = self.backbone if producer == BACKBONE else self.mtp[producer]
        return 2 * (positions * decoder + logit_rows * self.logit_row) // self.element


def limit_tokens_per_s(weights: WeightBytes, forwards: Iterable[tuple[int, int, int]], tokens: int,
                       bandwidth: float, flops_per_s: float = float("inf")) -> float:
    """tokens/s if every (producer, positions, logit_rows) forward took the larger of its read time at
    `bandwidth` and its arithmetic at `flops_per_s`."""
    total = sum(max(weights.forward(p, rows) / bandwidth, weights.flops(p, n, rows) / flops_per_s)
                for p, n, rows in forwards)
    return tokens / total if total else float("inf")
