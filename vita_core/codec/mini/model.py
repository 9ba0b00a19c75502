"""vita-mini's codec network: log-mel -> conv encoder -> FSQ codes -> conv decoder -> STFT frames -> PCM.

One file, read top to bottom. The encoder is non-causal (it sees a whole utterance). The decoder looks
`lookahead` codes ahead (its input convolution) and is causal after that, so streaming only has to hold
a bounded window of past codes (`left_context_codes`) and produces the same frames as a one-shot decode.
The output head predicts a log-magnitude and a phase per STFT bin (as in Vocos); `Istft` turns frames
into samples by overlap-add, incrementally or at once, with the same arithmetic either way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MiniCodecConfig:
    """Shape of the codec; saved as config.json next to the weights (see codec.py for the folder)."""

    sample_rate: int = 16000
    n_fft: int = 640
    hop: int = 160
    n_mels: int = 80
    code_stride: int = 4  # STFT frames per code: 100 frames/s / 4 = 25 codes/s
    levels: tuple[int, ...] = (8, 8, 8, 6, 5)
    frame_dim: int = 96
    code_dim: int = 192
    enc_frame_blocks: int = 1
    enc_code_blocks: int = 2
    dec_code_blocks: int = 2
    dec_frame_blocks: int = 3
    kernel: int = 7
    lookahead: int = 1  # codes the decoder waits for before a frame is final

    @property
    def codebook_size(self) -> int:
        return int(np.prod(self.levels))

    @property
    def codes_per_second(self) -> float:
        return self.sample_rate / (self.hop * self.code_stride)

    @property
    def samples_per_code(self) -> int:
        return self.hop * self.code_stride

    @property
    def left_context_codes(self) -> int:
        """Past codes a decoded frame can depend on (plus one for the upsampling's frame offset)."""
        per_block = self.kernel - 1
        frames = self.dec_frame_blocks * per_block
        return self.lookahead + self.dec_code_blocks * per_block + math.ceil(frames / self.code_stride) + 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["levels"] = list(self.levels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MiniCodecConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}")
        d = dict(d)
        if "levels" in d:
            d["levels"] = tuple(int(x) for x in d["levels"])
        return cls(**d)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """HTK-scale triangular filters, (n_mels, n_fft // 2 + 1), each normalised to unit area."""
    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = 700.0 * (10 ** (np.linspace(0, hz_to_mel(np.array(sample_rate / 2)), n_mels + 2) / 2595.0) - 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    fb /= np.maximum(fb.sum(axis=1, keepdims=True), 1e-8)
    return torch.from_numpy(fb.astype(np.float32))


class LogMel(nn.Module):
    """PCM (B, N) -> log-mel (B, n_mels, N // hop); frame t is centred on sample t * hop."""

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fb", mel_filterbank(sample_rate, n_fft, n_mels), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav, self.n_fft, self.hop, window=self.window, center=True, pad_mode="constant", return_complex=True)
        power = spec.real.square() + spec.imag.square()
        return torch.log(torch.matmul(self.fb, power) + 1e-5)[..., : wav.shape[-1] // self.hop]


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> LayerNorm -> MLP, residual; `causal` pads on the left only."""

    def __init__(self, dim: int, kernel: int, causal: bool):
        super().__init__()
        self.pad = (kernel - 1, 0) if causal else ((kernel - 1) // 2, kernel // 2)
        self.dwconv = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, 3 * dim)
        self.pw2 = nn.Linear(3 * dim, dim)
        self.scale = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(F.pad(x, self.pad)).transpose(1, 2)
        y = self.pw2(F.gelu(self.pw1(self.norm(y))))
        return x + (self.scale * y).transpose(1, 2)


class FSQ(nn.Module):
    """Finite scalar quantisation: each latent dim is bounded and rounded to one of `levels[i]` values."""

    def __init__(self, levels: tuple[int, ...]):
        super().__init__()
        lv = torch.tensor(levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor((1,) + tuple(levels[:-1]), dtype=torch.float64), 0).long()
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.register_buffer("half_width", torch.floor(lv / 2), persistent=False)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        half_l = (self.levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, T, D) -> (quantised values scaled to about [-1, 1] with a straight-through gradient, codes (B, T))."""
        b = self.bound(z)
        q = b + (torch.round(b) - b).detach()
        codes = ((torch.round(b) + self.half_width).long() * self.basis).sum(-1)
        return q / self.half_width, codes

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T) -> the quantised values `forward` returns for them."""
        digits = (codes.unsqueeze(-1) // self.basis) % self.levels.long()
        return (digits.float() - self.half_width) / self.half_width


class Encoder(nn.Module):
    def __init__(self, c: MiniCodecConfig):
        super().__init__()
        self.mel = LogMel(c.sample_rate, c.n_fft, c.hop, c.n_mels)
        self.conv_in = nn.Conv1d(c.n_mels, c.frame_dim, c.kernel, padding=c.kernel // 2)
        self.frame_blocks = nn.ModuleList(ConvNeXtBlock(c.frame_dim, c.kernel, False) for _ in range(c.enc_frame_blocks))
        self.down = nn.Conv1d(c.frame_dim, c.code_dim, c.code_stride, stride=c.code_stride)
        self.code_blocks = nn.ModuleList(ConvNeXtBlock(c.code_dim, c.kernel, False) for _ in range(c.enc_code_blocks))
        self.norm = nn.LayerNorm(c.code_dim)
        self.proj = nn.Linear(c.code_dim, len(c.levels))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, N) with N a multiple of samples_per_code -> latents (B, N / samples_per_code, len(levels))."""
        x = self.conv_in(self.mel(wav))
        for block in self.frame_blocks:
            x = block(x)
        x = self.down(x)
        for block in self.code_blocks:
            x = block(x)
        return self.proj(self.norm(x.transpose(1, 2)))


class Decoder(nn.Module):
    def __init__(self, c: MiniCodecConfig):
        super().__init__()
        self.lookahead = c.lookahead
        width = 2 * c.lookahead + 1
        self.conv_in = nn.Conv1d(len(c.levels), c.code_dim, width)
        self.code_blocks = nn.ModuleList(ConvNeXtBlock(c.code_dim, c.kernel, True) for _ in range(c.dec_code_blocks))
        self.up = nn.ConvTranspose1d(c.code_dim, c.frame_dim, c.code_stride, stride=c.code_stride)
        self.frame_blocks = nn.ModuleList(ConvNeXtBlock(c.frame_dim, c.kernel, True) for _ in range(c.dec_frame_blocks))
        self.norm = nn.LayerNorm(c.frame_dim)
        self.head = nn.Linear(c.frame_dim, c.n_fft + 2)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """Quantised values (B, T, D) -> complex STFT frames (B, n_fft // 2 + 1, T * code_stride)."""
        x = self.conv_in(F.pad(q.transpose(1, 2), (self.lookahead, self.lookahead)))
        for block in self.code_blocks:
            x = block(x)
        x = self.up(x)
        for block in self.frame_blocks:
            x = block(x)
        logmag, phase = self.head(self.norm(x.transpose(1, 2))).transpose(1, 2).chunk(2, dim=1)
        mag = torch.exp(logmag.clamp(max=6.0))
        return torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))


class Istft(nn.Module):
    """Overlap-add inverse STFT: T frames -> T * hop samples, frame t centred on sample t * hop (as LogMel)."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop, self.pad = n_fft, hop, n_fft // 2
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def frames(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, bins, T) -> windowed time frames (B, T, n_fft)."""
        return torch.fft.irfft(spec.transpose(1, 2), n=self.n_fft) * self.window

    def envelope(self, start: int, length: int, n_frames: int) -> torch.Tensor:
        """Sum of the squared windows of frames 0..n_frames-1 (frame t at t * hop) over buffer samples [start, start + length)."""
        pos = torch.arange(start, start + length)
        env = torch.zeros(length)
        w2 = self.window.square().cpu()
        for back in range(-(-self.n_fft // self.hop) + 1):
            t = pos // self.hop - back
            idx = pos - t * self.hop
            ok = (t >= 0) & (t < n_frames) & (idx < self.n_fft)
            env[ok] += w2[idx[ok]]
        return env.clamp(min=1e-8)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, bins, T) -> (B, T * hop) samples, all at once (differentiable)."""
        frames = self.frames(spec)
        n_frames = frames.shape[1]
        total = (n_frames - 1) * self.hop + self.n_fft
        out = F.fold(frames.transpose(1, 2), (1, total), (1, self.n_fft), stride=(1, self.hop)).reshape(frames.shape[0], total)
        out = out / self.envelope(0, total, n_frames).to(out)
        return out[:, self.pad : self.pad + n_frames * self.hop]


class MiniCodecModel(nn.Module):
    """Encoder + FSQ + decoder + iSTFT; training calls `forward`, inference the pieces."""

    def __init__(self, config: MiniCodecConfig | None = None):
        super().__init__()
        self.config = config = config or MiniCodecConfig()
        self.encoder = Encoder(config)
        self.fsq = FSQ(config.levels)
        self.decoder = Decoder(config)
        self.istft = Istft(config.n_fft, config.hop)

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N), N a multiple of samples_per_code -> codes (B, N / samples_per_code)."""
        return self.fsq(self.encoder(wav))[1]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T) -> PCM (B, T * samples_per_code)."""
        return self.istft(self.decoder(self.fsq.lookup(codes)))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Round trip with straight-through quantisation, for training."""
        q, _ = self.fsq(self.encoder(wav))
        return self.istft(self.decoder(q))
