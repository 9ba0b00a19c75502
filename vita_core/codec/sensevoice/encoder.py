"""Plus-variant audio input: SenseVoice-Small encoder features and the projector into the LLM.

The encoder is FunASR's own `SenseVoiceSmall`, built from a local released-format folder
(config.yaml, configuration.json, model.pt, am.mvn, the BPE model) by `funasr.AutoModel`.
Features follow the reference's `inference_encode`: 80-dim fbank with LFR stacking (560 dims)
and CMVN from funasr's frontend, then four query embeddings (language "auto", event, emotion,
text norm "woitn") prepended, so n fbank frames give n + 4 vectors of 512.
`ResamplerProjector` maps them to the LLM's hidden size with the Plus checkpoint's names.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from vita_core.audio import check_waveform, resample
from vita_core.codec.weights import strict_load
from vita_core.errors import AudioError, CheckpointError

SAMPLE_RATE = 16000
FEATURE_SIZE = 512
NUM_QUERIES = 4

# Embedding rows of SenseVoiceSmall.embed used by the reference's inference_encode after the language
# query (whose row comes from the model's lid_dict: "auto" is 0, the reference's choice).
EVENT, EMOTION, TEXTNORM_WOITN = 1, 2, 15

# funasr's WavFrontend adds +-1 LSB of random dither by default; without it the same audio always
# gives the same features (the difference is far below the signal).
NO_DITHER = {"dither": 0.0}

# Where the Plus checkpoint (Qwen2MTPSenseVoiceForCausalLM) keeps these modules.
PLUS_ENCODER_PREFIX = "model.audio_model.model."
PLUS_PROJECTOR_PREFIX = "model.audio_projection."


class ResamplerProjector(nn.Module):
    """LayerNorm(512) -> Linear(512, H, no bias) -> GELU -> Linear(H, H, no bias).

    State-dict names (`pre_proj_layernorm.*`, `mlp.0.weight`, `mlp.2.weight`) match the
    reference, under `model.audio_projection.` in the Plus checkpoint.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.pre_proj_layernorm = nn.LayerNorm(input_size)
        self.mlp = nn.Sequential(
            nn.Linear(input_size, hidden_size, bias=False),
            nn.GELU(),
            nn.Linear(hidden_size, hidden_size, bias=False),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pre_proj_layernorm(features))


class SenseVoiceEncoder:
    """Continuous audio features for `<|context_of_audio|>` slots. Build with `load_sensevoice`."""

    sample_rate = SAMPLE_RATE
    feature_size = FEATURE_SIZE

    def __init__(self, model: nn.Module, frontend, device: str = "cpu"):
        self.model = model.eval()
        self.frontend = frontend
        self.device = torch.device(device)

    def fbank(self, wav: np.ndarray, sample_rate: int) -> torch.Tensor:
        """Mono audio at any rate -> (frames, 560) LFR fbank with CMVN, through funasr's frontend."""
        from funasr.utils.load_utils import extract_fbank

        wav = check_waveform(wav, sample_rate)
        if sample_rate != SAMPLE_RATE:
            wav = resample(wav, sample_rate, SAMPLE_RATE)
        window_ms = float(getattr(self.frontend, "frame_length", 25))
        if wav.size < window_ms * SAMPLE_RATE / 1000:
            raise AudioError(f"{wav.size / SAMPLE_RATE:.3f} s of audio is shorter than SenseVoice's "
                             f"{window_ms:g} ms analysis window, too short to give any speech features")
        feats, _ = extract_fbank(torch.from_numpy(wav), data_type="sound", frontend=self.frontend)
        return feats[0]

    @property
    def languages(self) -> tuple[str, ...]:
        """Values of the language query: "auto" (the reference's choice) or a language SenseVoice knows."""
        return tuple(self.model.lid_dict)

    def encode(self, wav: np.ndarray, sample_rate: int, language: str = "auto") -> torch.Tensor:
        """One waveform -> (frames + 4, 512) float tensor."""
        return self.encode_batch([wav], sample_rate, language)[0]

    @torch.inference_mode()
    def encode_batch(self, wavs: Sequence[np.ndarray], sample_rate: int, language: str = "auto") -> list[torch.Tensor]:
        """Several waveforms, padded together; each result has its own frames + 4 rows."""
        if language not in self.model.lid_dict:
            raise AudioError(f"SenseVoice has no language {language!r}; choose {', '.join(self.languages)}")
        feats = [self.fbank(w, sample_rate) for w in wavs]
        lengths = torch.tensor([len(f) for f in feats], device=self.device)
        dtype = self.model.embed.weight.dtype
        speech = nn.utils.rnn.pad_sequence(feats, batch_first=True).to(self.device, dtype)
        lid = self.model.lid_dict[language]
        query_ids = torch.tensor([lid, EVENT, EMOTION, TEXTNORM_WOITN], device=self.device)
        queries = self.model.embed(query_ids)[None].expand(len(feats), -1, -1)
        out, out_lengths = self.model.encoder(torch.cat([queries, speech], dim=1), lengths + NUM_QUERIES)
        return [o[:n] for o, n in zip(out, out_lengths.tolist())]

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the weights, e.g. with the `model.audio_model.model.*` tensors of a Plus checkpoint."""
        strict_load(self.model, state, "SenseVoice state dict")


def load_sensevoice(folder: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                    state: dict[str, torch.Tensor] | None = None) -> SenseVoiceEncoder:
    """Build SenseVoiceSmall from a local folder with funasr, then load its weights key for key.

    The folder gives the architecture (config.yaml) and the feature front end (am.mvn); the weights
    are its model.pt, or `state` when given (a Plus checkpoint's own copy, which then wins).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"SenseVoice folder not found: {folder}")
    needed = ("config.yaml",) if state is not None else ("config.yaml", "model.pt")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder} lacks {', '.join(missing)}: download the full SenseVoiceSmall folder")
    # funasr prints and logs freely while importing and building (its import configures the root
    # logger at INFO level); keep that out of the caller's output.
    level = logging.root.level
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from funasr import AutoModel

            logging.root.setLevel(logging.ERROR)
            auto = AutoModel(
                model=str(folder), device=device, disable_update=True, disable_pbar=True,
                ncpu=torch.get_num_threads(), frontend_conf=NO_DITHER,
            )
    except ImportError as exc:
        raise CheckpointError("SenseVoice needs funasr: pip install funasr kaldi-native-fbank") from exc
    except Exception as exc:
        raise CheckpointError(f"funasr could not build SenseVoice from {folder}: {exc}") from exc
    finally:
        logging.root.setLevel(level)
    model = auto.model
    where = "the Plus checkpoint's model.audio_model.model.* tensors"
    if state is None:
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model_state_dict", "model"):  # the wrappers funasr's loader accepts
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
        where = f"{folder}/model.pt"
    strict_load(model, state, where)
    return SenseVoiceEncoder(model.to(device=device, dtype=dtype), auto.kwargs["frontend"], device=device)
