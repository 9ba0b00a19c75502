"""VITA-Audio model: a Hugging Face Qwen2 backbone plus N MCTP modules, laid out as upstream.

The backbone is `Qwen2Model` with `num_hidden_layers = L + N`: layers 0..L-1 are the LLM and
layers L..L+N-1 are the MCTP decoder layers (upstream keeps them there, so the state_dict keys
are `model.layers.{L+k}`). MCTP module k owns `mtp_embed_norms.k`, `mtp_hidden_norms.k` and
`mtp_projs.k` (2H -> H, no bias); embeddings, rotary, final norm and lm_head are shared.

Module k at position p reads [embed_norm(E(x_p)), hidden_norm(h_k(p-1))] where h_0 is the
backbone's post-norm hidden state and h_{k+1} is module k's; it predicts x_{p+1}.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2DecoderLayer,
    Qwen2Model,
    Qwen2PreTrainedModel,
    Qwen2RMSNorm,
)

from vita_core.model.attention import block_causal_mask, causal_mask_for_cache, varlen_kwargs

# The decoder layer's KV-cache argument: `cache` in recent transformers 5 releases, which deprecate
# the older `past_key_values` (and warn on every call); older 5.x releases know only the latter.
_CACHE_KWARG = "cache" if "cache" in inspect.signature(Qwen2DecoderLayer.forward).parameters else "past_key_values"


@dataclass
class LossOutput:
    """Training losses; sums and counts let callers aggregate exactly across micro-batches."""

    loss: torch.Tensor
    main_loss: torch.Tensor | None
    mtp_losses: list[torch.Tensor] = field(default_factory=list)
    main_count: int = 0
    mtp_counts: list[int] = field(default_factory=list)
    mtp_correct: list[int] = field(default_factory=list)
    main_correct: int = 0


class VitaAudioForCausalLM(Qwen2PreTrainedModel):
    """Backbone + MCTP stack. Holds weights only: generation state lives in `generate.py`."""

    def __init__(self, config: Qwen2Config) -> None:
        super().__init__(config)
        self.num_mtp = int(getattr(config, "num_nextn_predict_layers", 0) or 0)
        self.num_backbone_layers = config.num_hidden_layers - self.num_mtp
        hidden, eps = config.hidden_size, config.rms_norm_eps
        self.model = Qwen2Model(config)
        self.lm_head = nn.Linear(hidden, config.vocab_size, bias=False)
        self.mtp_projs = nn.ModuleList([nn.Linear(2 * hidden, hidden, bias=False) for _ in range(self.num_mtp)])
        self.mtp_embed_norms = nn.ModuleList([Qwen2RMSNorm(hidden, eps=eps) for _ in range(self.num_mtp)])
        self.mtp_hidden_norms = nn.ModuleList([Qwen2RMSNorm(hidden, eps=eps) for _ in range(self.num_mtp)])
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.post_init()

    # ---- building blocks shared by training, the engine and the slow reference ----

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)

    def run_layers(
        self,
        hidden: torch.Tensor,
        layer_ids: range,
        position_ids: torch.Tensor,
        mask: torch.Tensor | None,
        cache: object | None = None,
        **attn_kwargs: object,
    ) -> torch.Tensor:
        """Run a contiguous range of decoder layers, then the shared final norm."""
        rope = self.model.rotary_emb(hidden, position_ids)
        for i in layer_ids:
            hidden = self.model.layers[i](
                hidden, attention_mask=mask, position_ids=position_ids, position_embeddings=rope,
                **{_CACHE_KWARG: cache}, **attn_kwargs,
            )
        return self.model.norm(hidden)

    def backbone(self, embeds: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor | None,
                 cache: object | None = None, **attn_kwargs: object) -> torch.Tensor:
        """LLM layers 0..L-1 -> post-norm hidden states h_0."""
        return self.run_layers(embeds, range(self.num_backbone_layers), position_ids, mask, cache, **attn_kwargs)

    def mtp(self, k: int, embeds: torch.Tensor, prev_hidden: torch.Tensor, position_ids: torch.Tensor,
            mask: torch.Tensor | None, cache: object | None = None, **attn_kwargs: object) -> torch.Tensor:
        """MCTP module k: embeds are E(x_p), prev_hidden is h_k(p-1); returns h_{k+1}(p)."""
        x = torch.cat([self.mtp_embed_norms[k](embeds), self.mtp_hidden_norms[k](prev_hidden)], dim=-1)
        x = self.mtp_projs[k](x)
        layer = self.num_backbone_layers + k
        return self.run_layers(x, range(layer, layer + 1), position_ids, mask, cache, **attn_kwargs)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    # ---- training ----

    def _attention_inputs(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor | None, dict]:
        """Per-sample attention for a packed row: a boolean block-diagonal mask (SDPA) or flash varlen."""
        if self.config._attn_implementation.startswith("flash_attention"):
            return None, varlen_kwargs(position_ids)
        return block_causal_mask(position_ids), {}

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        mtp_loss_weight: float | None = None,
        detach_backbone: bool = False,
    ) -> LossOutput:
        """Training forward on packed rows [B, T]: main loss + weight * mean of MCTP losses.

        `position_ids` restart at 0 for every packed sample, which is all attention needs to keep
        samples apart. With `detach_backbone` (stages 2-3) the backbone runs without gradient and
        only the MCTP losses count, as upstream.
        """
        if labels is None:
            raise ValueError("forward() is the training path and needs labels; use vita_core.generate for inference")
        weight = float(getattr(self.config, "mtp_loss_weight", 1.0) if mtp_loss_weight is None else mtp_loss_weight)
        # Rows of a batch become one long packed row: positions restart per sample, so the
        # per-sample attention keeps rows apart too, and MCTP shifting never wraps across rows.
        input_ids, position_ids, labels = (t.reshape(1, -1) for t in (input_ids, position_ids, labels))
        mask, attn_kwargs = self._attention_inputs(position_ids, self.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_backbone):
            embeds = self.embed(input_ids)
            hidden = self.backbone(embeds, position_ids, mask, **attn_kwargs)
        targets = _shift_targets(labels, position_ids)
        out = LossOutput(loss=torch.zeros((), device=input_ids.device, dtype=torch.float32), main_loss=None)
        if not detach_backbone:
            ce, count, correct = _ce(self.logits, hidden, targets)
            out.main_loss, out.main_count, out.main_correct = ce / max(count, 1), count, correct
            out.loss = out.loss + out.main_loss
        if detach_backbone:
            embeds, hidden = embeds.detach(), hidden.detach()
        mtp_terms = []
        for k in range(self.num_mtp):
            # module k sees positions p >= k+1 of each sample, fed by h_k(p-1)
            keep = position_ids[:, 1:] > k
            if not bool(keep.any()):
                out.mtp_losses.append(hidden.sum() * 0.0)
                out.mtp_counts.append(0)
                out.mtp_correct.append(0)
                continue
            sel_embeds = embeds[:, 1:][keep].view(1, -1, embeds.shape[-1])
            sel_prev = hidden[:, :-1][keep].view(1, -1, hidden.shape[-1])
            sel_pos = position_ids[:, 1:][keep].view(1, -1)
            k_mask, k_kwargs = self._attention_inputs(sel_pos, self.dtype)
            hidden_k = self.mtp(k, sel_embeds, sel_prev, sel_pos, k_mask, **k_kwargs)
            k_targets = targets[:, 1:][keep].view(1, -1)
            ce, count, correct = _ce(self.logits, hidden_k, k_targets)
            loss_k = ce / max(count, 1)
            out.mtp_losses.append(loss_k)
            out.mtp_counts.append(count)
            out.mtp_correct.append(correct)
            mtp_terms.append(loss_k)
            # the next module reads this module's outputs at the same positions
            embeds, hidden = sel_embeds, hidden_k
            position_ids = sel_pos
            targets = k_targets
        if mtp_terms:
            out.loss = out.loss + weight * torch.stack(mtp_terms).mean()
        return out


def _shift_targets(labels: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """targets[t] = labels[t+1] inside a sample, -100 at the last position of each sample."""
    targets = torch.full_like(labels, -100)
    targets[:, :-1] = labels[:, 1:]
    next_starts = torch.zeros_like(position_ids, dtype=torch.bool)
    next_starts[:, :-1] = position_ids[:, 1:] == 0
    targets[next_starts] = -100
    return targets


def _ce(head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor,
        targets: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Summed cross-entropy over supervised positions, their count and top-1 hits. The head runs on
    those positions only: it is a third of a small model's arithmetic, and the prompts and padding
    of a packed row (~30% of vita-mini's) have no target."""
    flat_t = targets.reshape(-1)
    valid = flat_t != -100
    count = int(valid.sum())
    if count == 0:
        return hidden.sum() * 0.0, 0, 0
    logits = head(hidden.reshape(-1, hidden.shape[-1])[valid])
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    ce = nn.functional.cross_entropy(logits, flat_t[valid], reduction="sum")
    correct = int((logits.argmax(-1) == flat_t[valid]).sum())
    return ce, count, correct


__all__ = ["VitaAudioForCausalLM", "LossOutput", "causal_mask_for_cache"]
