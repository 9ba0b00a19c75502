"""A tiny random-init mini codec folder (config.json + model.safetensors), the format `vita codec train` writes."""

from __future__ import annotations

from pathlib import Path

import torch

from vita_core.codec.mini.codec import save_mini_codec
from vita_core.codec.mini.model import MiniCodecConfig, MiniCodecModel

TINY = MiniCodecConfig(
    levels=(4, 4, 3), frame_dim=16, code_dim=24,
    enc_frame_blocks=1, enc_code_blocks=1, dec_code_blocks=1, dec_frame_blocks=2, kernel=5,
)


def build_mini_codec(folder: str | Path, seed: int = 0, config: MiniCodecConfig = TINY, half: bool = False) -> Path:
    """Random weights from `seed`, saved as a codec folder; 48 codes at 25 codes/s."""
    torch.manual_seed(seed)
    return save_mini_codec(MiniCodecModel(config), folder, half=half)
