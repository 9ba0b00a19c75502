"""A small random-init GLM-4-Voice tokenizer folder in exactly the released format, for tests and benches.

Same files, field names and tensor names as `THUDM/glm-4-voice-tokenizer`; only the widths and
depth are small. Codebook size (16384), mel bins (128), 30 s position table (1500), pooling (4)
and the 200-frame causal block stay as released, so code counts and id ranges are the real ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import WhisperFeatureExtractor

from vita_core.codec.glm4voice.whisper_vq import WhisperVQConfig, WhisperVQEncoder

# The released config.json (transformers 4.44.1, WhisperVQEncoder), field for field.
RELEASED_CONFIG = {
    "activation_dropout": 0.0,
    "activation_function": "gelu",
    "apply_spec_augment": False,
    "architectures": ["WhisperVQEncoder"],
    "attention_dropout": 0.0,
    "begin_suppress_tokens": [220, 50257],
    "bos_token_id": 50257,
    "classifier_proj_size": 256,
    "d_model": 1280,
    "decoder_attention_heads": 20,
    "decoder_ffn_dim": 5120,
    "decoder_layerdrop": 0.0,
    "decoder_layers": 32,
    "decoder_start_token_id": 50258,
    "dropout": 0.0,
    "encoder_attention_heads": 20,
    "encoder_causal_attention": False,
    "encoder_causal_convolution": True,
    "encoder_ffn_dim": 5120,
    "encoder_layerdrop": 0.0,
    "encoder_layers": 32,
    "eos_token_id": 50257,
    "init_std": 0.02,
    "is_encoder_decoder": True,
    "mask_feature_length": 10,
    "mask_feature_min_masks": 0,
    "mask_feature_prob": 0.0,
    "mask_time_length": 10,
    "mask_time_min_masks": 2,
    "mask_time_prob": 0.05,
    "max_length": 448,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "median_filter_width": 7,
    "model_type": "whisper",
    "num_hidden_layers": 32,
    "num_mel_bins": 128,
    "pad_token_id": 50256,
    "pooling_kernel_size": 4,
    "pooling_position": 16,
    "pooling_type": "avg",
    "quantize_causal_block_size": 200,
    "quantize_causal_encoder": False,
    "quantize_commit_coefficient": 0.25,
    "quantize_ema_decay": 0.99,
    "quantize_encoder_only": True,
    "quantize_loss_scale": 10.0,
    "quantize_position": 16,
    "quantize_restart_interval": 100,
    "quantize_vocab_size": 16384,
    "scale_embedding": False,
    "skip_language_detection": True,
    "torch_dtype": "float32",
    "transformers_version": "4.44.1",
    "use_cache": True,
    "use_weighted_layer_sum": False,
    "vocab_size": 51866,
}

TINY_OVERRIDES = {
    "d_model": 64,
    "encoder_attention_heads": 4,
    "encoder_ffn_dim": 128,
    "encoder_layers": 4,
    "num_hidden_layers": 4,
    "quantize_position": 2,
    "pooling_position": 2,
}


def sinusoids(length: int, channels: int) -> torch.Tensor:
    """Whisper's fixed position table (sin half, cos half), the init the reference gives embed_positions."""
    scales = torch.exp(-math.log(10000) / (channels // 2 - 1) * torch.arange(channels // 2))
    angles = torch.arange(length)[:, None] * scales[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def build_tiny_glm4voice_tokenizer(folder: str | Path, seed: int = 0, **overrides) -> Path:
    """Write config.json, model.safetensors and preprocessor_config.json for a random WhisperVQ tokenizer.

    `overrides` change config fields (e.g. `quantize_causal_block_size=8` to exercise block edges;
    the released values of TINY_OVERRIDES give the real 1280-wide, 16-layer encoder, 1.3 GB).
    The file also carries the released extras the tokenizer does not read (embed_positions2,
    ema_count, ema_weight), so loading it exercises the same key handling as the real one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fields = {**RELEASED_CONFIG, **TINY_OVERRIDES, **overrides}
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        model = WhisperVQEncoder(WhisperVQConfig(**fields))
        model.embed_positions.weight.copy_(sinusoids(*model.embed_positions.weight.shape))
        model.codebook.weight.normal_(0.0, 1.0)
        # Larger front-end weights than the default init, so random codes follow the audio
        # content rather than mostly the position table.
        model.conv1.weight.mul_(3.0)
        model.conv2.weight.mul_(3.0)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    pooled = math.ceil(fields["max_source_positions"] / (fields["pooling_kernel_size"] or 1))
    state["embed_positions2.weight"] = state["embed_positions.weight"][:pooled].clone()
    state["ema_count"] = torch.ones(fields["quantize_vocab_size"])
    state["ema_weight"] = state["codebook.weight"].clone()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
    WhisperFeatureExtractor(feature_size=fields["num_mel_bins"]).save_pretrained(str(folder))
    return folder
