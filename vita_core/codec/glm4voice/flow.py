"""GLM-4-Voice's flow-matching model: speech codes -> 80-bin mel frames at 22050/256 Hz.

Codes are embedded, encoded by the block-causal Conformer, projected to 80 channels and
stretched (nearest neighbour, then a small conv stack) to the mel frame rate: N codes at
12.5 Hz become int(N / 12.5 * 22050 / 256) frames. The mel comes from an Euler solve of the
conditional flow from Gaussian noise, with classifier-free guidance, a cosine time schedule and
a configurable number of steps (the released code hard-codes 10; the reference's fork adds an
argument). `cond` carries already known mel frames (a prompt) at the start of the window, which
is how streaming continues a previous chunk. Parameter names follow the released flow.pt.

The noise is drawn per block of frames from a generator seeded by the block's absolute
position, so a frame gets the same noise whether it is decoded in one shot or in a chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from vita_core.codec.glm4voice.cuda_graphs import GraphedModule
from vita_core.codec.glm4voice.flow_encoder import BlockConformerEncoder, EncoderConfig
from vita_core.codec.glm4voice.flow_estimator import EstimatorConfig, FlowEstimator

NOISE_BLOCK = 64  # frames per independently seeded noise block


@dataclass(frozen=True)
class FlowConfig:
    vocab_size: int = 16384
    input_size: int = 512
    output_size: int = 80
    spk_embed_dim: int = 192
    input_frame_rate: float = 12.5
    frames_per_second: float = 22050 / 256
    regulator_layers: int = 4
    cfg_rate: float = 0.7
    cosine_schedule: bool = True
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)

    def frames_for(self, num_codes: int) -> int:
        """Mel frames that `num_codes` codes decode to, as the released code computes it."""
        return int(num_codes / self.input_frame_rate * self.frames_per_second)


class LengthRegulator(nn.Module):
    """Nearest-neighbour stretch to the mel length, then (conv k3, GroupNorm, Mish) x n and a 1x1 conv."""

    def __init__(self, channels: int, layers: int) -> None:
        super().__init__()
        parts: list[nn.Module] = []
        for _ in range(layers):
            parts += [nn.Conv1d(channels, channels, 3, 1, 1), nn.GroupNorm(1, channels), nn.Mish()]
        self.model = nn.Sequential(*parts, nn.Conv1d(channels, channels, 1, 1))

    def forward(self, h: torch.Tensor, frames: int) -> torch.Tensor:
        return self.model(F.interpolate(h, size=frames, mode="nearest"))


class CFMSolver(nn.Module):
    """Holds the estimator under the released name `decoder.estimator`."""

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        self.estimator = FlowEstimator(cfg.estimator)


def flow_noise(start: int, frames: int, channels: int, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[1, channels, frames] standard normal noise for absolute frames start .. start+frames-1."""
    if frames <= 0:
        return torch.zeros(1, channels, 0, device=device, dtype=dtype)
    first, last = start // NOISE_BLOCK, (start + frames - 1) // NOISE_BLOCK
    blocks = []
    for b in range(first, last + 1):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + b)
        blocks.append(torch.randn(channels, NOISE_BLOCK, generator=gen))
    table = torch.cat(blocks, dim=1)
    offset = start - first * NOISE_BLOCK
    return table[None, :, offset : offset + frames].to(device=device, dtype=dtype)


class FlowDecoder(nn.Module):
    """Codes -> mel, with optional known mel frames (`prompt`) at the start of the window."""

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = BlockConformerEncoder(cfg.encoder)
        self.encoder_proj = nn.Linear(cfg.encoder.output_size, cfg.output_size)
        self.length_regulator = LengthRegulator(cfg.output_size, cfg.regulator_layers)
        self.decoder = CFMSolver(cfg)
        self.graphed: GraphedModule | None = None

    def use_cuda_graphs(self, enabled: bool = True) -> None:
        """Replay the estimator through CUDA graphs (one capture per window length) on a GPU."""
        self.graphed = GraphedModule(self.decoder.estimator) if enabled and torch.cuda.is_available() else None

    def condition(self, codes: torch.Tensor, frames: int) -> torch.Tensor:
        """[N] codes -> mu [1, 80, frames], the encoder's content at the mel frame rate."""
        h = self.encoder(self.input_embedding(codes.clamp(min=0))[None])
        return self.length_regulator(self.encoder_proj(h).transpose(1, 2), frames)

    @torch.inference_mode()
    def mel(
        self,
        codes: torch.Tensor,
        frames: int,
        steps: int,
        prompt: torch.Tensor | None = None,
        frame_offset: int = 0,
        seed: int = 42,
    ) -> torch.Tensor:
        """[N] codes -> [1, 80, frames] mel; frames 0..P-1 are conditioned on `prompt` [1, 80, P].

        `frame_offset` is the absolute index of the window's first frame (it picks the noise).
        """
        mu = self.condition(codes, frames)
        dtype, device = mu.dtype, mu.device
        spk = self.spk_embed_affine_layer(torch.zeros(1, self.cfg.spk_embed_dim, device=device, dtype=dtype))
        cond = torch.zeros_like(mu)
        if prompt is not None and prompt.shape[-1]:
            cond[:, :, : prompt.shape[-1]] = prompt.to(dtype)
        x = flow_noise(frame_offset, frames, self.cfg.output_size, seed, device, dtype)
        times = torch.linspace(0, 1, steps + 1, device=device, dtype=torch.promote_types(dtype, torch.float32))
        if self.cfg.cosine_schedule:
            times = 1 - torch.cos(times * 0.5 * math.pi)
        rate = self.cfg.cfg_rate
        mu2, spk2, cond2 = (torch.cat([v, torch.zeros_like(v)]) for v in (mu, spk, cond))
        estimator = self.decoder.estimator
        ts = times[:1].expand(2 if rate > 0 else 1)
        if self.graphed is not None and device.type == "cuda":
            shapes = (x.expand(2, -1, -1), mu2, ts, spk2, cond2) if rate > 0 else (x, mu, ts, spk, cond)
            estimator = self.graphed.prepare(*shapes)
        for k in range(steps):
            t, dt = times[k], times[k + 1] - times[k]
            if rate > 0:
                both = estimator(x.expand(2, -1, -1), mu2, t.expand(2), spk2, cond2)
                velocity = (1.0 + rate) * both[:1] - rate * both[1:]
            else:
                velocity = estimator(x, mu, t.expand(1), spk, cond)
            x = x + dt.to(dtype) * velocity
        return x
