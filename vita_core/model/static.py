"""The GPU fast path: fixed-shape passes over a static KV cache, replayed through CUDA graphs.

On a GPU a one-position pass costs its kernel launches, not its arithmetic (~28 ms for both the
0.5B and the 7B on an H100). `StaticModel` runs the backbone and each MCTP module over a
`StaticKVCache`: buffers preallocated at a fixed length, keys and values written at their
positions (a device tensor) and attention over the whole buffer under a mask built from those
positions, so a pass over `rows` positions has the same shapes and the same buffer addresses at
every step. On CUDA each (producer, rows) pass that recurs is captured once as a CUDA graph and
replayed from then on (as the speech decoder's `GraphedModule` does); elsewhere the same code runs
eagerly, which is how the CPU tests check it against the dynamic engine. It reads the model's own
weights (no copies) and computes what `VitaAudioForCausalLM.backbone` / `.mtp` compute, up to
float rounding; attention is torch's SDPA (flash or memory-efficient kernels where CUDA has them).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vita_core.model.modeling import VitaAudioForCausalLM
from vita_core.schedule import BACKBONE

WARMUP = 2  # eager runs on a side stream before a capture, as torch's CUDA-graph notes ask


@dataclass
class _Graph:
    """A captured pass: its graph, the input buffers it reads and the output buffer it writes."""

    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    out: torch.Tensor


@dataclass
class StaticKVCache:
    """One request's keys and values at a fixed length; slot = position, for every layer.

    MCTP module k never writes slots 0..k (it starts at position k+1); the mask keeps them out.
    The buffers start as zeros so that masked slots weigh in as exact zeros, never NaN, and the
    rotary table covers every slot. The graphs captured over this cache live with it.
    """

    keys: torch.Tensor  # [layers, kv_heads, max_len, head_dim]
    values: torch.Tensor
    cos: torch.Tensor  # [max_len, 1, head_dim]
    sin: torch.Tensor  # signed: first half negated (see FastModel._rope)
    graphs: dict[tuple[int, int], _Graph] = field(default_factory=dict)
    seen: set[tuple[int, int]] = field(default_factory=set)

    @property
    def max_len(self) -> int:
        return self.keys.shape[2]


def _next_length(needed: int) -> int:
    """Cache lengths grow in powers of two (at least 64) so a few sizes serve every request."""
    return max(64, 1 << (needed - 1).bit_length())


class StaticModel:
    """Runs a model's backbone and MCTP modules over static caches; CUDA graphs where `graphs` is true.

    Caches are pooled: a request takes one of at least the positions it needs (`acquire`) and gives
    it back when done (`release`), so its captured graphs serve the next request too. A request
    longer than `max_len` grows the pool's length to the next power of two (capped at the model's
    context) instead of failing; the shorter caches are dropped with their graphs.
    """

    def __init__(self, model: VitaAudioForCausalLM, max_len: int, graphs: bool) -> None:
        cfg = model.config
        self.model = model
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.context = int(getattr(cfg, "max_position_embeddings", 0) or 0) or max_len
        self.max_len = min(max_len, self.context)
        self.graphs = graphs
        self.device, self.dtype = model.lm_head.weight.device, model.lm_head.weight.dtype
        self.pool = torch.cuda.graph_pool_handle() if graphs else None
        self._free: list[StaticKVCache] = []
        self._lock = threading.Lock()
        self.caches_made = 0

    # ---- the cache pool ----

    def acquire(self, needed: int) -> StaticKVCache:
        """A free cache of at least `needed` positions, growing the pool's length if it is too short."""
        with self._lock:
            if needed > self.max_len:
                self.max_len = min(_next_length(needed), max(self.context, needed))
                self._free = [c for c in self._free if c.max_len >= self.max_len]
            for i, cache in enumerate(self._free):
                if cache.max_len >= needed:
                    return self._free.pop(i)
            self.caches_made += 1
        return self._new_cache(self.max_len)

    def release(self, cache: StaticKVCache) -> None:
        """Give a request's cache back for the next one (dropped if the pool has grown past it)."""
        with self._lock:
            if cache.max_len >= self.max_len:
                self._free.append(cache)

    def _new_cache(self, length: int) -> StaticKVCache:
        m = self.model
        shape = (m.config.num_hidden_layers, self.kv_heads, length, self.head_dim)
        cos, sin = m.model.rotary_emb(m.lm_head.weight, torch.arange(length, device=self.device).unsqueeze(0))
        half = self.head_dim // 2
        signed = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
        return StaticKVCache(torch.zeros(shape, device=self.device, dtype=self.dtype),
                             torch.zeros(shape, device=self.device, dtype=self.dtype),
                             cos[0].unsqueeze(1), signed[0].unsqueeze(1))

    # ---- passes ----

    def run(self, producer: int, embeds: torch.Tensor, prev_hidden: torch.Tensor | None, start: int,
            cache: StaticKVCache) -> torch.Tensor:
        """Positions start..start+T-1 through the backbone (producer -1) or MCTP module `producer`.

        embeds [T, H] are the backbone's input embeddings or module k's E(x_p); prev_hidden [T, H] is
        h_k(p-1) (MCTP only). Returns the post-norm hidden states [T, H]. On CUDA a (producer, T)
        pass seen a second time on this cache is captured, and replayed from then on.
        """
        inputs = [embeds] if prev_hidden is None else [embeds, prev_hidden]
        key = (producer, embeds.shape[0])
        entry = cache.graphs.get(key) if self.graphs else None
        if entry is None:
            first = torch.full((1,), start, dtype=torch.long, device=self.device)
            if not self.graphs or key not in cache.seen:  # one-off shapes (a prefill) run eagerly
                cache.seen.add(key)
                return self._pass(producer, cache, first, *inputs)
            entry = cache.graphs[key] = self._capture(producer, cache, [first, *inputs])
        entry.inputs[0].fill_(start)
        for buffer, value in zip(entry.inputs[1:], inputs):
            buffer.copy_(value)
        entry.graph.replay()
        return entry.out.clone()

    def _capture(self, producer: int, cache: StaticKVCache, args: list[torch.Tensor]) -> _Graph:
        """Warm up on a side stream, then capture. Warm-up writes the keys and values the pass
        itself writes (same inputs, same slots), so it leaves the cache as one pass would."""
        static = [a.clone() for a in args]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP):
                self._pass(producer, cache, *static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self._pass(producer, cache, *static)
        return _Graph(graph, static, out)

    def _pass(self, producer: int, cache: StaticKVCache, first: torch.Tensor, x: torch.Tensor,
              prev: torch.Tensor | None = None) -> torch.Tensor:
        """The pass itself: only device tensors and fixed shapes, so a graph can hold it."""
        m, h = self.model, x.shape[-1]
        if producer == BACKBONE:
            layers, lowest = range(m.num_backbone_layers), 0
        else:
            x = torch.cat([F.rms_norm(x, (h,), m.mtp_embed_norms[producer].weight, self.eps),
                           F.rms_norm(prev, (h,), m.mtp_hidden_norms[producer].weight, self.eps)], dim=-1)
            x = F.linear(x, m.mtp_projs[producer].weight)
            layer = m.num_backbone_layers + producer
            layers, lowest = range(layer, layer + 1), producer + 1
        positions = first + torch.arange(x.shape[0], device=x.device)
        slots = torch.arange(cache.max_len, device=x.device)
        mask = (slots[None, :] <= positions[:, None]) & (slots[None, :] >= lowest)
        # grouped-query attention as plain attention: the query heads sharing a key head become its rows
        mask = mask.repeat(self.heads // self.kv_heads, 1)[None, None]
        cos, sin = cache.cos.index_select(0, positions), cache.sin.index_select(0, positions)
        for i in layers:
            x = self._layer(i, x, positions, mask, cos, sin, cache)
        return F.rms_norm(x, (h,), m.model.norm.weight, self.eps)

    def _layer(self, index: int, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
        """One Qwen2 decoder layer: pre-norm attention over the static cache, then the SwiGLU MLP."""
        layer = self.model.model.layers[index]
        a, mlp = layer.self_attn, layer.mlp
        t, h, d, half = x.shape[0], x.shape[-1], self.head_dim, self.head_dim // 2
        y = F.rms_norm(x, (h,), layer.input_layernorm.weight, self.eps)
        q = F.linear(y, a.q_proj.weight, a.q_proj.bias).view(t, self.heads, d)
        k = F.linear(y, a.k_proj.weight, a.k_proj.bias).view(t, self.kv_heads, d)
        v = F.linear(y, a.v_proj.weight, a.v_proj.bias).view(t, self.kv_heads, d)
        q = q * cos + q.roll(half, -1) * sin  # x cos + rotate_half(x) sin, with the sign in the table
        k = k * cos + k.roll(half, -1) * sin
        keys, values = cache.keys[index], cache.values[index]
        keys.index_copy_(1, positions, k.transpose(0, 1))
        values.index_copy_(1, positions, v.transpose(0, 1))
        groups = self.heads // self.kv_heads
        query = q.transpose(0, 1).reshape(1, self.kv_heads, groups * t, d)
        attn = F.scaled_dot_product_attention(query, keys[None], values[None], attn_mask=mask)
        attn = attn.view(self.heads, t, d).transpose(0, 1).reshape(t, self.heads * d)
        x = x + F.linear(attn, a.o_proj.weight)
        y = F.rms_norm(x, (h,), layer.post_attention_layernorm.weight, self.eps)
        return x + F.linear(F.silu(F.linear(y, mlp.gate_proj.weight)) * F.linear(y, mlp.up_proj.weight),
                            mlp.down_proj.weight)
