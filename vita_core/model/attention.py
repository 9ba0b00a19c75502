"""Attention inputs for packed training and cached decoding.

Packed rows hold several samples whose position ids run 0, 1, 2, ... (or k+1, k+2, ... for
MCTP module k, which skips each sample's first positions). A new sample starts wherever a
position is not its predecessor plus one. SDPA gets a boolean block-diagonal causal mask,
flash-attn varlen boundaries (cu_seqlens) instead. (Hugging Face's eager attention adds its mask
to the scores, so it would misread a boolean one: vita never selects it.)
"""

from __future__ import annotations

import torch


def segment_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """[1, T] positions -> [T] index of the sample each token belongs to."""
    pos = position_ids.reshape(-1)
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[1:] = pos[1:] != pos[:-1] + 1
    return torch.cumsum(starts.long(), 0) - 1


def block_causal_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """Bool [1, 1, T, T]: token i attends to j iff same sample and j <= i."""
    seg = segment_ids(position_ids)
    t = seg.shape[0]
    idx = torch.arange(t, device=seg.device)
    allowed = (seg[:, None] == seg[None, :]) & (idx[None, :] <= idx[:, None])
    return allowed.view(1, 1, t, t)


def varlen_kwargs(position_ids: torch.Tensor) -> dict:
    """flash-attn varlen boundaries for a packed row (the kwargs HF's flash path accepts)."""
    seg = segment_ids(position_ids)
    lengths = torch.bincount(seg)
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=seg.device)
    cu[1:] = torch.cumsum(lengths, 0)
    longest = int(lengths.max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


def causal_mask_for_cache(q_len: int, kv_len: int, device: torch.device) -> torch.Tensor | None:
    """Queries are the last q_len of kv_len keys: bool [1, 1, q, kv], or None for one query."""
    if q_len == 1:
        return None
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)
    k_pos = torch.arange(kv_len, device=device)
    return (k_pos[None, :] <= q_pos[:, None]).view(1, 1, q_len, kv_len)
