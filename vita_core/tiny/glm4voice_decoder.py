"""Random-init GLM-4-Voice decoder folders in exactly the released format, for tests and benches.

Same files (config.yaml, flow.pt, hift.pt), config fields and tensor names as
`THUDM/glm-4-voice-decoder`. The tiny build shrinks widths and depths only: codebook (16384),
mel bins (80), encoder block (10 codes), 12.5 codes/s and the 22050 Hz / 256-sample frame
stay as released, so code counts, frame counts and PCM lengths are the real ones.
`real_dims=True` builds the released sizes (about 450 MB of random weights) for benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vita_core.codec.glm4voice.decoder_config import write_decoder_config
from vita_core.codec.glm4voice.flow import FlowConfig, FlowDecoder
from vita_core.codec.glm4voice.flow_encoder import EncoderConfig
from vita_core.codec.glm4voice.flow_estimator import EstimatorConfig
from vita_core.codec.glm4voice.hift import HiFTConfig, build_random_hift
from vita_core.files import AtomicFile

SAMPLE_RATE = 22050

RELEASED_HIFT = {
    "in_channels": 80, "base_channels": 512, "nb_harmonics": 8, "sampling_rate": SAMPLE_RATE,
    "nsf_alpha": 0.1, "nsf_sigma": 0.003, "nsf_voiced_threshold": 10,
    "upsample_rates": [8, 8], "upsample_kernel_sizes": [16, 16], "istft_params": {"n_fft": 16, "hop_len": 4},
    "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "source_resblock_kernel_sizes": [7, 11], "source_resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
    "lrelu_slope": 0.1, "audio_limit": 0.99,
    "f0_predictor": {"num_class": 1, "in_channels": 80, "cond_channels": 512},
}

TINY_FLOW = FlowConfig(
    input_size=32,
    encoder=EncoderConfig(input_size=32, output_size=32, attention_heads=2, linear_units=64, num_blocks=2, block_size=10),
    estimator=EstimatorConfig(channels=(32, 32), attention_head_dim=16, n_blocks=1, num_mid_blocks=2, num_heads=2),
)

TINY_HIFT = {**RELEASED_HIFT, "base_channels": 32, "f0_predictor": {"num_class": 1, "in_channels": 80, "cond_channels": 32}}


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    with AtomicFile(path) as tmp:
        torch.save(state, tmp)


def build_tiny_glm4voice_decoder(folder: str | Path, seed: int = 0, real_dims: bool = False) -> Path:
    """Write config.yaml, flow.pt and hift.pt with random weights; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    flow_cfg, hift_kwargs = (FlowConfig(), RELEASED_HIFT) if real_dims else (TINY_FLOW, TINY_HIFT)
    torch.manual_seed(seed)
    flow = FlowDecoder(flow_cfg)
    hift = build_random_hift(HiFTConfig.from_dict(hift_kwargs), seed=seed)
    _save(flow.state_dict(), folder / "flow.pt")
    _save(hift.state_dict(), folder / "hift.pt")
    write_decoder_config(folder / "config.yaml", flow_cfg, hift_kwargs, SAMPLE_RATE)
    return folder
