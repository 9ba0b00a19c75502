"""VITA-Audio-Plus audio input: speech -> SenseVoice features -> projector -> LLM input embeddings.

A Plus checkpoint hears user (and voice-prompt) audio as continuous vectors, not codes: a
recording becomes `<|begin_of_audio|>` + `<|context_of_audio|>` x (frames + 4) + `<|end_of_audio|>`
and the backbone's input embeddings at those slots are the projected SenseVoice features (upstream
scatters them in the same way). Its MCTP modules, as upstream's, keep reading the token embedding
of `<|context_of_audio|>` there, so the engine takes these embeddings for the backbone only.

The encoder's and projector's weights live in the checkpoint (`model.audio_model.model.*`,
`model.audio_projection.*`); a SenseVoiceSmall folder gives the encoder's architecture
(config.yaml) and its feature front end (am.mvn).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from vita_core.codec.sensevoice.encoder import (
    FEATURE_SIZE,
    PLUS_ENCODER_PREFIX,
    PLUS_PROJECTOR_PREFIX,
    SAMPLE_RATE,
    ResamplerProjector,
    SenseVoiceEncoder,
    load_sensevoice,
)
from vita_core.codec.weights import strict_load
from vita_core.errors import CheckpointError
from vita_core.model.checkpoint import PLUS_AUDIO_PREFIXES, read_state_dict


class PlusAudioInput:
    """Recordings -> (frames + 4, hidden) embeddings for `<|context_of_audio|>` slots."""

    sample_rate = SAMPLE_RATE

    def __init__(self, encoder: SenseVoiceEncoder, projector: ResamplerProjector) -> None:
        self.encoder = encoder
        self.projector = projector.eval()

    @torch.inference_mode()
    def embed(self, wav: np.ndarray, sample_rate: int, language: str = "auto") -> torch.Tensor:
        """One recording at any rate -> its projected features, on the projector's device and dtype.

        `language` is SenseVoice's language query; upstream always sends "auto".
        """
        feats = self.encoder.encode(wav, sample_rate, language)
        weight = self.projector.mlp[0].weight
        return self.projector(feats.to(device=weight.device, dtype=weight.dtype))


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_plus_audio(checkpoint: str | Path, sensevoice_dir: str | Path, hidden_size: int, device: str = "cpu",
                    dtype: torch.dtype = torch.float32) -> PlusAudioInput:
    """The audio half of a Plus checkpoint, each module loaded key for key from its safetensors."""
    state = read_state_dict(checkpoint, PLUS_AUDIO_PREFIXES)
    stray = sorted(k for k in state if not k.startswith((PLUS_ENCODER_PREFIX, PLUS_PROJECTOR_PREFIX)))
    if stray:
        raise CheckpointError(f"{checkpoint} holds audio tensors vita does not know ({', '.join(stray[:3])}); "
                              "use the released VITA-Audio-Plus weights unchanged")
    encoder = load_sensevoice(sensevoice_dir, device=device, dtype=dtype, state=_strip(state, PLUS_ENCODER_PREFIX))
    projector = ResamplerProjector(FEATURE_SIZE, hidden_size)
    strict_load(projector, _strip(state, PLUS_PROJECTOR_PREFIX), f"{checkpoint} {PLUS_PROJECTOR_PREFIX}*")
    return PlusAudioInput(encoder, projector.to(device=device, dtype=dtype))


def fill_audio_context(token_embeds: torch.Tensor, ids: Sequence[int], features: Sequence[torch.Tensor],
                       context_id: int) -> torch.Tensor:
    """Token embeddings [T, H] of `ids` with the `<|context_of_audio|>` slots replaced, in order, by `features`."""
    slots = (torch.as_tensor(list(ids)) == context_id).nonzero().flatten().to(token_embeds.device)
    total = sum(len(f) for f in features)
    if len(slots) != total:
        raise ValueError(f"the prompt has {len(slots)} <|context_of_audio|> slots but {total} feature vectors")
    out = token_embeds.clone()
    if total:
        out[slots] = torch.cat(list(features)).to(device=out.device, dtype=out.dtype)
    return out
