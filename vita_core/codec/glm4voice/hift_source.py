"""Building blocks of the HiFT vocoder: weight-normed convolutions, Snake, residual blocks,
the F0 predictor and the harmonic-plus-noise excitation source.

Module and parameter names follow the released GLM-4-Voice `hift.pt` so its state dict loads
as it is; `hift.py` assembles these into the vocoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def weight_normed(module: nn.Module) -> nn.Module:
    """Weight normalisation over dim 0, as the released weights were trained with.

    Parameters live as `parametrizations.weight.original0/1`; `hift.py` maps them to the
    released `weight_g` / `weight_v` names when saving and loading.
    """
    return weight_norm(module, name="weight", dim=0)


class Snake(nn.Module):
    """Periodic activation x + sin^2(alpha x) / alpha with one learned alpha per channel (BigVGAN)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha[None, :, None]
        return x + (1.0 / (alpha + 1e-9)) * torch.sin(x * alpha).pow(2)


class ResBlock(nn.Module):
    """Three dilated conv pairs with Snake activations, each added back onto its input."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()

        def conv(dilation: int) -> nn.Module:
            padding = (kernel_size - 1) * dilation // 2
            return weight_normed(nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=padding))

        self.convs1 = nn.ModuleList(conv(d) for d in dilations)
        self.convs2 = nn.ModuleList(conv(1) for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for act1, conv1, act2, conv2 in zip(self.activations1, self.convs1, self.activations2, self.convs2):
            x = x + conv2(act2(conv1(act1(x))))
        return x


class F0Predictor(nn.Module):
    """Mel [B, n_mels, T] -> non-negative F0 in Hz per frame [B, T]: five conv+ELU layers and a linear head."""

    def __init__(self, in_channels: int, cond_channels: int, num_class: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            conv = nn.Conv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1)
            layers.append(weight_normed(conv))
            layers.append(nn.ELU())
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, num_class)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        hidden = self.condnet(mel).transpose(1, 2)
        return self.classifier(hidden).squeeze(-1).abs()


class HarmonicSource(nn.Module):
    """Sample-rate F0 [B, 1, L] -> excitation [B, 1, L] (neural source-filter, hn-NSF).

    Sines at F0 and its overtones (each overtone with a random start phase) in voiced samples,
    Gaussian noise everywhere (louder where unvoiced), merged into one channel by a linear
    layer and tanh. The random draws come from `generator` (on its own device, so a CPU generator
    gives the same source on any device) in the order the reference draws them: the phases with
    `rand`, then the noise with `randn`. With no generator they come from the global RNGs as in the
    reference: phases from the CPU one, noise from the one of F0's device. The sines are always
    computed in float32: a half-precision running phase would drift within a second of audio.
    """

    def __init__(self, sample_rate: int, harmonics: int, sine_amp: float, noise_std: float,
                 voiced_threshold: float) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.harmonics = harmonics
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold
        self.l_linear = nn.Linear(harmonics + 1, 1)

    @torch.no_grad()
    def sines(self, f0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """F0 [B, 1, L] in Hz -> noisy harmonic stack [B, harmonics + 1, L] in float32."""
        f0 = f0.float()
        device = f0.device
        multiples = torch.arange(1, self.harmonics + 2, dtype=f0.dtype, device=device)[None, :, None]
        cycles = f0 * multiples / self.sample_rate
        theta = 2 * math.pi * (torch.cumsum(cycles, dim=-1) % 1)

        phase_device = generator.device if generator is not None else torch.device("cpu")
        low, high = torch.tensor(-math.pi, device=phase_device), torch.tensor(math.pi, device=phase_device)
        uniform = torch.rand((f0.shape[0], self.harmonics + 1, 1), generator=generator, device=phase_device)
        phase = (low + uniform * (high - low)).to(device)
        phase[:, 0] = 0
        waves = self.sine_amp * torch.sin(theta + phase)

        voiced = (f0 > self.voiced_threshold).to(f0.dtype)
        noise_amp = voiced * self.noise_std + (1 - voiced) * self.sine_amp / 3
        noise_device = generator.device if generator is not None else device
        noise = torch.randn(waves.shape, generator=generator, device=noise_device).to(device)
        return waves * voiced + noise_amp * noise

    @torch.no_grad()
    def continued_sines(self, f0: torch.Tensor, state: ExcitationState, commit: int | None) -> torch.Tensor:
        """Like `sines`, but continuing `state`'s running phase, with its fixed start phases and its
        position-seeded noise; moves `state` to sample `commit` of this call (None: no move)."""
        f0 = f0.float()
        multiples = torch.arange(1, self.harmonics + 2, dtype=torch.float64, device=f0.device)[None, :, None]
        cycles = f0.double() * multiples / self.sample_rate
        start = state.cycles if state.cycles is not None else torch.zeros_like(cycles[:, :, :1])
        running = start + torch.cumsum(cycles, dim=-1)
        theta = (2 * math.pi * (running % 1)).float()
        waves = self.sine_amp * torch.sin(theta + state.start_phases(f0.shape[0], self.harmonics + 1).to(f0.device))
        voiced = (f0 > self.voiced_threshold).to(f0.dtype)
        noise_amp = voiced * self.noise_std + (1 - voiced) * self.sine_amp / 3
        noise = state.noise(f0.shape[0], self.harmonics + 1, f0.shape[-1]).to(f0.device)
        if commit is not None:
            state.cycles = (running[:, :, commit - 1 : commit] if commit > 0 else start) % 1
            state.position += commit
        return waves * voiced + noise_amp * noise

    def forward(self, f0: torch.Tensor, generator: torch.Generator | None = None,
                state: ExcitationState | None = None, commit: int | None = None) -> torch.Tensor:
        if state is None:
            sines = self.sines(f0, generator)
        else:
            sines = self.continued_sines(f0, state, commit)
        merged = self.l_linear(sines.to(self.l_linear.weight.dtype).transpose(1, 2))
        return torch.tanh(merged).transpose(1, 2)


@dataclass
class ExcitationState:
    """The excitation of one utterance vocoded in pieces, kept equal to vocoding it at once.

    The reference redraws start phases and noise at every call and restarts the running phase,
    so pieces never line up. Here the start phases come from `seed`, the noise of sample n is
    drawn from a generator seeded by n's block, and the running phase (in cycles) is carried to
    `position`, the absolute index of the next sample to synthesise.
    """

    seed: int
    position: int = 0
    cycles: torch.Tensor | None = None  # [B, harmonics + 1, 1] float64
    block: int = 4096

    def start_phases(self, batch: int, count: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        phases = (torch.rand(batch, count, 1, generator=gen) * 2 - 1) * math.pi
        phases[:, 0] = 0
        return phases

    def noise(self, batch: int, count: int, length: int) -> torch.Tensor:
        """Standard normal noise [batch, count, length] for samples position .. position+length-1."""
        first, last = self.position // self.block, (self.position + max(length, 1) - 1) // self.block
        parts = [torch.randn(batch, count, self.block, generator=torch.Generator().manual_seed(self.seed * 7919 + b))
                 for b in range(first, last + 1)]
        offset = self.position - first * self.block
        return torch.cat(parts, dim=-1)[:, :, offset : offset + length]


def upsample_f0(f0: torch.Tensor, factor: int) -> torch.Tensor:
    """Per-frame F0 [B, T] -> per-sample F0 [B, 1, T * factor] by repetition (nearest neighbour)."""
    return F.interpolate(f0[:, None], scale_factor=float(factor), mode="nearest")
