"""The CPU fast path: the decoder math of Hugging Face's Qwen2 layers on prepacked oneDNN weights.

On CPU, torch's default fp32 matmul (MKL) reads a weight once per row of input, so a catch-up
pass over the eleven tokens an MCTP run wrote costs several one-token passes; oneDNN with the
weight reordered once into its blocked layout costs about one, and in bf16 it beats MKL at any
row count. `FastModel` holds those prepacked copies (q/k/v and gate/up fused into one matmul
each, so a layer is about twenty ops) and runs the backbone and the MCTP modules on 2-D
`[positions, hidden]` tensors, writing keys and values straight into a request's `KVCache`.
It computes what `VitaAudioForCausalLM.backbone` / `.mtp` compute, up to float rounding; the
model itself is left untouched and shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vita_core.kv_cache import KVCache
from vita_core.model.attention import causal_mask_for_cache
from vita_core.model.modeling import VitaAudioForCausalLM

FAST_DTYPES = (torch.float32, torch.bfloat16)


def fast_path_supported(model: VitaAudioForCausalLM) -> bool:
    """oneDNN on CPU, for float32 (and bfloat16 where the CPU has bf16 kernels)."""
    w = model.lm_head.weight
    if w.device.type != "cpu" or w.dtype not in FAST_DTYPES or not torch.backends.mkldnn.is_available():
        return False
    return w.dtype == torch.float32 or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Linear:
    """`x @ weight.T + bias` for 2-D x, on a oneDNN-prepacked weight when `pack` is true.

    fp32 keeps the plain weight too: for a single row MKL's matrix-vector product reads it a few
    percent faster than oneDNN (both are bandwidth-bound there), for more rows oneDNN wins by 2-3x.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, pack: bool = True) -> None:
        weight = weight.detach().contiguous()
        self.bias = None if bias is None else bias.detach().contiguous()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, None) if pack else None
        self.plain = weight if self.packed is None or weight.dtype == torch.float32 else None
        self.rows = weight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.plain is not None and (self.packed is None or x.shape[0] == 1):
            return F.linear(x, self.plain, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _Layer:
    """One Qwen2 decoder layer: pre-norm attention over the cache, then pre-norm SwiGLU MLP."""

    def __init__(self, layer: torch.nn.Module, heads: int, kv_heads: int, head_dim: int, eps: float) -> None:
        a, mlp = layer.self_attn, layer.mlp
        self.heads, self.kv_heads, self.head_dim, self.eps = heads, kv_heads, head_dim, eps
        self.split = [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim]
        self.norm1 = layer.input_layernorm.weight.detach()
        self.norm2 = layer.post_attention_layernorm.weight.detach()
        self.qkv = Linear(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
                          torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
        self.o = Linear(a.o_proj.weight)
        self.gate_up = Linear(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]))
        self.down = Linear(mlp.down_proj.weight)

    def __call__(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, index: int,
                 mask: torch.Tensor | None) -> torch.Tensor:
        t, hidden = x.shape
        qkv = self.qkv(F.rms_norm(x, (hidden,), self.norm1, self.eps))
        q, k, v = qkv.split(self.split, dim=-1)
        q = q.view(t, self.heads, self.head_dim).transpose(0, 1).unsqueeze(0)
        k = k.view(t, self.kv_heads, self.head_dim).transpose(0, 1).unsqueeze(0)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        start = cache.lengths[index]
        end = start + t
        if end > cache.max_len:
            raise RuntimeError(f"KV cache of layer {index} is full ({cache.max_len} positions)")
        keys, values = cache.keys[index], cache.values[index]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v.view(t, self.kv_heads, self.head_dim).transpose(0, 1)
        cache.lengths[index] = end
        attn = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], attn_mask=mask,
                                              enable_gqa=self.heads != self.kv_heads)
        x = x + self.o(attn[0].transpose(0, 1).reshape(t, -1))
        gate, up = self.gate_up(F.rms_norm(x, (hidden,), self.norm2, self.eps)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class FastModel:
    """Prepacked copies of a model's decoder weights; runs 2-D passes over a request's cache."""

    def __init__(self, model: VitaAudioForCausalLM) -> None:
        cfg = model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        eps = cfg.rms_norm_eps
        self.model = model
        self.num_backbone_layers = model.num_backbone_layers
        self.eps = eps
        self.layers = [_Layer(layer, cfg.num_attention_heads, cfg.num_key_value_heads, head_dim, eps)
                       for layer in model.model.layers]
        self.norm = model.model.norm.weight.detach()
        self.mtp_embed_norms = [n.weight.detach() for n in model.mtp_embed_norms]
        self.mtp_hidden_norms = [n.weight.detach() for n in model.mtp_hidden_norms]
        self.mtp_projs = [Linear(p.weight) for p in model.mtp_projs]

    def _rope(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(start, start + x.shape[0]).unsqueeze(0)
        cos, sin = self.model.model.rotary_emb(x, positions)
        return cos.unsqueeze(1), sin.unsqueeze(1)  # [1, 1, T, head_dim]: broadcast over heads

    def _run(self, x: torch.Tensor, start: int, layer_ids: range, cache: KVCache) -> torch.Tensor:
        cos, sin = self._rope(x, start)
        t = x.shape[0]
        mask = causal_mask_for_cache(t, cache.lengths[layer_ids[0]] + t, x.device)  # one length per range
        for i in layer_ids:
            x = self.layers[i](x, cos, sin, cache, i, mask)
        return F.rms_norm(x, (x.shape[-1],), self.norm, self.eps)

    def backbone(self, embeds: torch.Tensor, start: int, cache: KVCache) -> torch.Tensor:
        """Positions start.. of the LLM: [T, H] input embeddings -> post-norm hidden states h_0."""
        return self._run(embeds, start, range(self.num_backbone_layers), cache)

    def mtp(self, k: int, embeds: torch.Tensor, prev_hidden: torch.Tensor, start: int, cache: KVCache) -> torch.Tensor:
        """MCTP module k at positions start..: E(x_p) and h_k(p-1), both [T, H] -> h_{k+1}(p)."""
        h = embeds.shape[-1]
        x = torch.cat([F.rms_norm(embeds, (h,), self.mtp_embed_norms[k], self.eps),
                       F.rms_norm(prev_hidden, (h,), self.mtp_hidden_norms[k], self.eps)], dim=-1)
        layer = self.num_backbone_layers + k
        return self._run(self.mtp_projs[k](x), start, range(layer, layer + 1), cache)
