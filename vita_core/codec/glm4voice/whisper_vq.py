"""GLM-4-Voice's WhisperVQ encoder, inference only: Whisper front end and layers up to the VQ point.

The released `glm-4-voice-tokenizer` is a Whisper-large-v3 encoder (128 mel bins, d_model 1280)
cut after layer 16, where the 50 Hz hidden states are average-pooled by 4 (12.5 Hz) and snapped
to the nearest of 16384 codebook vectors. Its convolutions are causal and its attention is
block-causal (each frame sees the past plus its own 200-frame block). Encoder layers are
Hugging Face's `WhisperEncoderLayer`, whose parameter names match the checkpoint one to one.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer

from vita_core.errors import CheckpointError


class WhisperVQConfig(WhisperConfig):
    """WhisperConfig plus the VQ fields of GLM-4-Voice's `config.json` (same names and defaults)."""

    def __init__(
        self,
        pooling_kernel_size: int | None = None,
        pooling_type: str = "max",
        pooling_position: int = 0,
        quantize_vocab_size: int | None = None,
        quantize_position: int = 16,
        quantize_commit_coefficient: float = 0.25,
        quantize_loss_scale: float = 1.0,
        quantize_ema_decay: float | None = None,
        quantize_restart_interval: int | None = None,
        quantize_encoder_only: bool = False,
        quantize_causal_encoder: bool = False,
        quantize_causal_block_size: int | None = None,
        skip_language_detection: bool = False,
        encoder_causal_attention: bool = False,
        encoder_causal_convolution: bool = False,
        **kwargs,
    ):
        self.pooling_kernel_size = pooling_kernel_size
        self.pooling_type = pooling_type
        self.pooling_position = pooling_position
        self.quantize_vocab_size = quantize_vocab_size
        self.quantize_position = quantize_position
        self.quantize_commit_coefficient = quantize_commit_coefficient
        self.quantize_loss_scale = quantize_loss_scale
        self.quantize_ema_decay = quantize_ema_decay
        self.quantize_restart_interval = quantize_restart_interval
        self.quantize_encoder_only = quantize_encoder_only
        self.quantize_causal_encoder = quantize_causal_encoder
        self.quantize_causal_block_size = quantize_causal_block_size
        self.skip_language_detection = skip_language_detection
        self.encoder_causal_attention = encoder_causal_attention
        self.encoder_causal_convolution = encoder_causal_convolution
        super().__init__(**kwargs)

    def check(self) -> None:
        """Reject configs this inference path cannot run, naming the field."""
        if not self.quantize_vocab_size:
            raise CheckpointError("config.json has no quantize_vocab_size: this is not a WhisperVQ tokenizer folder")
        if not 0 < self.quantize_position <= self.encoder_layers:
            raise CheckpointError(f"config.json quantize_position {self.quantize_position} must be in 1..encoder_layers")
        if self.pooling_kernel_size is not None:
            if self.pooling_type not in ("avg", "max"):
                raise CheckpointError(f"config.json pooling_type {self.pooling_type!r} is not 'avg' or 'max'")
            if not 0 < self.pooling_position <= self.quantize_position:
                raise CheckpointError("config.json pooling_position must be in 1..quantize_position")


class CausalConv1d(nn.Conv1d):
    """Conv1d padded on the left only, so frame t never sees frames after t (same weights as nn.Conv1d)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        self.left_padding = kernel_size - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.pad(x, (self.left_padding, 0)))


def attention_bias(valid: torch.Tensor, block_size: int | None, causal: bool, dtype: torch.dtype) -> torch.Tensor:
    """Additive (batch, 1, T, T) mask: padded keys are hidden; with `block_size`, each query sees
    every earlier frame plus its whole block; with `causal`, only frames up to itself."""
    length = valid.shape[1]
    pos = torch.arange(length, device=valid.device)
    allowed = valid[:, None, :].bool().expand(-1, length, -1)
    if causal:
        allowed = allowed & (pos[None, :] <= pos[:, None])
    elif block_size is not None:
        same_block = (pos[:, None] // block_size) == (pos[None, :] // block_size)
        allowed = allowed & ((pos[None, :] <= pos[:, None]) | same_block)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=valid.device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


class WhisperVQEncoder(nn.Module):
    """Log-mel features -> codebook indices. State-dict names follow the released checkpoint."""

    def __init__(self, config: WhisperVQConfig):
        super().__init__()
        config.check()
        config._attn_implementation = "sdpa"
        self.config = config
        dim = config.d_model
        if config.encoder_causal_convolution:
            self.conv1 = CausalConv1d(config.num_mel_bins, dim, 3)
            self.conv2 = CausalConv1d(dim, dim, 3, stride=2)
        else:
            self.conv1 = nn.Conv1d(config.num_mel_bins, dim, 3, padding=1)
            self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(config.max_source_positions, dim)
        self.layers = nn.ModuleList(WhisperEncoderLayer(config) for _ in range(config.quantize_position))
        self.codebook = nn.Embedding(config.quantize_vocab_size, dim)
        self.causal = config.encoder_causal_attention or config.quantize_causal_encoder

    @property
    def frames_per_code(self) -> int:
        """Mel frames per code: conv stride 2 times the pooling kernel (8 for the released model)."""
        return self.conv1.stride[0] * self.conv2.stride[0] * (self.config.pooling_kernel_size or 1)

    def _pool(self, hidden: torch.Tensor) -> torch.Tensor:
        kernel = self.config.pooling_kernel_size
        hidden = hidden.transpose(1, 2)
        hidden = nn.functional.pad(hidden, (0, (-hidden.shape[-1]) % kernel))
        pool = nn.functional.avg_pool1d if self.config.pooling_type == "avg" else nn.functional.max_pool1d
        return pool(hidden, kernel).transpose(1, 2)

    def quantize(self, hidden: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook vector (squared L2) for every frame."""
        codebook = self.codebook.weight
        flat = hidden.reshape(-1, hidden.shape[-1])
        dist = codebook.pow(2).sum(1)[None, :] - 2.0 * flat @ codebook.t()
        return dist.argmin(dim=1).reshape(hidden.shape[:2])

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, mels, frames) + (batch, frames) mask -> (codes, code mask), both (batch, frames / 8)."""
        hidden, valid = self.hidden_states(input_features, attention_mask)
        return self.quantize(hidden), valid

    def hidden_states(self, input_features: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled hidden states that the quantizer snaps to codes, and their validity mask."""
        cfg = self.config
        hidden = nn.functional.gelu(self.conv1(input_features))
        hidden = nn.functional.gelu(self.conv2(hidden)).transpose(1, 2)
        if hidden.shape[1] > cfg.max_source_positions:
            raise ValueError(f"{hidden.shape[1]} frames exceed max_source_positions {cfg.max_source_positions}")
        hidden = hidden + self.embed_positions.weight[: hidden.shape[1]]
        valid = attention_mask[:, :: self.conv1.stride[0] * self.conv2.stride[0]]
        block = cfg.quantize_causal_block_size
        bias = attention_bias(valid, block, self.causal, hidden.dtype)
        for index, layer in enumerate(self.layers, start=1):
            hidden = layer(hidden, bias)
            if cfg.pooling_kernel_size is not None and index == cfg.pooling_position:
                hidden = self._pool(hidden)
                valid = valid[:, :: cfg.pooling_kernel_size]
                pooled_block = None if block is None else block // cfg.pooling_kernel_size
                bias = attention_bias(valid, pooled_block, self.causal, hidden.dtype)
        return hidden, valid.bool()
