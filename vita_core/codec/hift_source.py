"""Building blocks of the HiFT vocoder: weight-normed convolutions, Snake, residual blocks,
the F0 predictor and the harmonic-plus-noise excitation source.

Module and parameter names follow the released GLM-4-Voice `hift.pt` so its state dict loads
as it is; `hift.py` assembles these into the vocoder.
"""

from __future__ import annotations

import math

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

    def forward(self, f0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        sines = self.sines(f0, generator).to(self.l_linear.weight.dtype)
        merged = self.l_linear(sines.transpose(1, 2))
        return torch.tanh(merged).transpose(1, 2)


def upsample_f0(f0: torch.Tensor, factor: int) -> torch.Tensor:
    """Per-frame F0 [B, T] -> per-sample F0 [B, 1, T * factor] by repetition (nearest neighbour)."""
    return F.interpolate(f0[:, None], scale_factor=float(factor), mode="nearest")
