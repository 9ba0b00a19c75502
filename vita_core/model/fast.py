"""The CPU fast path: the decoder math of Hugging Face's Qwen2 layers on prepacked oneDNN weights.

On CPU, torch's default fp32 matmul (MKL) reads a weight once per row of input, so a catch-up
pass over the eleven tokens an MCTP run wrote costs several one-token passes; oneDNN with the
weight reordered once into its blocked layout costs about one, and in bf16 it beats MKL at any
row count. `FastModel` holds those prepacked copies (q/k/v and gate/up fused into one matmul
each, so a layer is about twenty ops) and runs the backbone and the MCTP modules on 2-D
`[positions, hidden]` tensors, writing keys and values straight into a request's `KVCache`;
several requests at once share each matmul (their rows stacked) and attend over their own caches.
It computes what `VitaAudioForCausalLM.backbone` / `.mtp` compute, up to float rounding; the
model itself is left untouched and shared.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    Packed for every row count: on the AMD EPYC (Zen 5) CI machine, one thread, a one-row product
    over the 0.5b lm_head reads 40 GB/s packed against MKL's 17 GB/s, and an L3-sized 4864x896
    weight 1.6x faster; the earlier Intel machine had MKL a few percent ahead for one row only.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, pack: bool = True) -> None:
        weight = weight.detach().contiguous()
        self.bias = None if bias is None else bias.detach().contiguous()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, None) if pack else None
        self.plain = weight if self.packed is None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            return F.linear(x, self.plain, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


class _Layer:
    """One Qwen2 decoder layer: pre-norm attention over the cache, then pre-norm SwiGLU MLP."""

    def __init__(self, layer: torch.nn.Module, heads: int, kv_heads: int, head_dim: int, eps: float) -> None:
        a, mlp = layer.self_attn, layer.mlp
        self.heads, self.kv_heads, self.head_dim, self.eps = heads, kv_heads, head_dim, eps
        self.norm1 = layer.input_layernorm.weight.detach()
        self.norm2 = layer.post_attention_layernorm.weight.detach()
        self.qkv = Linear(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
                          torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
        self.o = Linear(a.o_proj.weight)
        self.gate_up = Linear(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]))
        self.down = Linear(mlp.down_proj.weight)

    def __call__(self, x: torch.Tensor, segments: list[_Segment], index: int) -> torch.Tensor:
        """x holds the rows of every segment (request) in turn: matmuls on all rows, attention per request."""
        hidden = x.shape[1]
        qkv = self.qkv(F.rms_norm(x, (hidden,), self.norm1, self.eps))
        outs, row = [], 0
        for seg in segments:
            outs.append(self._attend(qkv[row : row + seg.rows], seg, index))
            row += seg.rows
        x = x + self.o(outs[0] if len(outs) == 1 else torch.cat(outs))
        gate, up = self.gate_up(F.rms_norm(x, (hidden,), self.norm2, self.eps)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)

    def _attend(self, qkv: torch.Tensor, seg: _Segment, index: int) -> torch.Tensor:
        t, cache, heads = seg.rows, seg.cache, self.heads
        qkv = qkv.view(t, heads + 2 * self.kv_heads, self.head_dim)
        qk = qkv[:, : heads + self.kv_heads]  # rotary on q and k in one go: x cos + rotate_half(x) sin
        qk = qk * seg.cos + qk.roll(self.head_dim // 2, -1) * seg.sin
        start = cache.lengths[index]
        end = start + t
        if end > cache.max_len:
            raise RuntimeError(f"KV cache of layer {index} is full ({cache.max_len} positions)")
        keys, values = cache.keys[index], cache.values[index]
        keys[0, :, start:end] = qk[:, heads:].transpose(0, 1)
        values[0, :, start:end] = qkv[:, heads + self.kv_heads :].transpose(0, 1)
        cache.lengths[index] = end
        attn = F.scaled_dot_product_attention(qk[:, :heads].transpose(0, 1).unsqueeze(0), keys[:, :, :end],
                                              values[:, :, :end], attn_mask=seg.mask,
                                              enable_gqa=heads != self.kv_heads)
        return attn[0].transpose(0, 1).reshape(t, -1)


@dataclass
class _Segment:
    """One request's rows in a batched pass: its rotary angles, cache and causal mask."""

    rows: int
    cos: torch.Tensor
    sin: torch.Tensor
    cache: KVCache
    mask: torch.Tensor | None


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
        empty = torch.empty(0, 1, head_dim, dtype=self.norm.dtype)
        self._rope_table = (empty, empty)

    def _rope(self, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin of positions 0..end-1 and beyond, [T, 1, head_dim], from the model's own rotary
        module (each angle is one product, so a table holds exactly the per-pass values). With the sin's
        first half negated, rotate_half(x) * sin is x.roll(half) * signed sin, bit for bit."""
        table = self._rope_table
        if table[0].shape[0] < end:
            n = max(end, 2 * table[0].shape[0], 4096)
            cos, sin = self.model.model.rotary_emb(self.norm, torch.arange(n).unsqueeze(0))
            half = sin.shape[-1] // 2
            signed = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
            table = self._rope_table = (cos[0].unsqueeze(1), signed[0].unsqueeze(1))  # one assignment: safe to share
        return table

    def _segment(self, x: torch.Tensor, start: int, cache: KVCache, layer: int) -> _Segment:
        t = x.shape[0]
        cos, sin = self._rope(start + t)
        mask = causal_mask_for_cache(t, cache.lengths[layer] + t, x.device)
        return _Segment(t, cos[start : start + t], sin[start : start + t], cache, mask)

    def _run(self, xs: list[torch.Tensor], starts: list[int], layer_ids: range, caches: list[KVCache]) -> list[torch.Tensor]:
        segments = [self._segment(x, s, c, layer_ids[0]) for x, s, c in zip(xs, starts, caches)]
        x = xs[0] if len(xs) == 1 else torch.cat(xs)
        for i in layer_ids:
            x = self.layers[i](x, segments, i)
        x = F.rms_norm(x, (x.shape[-1],), self.norm, self.eps)
        return list(x.split([seg.rows for seg in segments]))

    def backbone(self, embeds: list[torch.Tensor], starts: list[int], caches: list[KVCache]) -> list[torch.Tensor]:
        """The LLM over each request's new positions: [T_i, H] input embeddings -> post-norm hidden states h_0."""
        return self._run(embeds, starts, range(self.num_backbone_layers), caches)

    def mtp(self, k: int, embeds: list[torch.Tensor], prev_hidden: list[torch.Tensor], starts: list[int],
            caches: list[KVCache]) -> list[torch.Tensor]:
        """MCTP module k per request: E(x_p) and h_k(p-1), both [T_i, H] -> h_{k+1}(p)."""
        h = embeds[0].shape[-1]
        x = torch.cat([F.rms_norm(torch.cat(embeds), (h,), self.mtp_embed_norms[k], self.eps),
                       F.rms_norm(torch.cat(prev_hidden), (h,), self.mtp_hidden_norms[k], self.eps)], dim=-1)
        x = self.mtp_projs[k](x)
        layer = self.num_backbone_layers + k
        return self._run(list(x.split([e.shape[0] for e in embeds])), starts, range(layer, layer + 1), caches)
