"""A slow reference decoder: recomputes every module over the whole sequence for each token.

No KV cache, no catch-up bookkeeping, full-vocabulary logits masked by the layout: if the
engine's caching, chaining or restricted logits were wrong, its tokens would differ from these.
"""

import torch

from vita_core.schedule import BACKBONE, Kind, Layout, LayoutState, Mode


def full_hidden(model, seq, producer, prompt_embeds=None):
    """Hidden states of `producer` at every position it covers, computed from scratch.

    `prompt_embeds` replace the backbone's input embeddings of the first positions (Plus audio
    features); the MCTP modules read token embeddings everywhere.
    """
    ids = torch.tensor(seq).unsqueeze(0)
    emb = model.embed(ids)
    inputs = emb
    if prompt_embeds is not None:
        inputs = emb.clone()
        inputs[0, : len(prompt_embeds)] = prompt_embeds
    h = model.backbone(inputs, torch.arange(len(seq)).unsqueeze(0), None)
    if producer == BACKBONE:
        return h
    for k in range(producer + 1):
        pos = torch.arange(k + 1, len(seq)).unsqueeze(0)
        h = model.mtp(k, emb[:, k + 1 :], h[:, :-1], pos, None)
    return h


def reference_generate(model, lay, prompt, mode: Mode, layout: Layout, max_new: int, prompt_embeds=None):
    seq, state, out = list(prompt), LayoutState(), []
    producers = mode.producers(max_new, model.num_mtp)
    with torch.no_grad():
        for producer in producers:
            logits = model.logits(full_hidden(model, seq, producer, prompt_embeds)[0, -1]).float()
            kind = layout.kind(state)
            if kind is Kind.BOA:
                token = lay.begin_of_audio
            elif kind is Kind.EOA:
                token = lay.end_of_audio
            else:
                allowed = torch.ones_like(logits, dtype=torch.bool)
                if kind in (Kind.CODE, Kind.CODE_OR_EOA):
                    allowed[:] = False
                    allowed[lay.audio_offset : lay.audio_end] = True
                    allowed[lay.end_of_audio] = kind is Kind.CODE_OR_EOA
                elif kind is not Kind.ANY:
                    allowed[lay.audio_offset :] = False
                    allowed[lay.end_of_audio] = False
                    allowed[lay.begin_of_audio] = kind is Kind.TEXT
                token = int(torch.argmax(logits.masked_fill(~allowed, float("-inf"))))
            state = layout.advance(state, token, lay.begin_of_audio, lay.end_of_audio, lay.is_audio_code(token))
            seq.append(token)
            out.append(token)
    return out, producers
