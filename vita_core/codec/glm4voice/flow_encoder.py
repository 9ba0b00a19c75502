"""The token encoder of the GLM-4-Voice flow decoder: a block-causal Conformer.

Released layout (config.yaml `flow.encoder`): a Linear+LayerNorm input layer, ESPnet-style
relative positional encoding, six pre-norm layers of relative-position self-attention and a
Swish feed-forward (no convolution module, no macaron), and a final LayerNorm. Attention is
block-causal: a token sees its own block of `block_size` tokens and every earlier block, which
is what lets the decoder start from the first ten codes. Parameter names follow the released
flow.pt (`encoder.embed.out.0`, `encoder.encoders.N.self_attn.linear_q`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderConfig:
    input_size: int = 512
    output_size: int = 512
    attention_heads: int = 8
    linear_units: int = 2048
    num_blocks: int = 6
    block_size: int = 10


def block_causal_mask(length: int, block_size: int, device: torch.device | None = None) -> torch.Tensor:
    """True where query i may attend to key j: j in an earlier block, or j <= i, or j in i's block."""
    i = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    return (j <= i) | (j // block_size == i // block_size)


def relative_positions(length: int, d_model: int, device: torch.device | None = None) -> torch.Tensor:
    """Sinusoids for relative offsets length-1 ... -(length-1), in that order (ESPnet's "new" rel-pos)."""
    offsets = torch.arange(length - 1, -length, -1, dtype=torch.float32, device=device)[:, None]
    freqs = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32, device=device) * -(math.log(10000.0) / d_model))
    table = torch.zeros(2 * length - 1, d_model, device=device)
    table[:, 0::2] = torch.sin(offsets * freqs)
    table[:, 1::2] = torch.cos(offsets * freqs)
    return table


class RelPositionSelfAttention(nn.Module):
    """Transformer-XL attention: content score (q+u)k and position score (q+v)p of offset i-j."""

    def __init__(self, heads: int, size: int) -> None:
        super().__init__()
        self.h, self.d_k = heads, size // heads
        self.linear_q = nn.Linear(size, size)
        self.linear_k = nn.Linear(size, size)
        self.linear_v = nn.Linear(size, size)
        self.linear_out = nn.Linear(size, size)
        self.linear_pos = nn.Linear(size, size, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.d_k))

    def forward(self, x: torch.Tensor, pos: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.d_k)
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos).view(1, -1, self.h, self.d_k).transpose(1, 2)
        content = (q + self.pos_bias_u).transpose(1, 2) @ k.transpose(-2, -1)
        by_offset = (q + self.pos_bias_v).transpose(1, 2) @ p.transpose(-2, -1)
        # column (t-1) - i + j of the offset table holds offset i - j
        idx = (t - 1) - torch.arange(t, device=x.device)[:, None] + torch.arange(t, device=x.device)[None, :]
        position = torch.gather(by_offset, -1, idx.expand(b, self.h, t, t))
        scores = (content + position) / math.sqrt(self.d_k)
        scores = scores.masked_fill(~allowed, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return self.linear_out(out.transpose(1, 2).reshape(b, t, self.h * self.d_k))


class FeedForward(nn.Module):
    def __init__(self, size: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(size, hidden)
        self.w_2 = nn.Linear(hidden, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(nn.functional.silu(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Pre-norm: x + attn(norm_mha(x)), then x + ff(norm_ff(x))."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.self_attn = RelPositionSelfAttention(cfg.attention_heads, cfg.output_size)
        self.feed_forward = FeedForward(cfg.output_size, cfg.linear_units)
        self.norm_ff = nn.LayerNorm(cfg.output_size, eps=1e-5)
        self.norm_mha = nn.LayerNorm(cfg.output_size, eps=1e-5)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), pos, allowed)
        return x + self.feed_forward(self.norm_ff(x))


class InputLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Linear(cfg.input_size, cfg.output_size), nn.LayerNorm(cfg.output_size, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x) * math.sqrt(self.out[0].out_features)


class BlockConformerEncoder(nn.Module):
    """[B, T, input_size] token embeddings -> [B, T, output_size]; block-causal over T."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = InputLayer(cfg)
        self.encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.num_blocks))
        self.after_norm = nn.LayerNorm(cfg.output_size, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        x = self.embed(x)
        pos = relative_positions(t, self.cfg.output_size, x.device).to(x.dtype)
        allowed = block_causal_mask(t, self.cfg.block_size, x.device)
        for layer in self.encoders:
            x = layer(x, pos, allowed)
        return self.after_norm(x)
