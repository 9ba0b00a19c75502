"""A preallocated key/value cache for one request, one buffer per decoder layer.

Hugging Face attention layers call `update(k, v, layer_idx)` and attend over what it returns;
each layer keeps its own length, because MCTP layers see fewer positions than the backbone.
"""

from __future__ import annotations

import torch
from transformers import Qwen2Config


class KVCache:
    """Per-request key/value buffers; no state lives on the model."""

    def __init__(self, config: Qwen2Config, max_len: int, layers: range, device: torch.device, dtype: torch.dtype) -> None:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (1, config.num_key_value_heads, max_len, head_dim)
        self.max_len = max_len
        self.keys = {i: torch.empty(shape, device=device, dtype=dtype) for i in layers}
        self.values = {i: torch.empty(shape, device=device, dtype=dtype) for i in layers}
        self.lengths = {i: 0 for i in layers}

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: object, **kwargs: object):
        start = self.lengths[layer_idx]
        end = start + key.shape[2]
        if end > self.max_len:
            raise RuntimeError(f"KV cache of layer {layer_idx} is full ({self.max_len} positions)")
        self.keys[layer_idx][:, :, start:end] = key
        self.values[layer_idx][:, :, start:end] = value
        self.lengths[layer_idx] = end
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def length(self, layer_idx: int) -> int:
        return self.lengths[layer_idx]
