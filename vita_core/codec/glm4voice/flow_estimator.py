"""The vector-field estimator of the GLM-4-Voice flow decoder: a 1-D U-Net with transformer blocks.

Released layout (config.yaml `flow.decoder.estimator`, Matcha-TTS building blocks): the input is
[x, mu, speaker, cond] stacked on channels (4 x 80 = 320); a sinusoidal timestep embedding
goes through a two-layer MLP; down blocks (ResNet + transformer blocks + stride-2 conv, the
last one a plain conv), twelve mid blocks, up blocks with skip connections (the first one
upsamples with a transposed conv), then a final conv block and a 1x1 projection to 80 mel
channels. Parameter names follow the released flow.pt (`decoder.estimator.down_blocks.0.0.block1`,
`...1.0.attn1.to_q`, ...). Batch rows never interact, so the two passes of classifier-free
guidance run as one batch of two. Padding masks are not needed: vita decodes one utterance
at a time, so every frame is valid (the released code's 0/1 float attention mask is then a
constant bias that softmax ignores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class EstimatorConfig:
    in_channels: int = 320
    out_channels: int = 80
    channels: tuple[int, ...] = (256, 256)
    attention_head_dim: int = 64
    n_blocks: int = 4
    num_mid_blocks: int = 12
    num_heads: int = 8


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """[B] flow times in [0, 1] -> [B, dim] sinusoids (sin half, then cos half)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    angles = scale * t.to(torch.promote_types(t.dtype, torch.float32))[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ConvBlock(nn.Module):
    """Conv(k3) -> GroupNorm(8) -> Mish (Matcha's Block1D; the index names are the released keys)."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(dim, dim_out, 3, padding=1), nn.GroupNorm(8, dim_out), nn.Mish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_dim, dim_out))
        self.block1 = ConvBlock(dim, dim_out)
        self.block2 = ConvBlock(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x) + self.mlp(temb).unsqueeze(-1)
        return self.block2(h) + self.res_conv(x)


class SelfAttention(nn.Module):
    """diffusers-style attention: to_q/to_k/to_v without bias, to_out.0 with bias."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, -1).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](out.transpose(1, 2).reshape(b, t, -1))


class GeluProjection(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x))


class TransformerBlock(nn.Module):
    """x + attn1(norm1(x)), then x + ff(norm3(x)); ff is Linear-GELU-Linear with 4x width."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = SelfAttention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = nn.Module()
        self.ff.net = nn.ModuleList([GeluProjection(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        h = self.norm3(x)
        for module in self.ff.net:
            h = module(h)
        return x + h


class TimeMLP(nn.Module):
    def __init__(self, dim: int, time_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(dim, time_dim)
        self.linear_2 = nn.Linear(time_dim, time_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


def _stage(cfg: EstimatorConfig, dim_in: int, dim: int, time_dim: int, last: nn.Module | None) -> nn.ModuleList:
    blocks = nn.ModuleList(TransformerBlock(dim, cfg.num_heads, cfg.attention_head_dim) for _ in range(cfg.n_blocks))
    parts = [ResnetBlock(dim_in, dim, time_dim), blocks]
    return nn.ModuleList(parts + ([last] if last is not None else []))


class Downsample(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FlowEstimator(nn.Module):
    """(x, mu, t, spk, cond) -> d x / d t, all [B, 80, T] except t [B] or [] and spk [B, 80]."""

    def __init__(self, cfg: EstimatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = tuple(cfg.channels)
        time_dim = ch[0] * 4
        self.time_mlp = TimeMLP(cfg.in_channels, time_dim)
        self.down_blocks = nn.ModuleList()
        dim_out = cfg.in_channels
        for i, dim in enumerate(ch):
            last = i == len(ch) - 1
            down = nn.Conv1d(dim, dim, 3, padding=1) if last else Downsample(dim)
            self.down_blocks.append(_stage(cfg, dim_out, dim, time_dim, down))
            dim_out = dim
        self.mid_blocks = nn.ModuleList(_stage(cfg, ch[-1], ch[-1], time_dim, None) for _ in range(cfg.num_mid_blocks))
        self.up_blocks = nn.ModuleList()
        ups = ch[::-1] + (ch[0],)
        for i in range(len(ups) - 1):
            last = i == len(ups) - 2
            up = nn.Conv1d(ups[i + 1], ups[i + 1], 3, padding=1) if last else Upsample(ups[i + 1])
            self.up_blocks.append(_stage(cfg, 2 * ups[i], ups[i + 1], time_dim, up))
        self.final_block = ConvBlock(ups[-1], ups[-1])
        self.final_proj = nn.Conv1d(ups[-1], cfg.out_channels, 1)

    @staticmethod
    def _transformers(blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        for block in blocks:
            h = block(h)
        return h.transpose(1, 2)

    def forward(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, spk: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(timestep_embedding(t.reshape(-1), self.cfg.in_channels).to(x.dtype))
        h = torch.cat([x, mu, spk[:, :, None].expand(-1, -1, x.shape[-1]), cond], dim=1)
        skips = []
        for resnet, blocks, down in self.down_blocks:
            h = self._transformers(blocks, resnet(h, temb))
            skips.append(h)
            h = down(h)
        for resnet, blocks in self.mid_blocks:
            h = self._transformers(blocks, resnet(h, temb))
        for resnet, blocks, up in self.up_blocks:
            skip = skips.pop()
            h = torch.cat([h[:, :, : skip.shape[-1]], skip], dim=1)
            h = up(self._transformers(blocks, resnet(h, temb)))
        return self.final_proj(self.final_block(h))
