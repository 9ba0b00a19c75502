"""The GLM-4-Voice speech tokenizer: 16 kHz speech -> 12.5 codes per second from 16384 entries.

Loads the released `THUDM/glm-4-voice-tokenizer` folder unchanged (config.json,
model.safetensors, preprocessor_config.json). Audio is cut into 30 s windows as the reference
does; each window's log-mel features come from transformers' `WhisperFeatureExtractor`,
padded to a multiple of 1280 samples (one code), so a window of n samples gives ceil(n / 1280)
codes. Windows are batched with their own padding masked out, which makes a batch give exactly
what encoding each waveform alone gives.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import WhisperFeatureExtractor

from vita_core.audio import check_waveform, resample
from vita_core.codec.glm4voice.whisper_vq import WhisperVQConfig, WhisperVQEncoder
from vita_core.errors import AudioError, CheckpointError
from vita_core.model.checkpoint import read_safetensors

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30

# Tensors the released file carries that computing codes never reads: the post-VQ position
# table (used only by layers after the quantizer, which the tokenizer does not have) and the
# codebook's EMA training statistics. They are dropped by name; any other extra key is an error.
UNUSED_KEYS = frozenset({"embed_positions2.weight", "ema_count", "ema_weight"})

REQUIRED_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def read_state_dict(folder: Path, expected: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Read model.safetensors and check it against the model's names and shapes, exactly."""
    state = read_safetensors(folder / "model.safetensors", lambda name: name not in UNUSED_KEYS)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{folder}/model.safetensors does not match the GLM-4-Voice tokenizer: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}; "
            "use the released glm-4-voice-tokenizer folder unchanged"
        )
    wrong = [f"{k} {tuple(v.shape)} != {tuple(expected[k])}" for k, v in state.items() if v.shape != expected[k]]
    if wrong:
        raise CheckpointError(f"{folder}/model.safetensors shapes do not match config.json: {wrong[:3]}")
    return state


class GLM4VoiceTokenizer:
    """SpeechEncoder for GLM-4-Voice codes. Build it with `load_glm4voice_tokenizer`."""

    sample_rate = SAMPLE_RATE

    def __init__(self, model: WhisperVQEncoder, features: WhisperFeatureExtractor, batch_size: int = 8):
        self.model = model.eval()
        self.features = features
        self.batch_size = batch_size
        self.samples_per_code = model.frames_per_code * features.hop_length
        self.codes_per_second = SAMPLE_RATE / self.samples_per_code
        self.codebook_size = model.config.quantize_vocab_size

    @property
    def device(self) -> torch.device:
        return self.model.codebook.weight.device

    def num_codes(self, num_samples: int) -> int:
        """How many codes `num_samples` of 16 kHz audio give (per 30 s window, rounded up)."""
        window = WINDOW_SECONDS * SAMPLE_RATE
        full, rest = divmod(num_samples, window)
        return full * math.ceil(window / self.samples_per_code) + math.ceil(rest / self.samples_per_code)

    def encode(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """One mono waveform at any rate -> 1-D int64 codes."""
        return self.encode_batch([wav], sample_rate)[0]

    def encode_batch(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        """Several waveforms; windows of all of them are batched longest-first for less padding."""
        if len(wavs) == 0:
            raise AudioError("no audio given to encode")
        windows: list[tuple[int, np.ndarray]] = []
        for index, wav in enumerate(wavs):
            wav = check_waveform(wav, sample_rate, name=f"audio #{index}")
            if sample_rate != SAMPLE_RATE:
                wav = resample(wav, sample_rate, SAMPLE_RATE)
            step = WINDOW_SECONDS * SAMPLE_RATE
            windows += [(index, wav[start : start + step]) for start in range(0, len(wav), step)]
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i][1]))
        codes: list[np.ndarray] = [np.empty(0, np.int64)] * len(windows)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, window_codes in zip(chunk, self._encode_windows([windows[i][1] for i in chunk])):
                codes[i] = window_codes
        out: list[list[np.ndarray]] = [[] for _ in wavs]
        for (index, _), window_codes in zip(windows, codes):
            out[index].append(window_codes)
        return [np.concatenate(parts) for parts in out]

    def _features(self, window: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(
            window,
            sampling_rate=SAMPLE_RATE,
            return_attention_mask=True,
            return_tensors="pt",
            padding="longest",
            pad_to_multiple_of=self.samples_per_code,
        )
        return feats.input_features[0], feats.attention_mask[0]

    @torch.inference_mode()
    def _encode_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        feats = [self._features(w) for w in windows]
        frames = max(f.shape[-1] for f, _ in feats)
        mels = torch.zeros(len(feats), feats[0][0].shape[0], frames)
        mask = torch.zeros(len(feats), frames, dtype=torch.long)
        for row, (feat, m) in enumerate(feats):
            mels[row, :, : feat.shape[-1]] = feat
            mask[row, : m.shape[0]] = m
        dtype = self.model.codebook.weight.dtype
        codes, valid = self.model(mels.to(self.device, dtype), mask.to(self.device))
        return [c[v].cpu().numpy().astype(np.int64) for c, v in zip(codes, valid)]


def load_glm4voice_tokenizer(
    folder: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32, batch_size: int = 8
) -> GLM4VoiceTokenizer:
    """Build the tokenizer from a released-format folder; every tensor must match by name and shape."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"GLM-4-Voice tokenizer folder not found: {folder}")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder} lacks {', '.join(missing)}: download the full glm-4-voice-tokenizer folder")
    try:
        config = WhisperVQConfig(**json.loads((folder / "config.json").read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder}/config.json is not a valid WhisperVQ config: {exc}") from exc
    features = WhisperFeatureExtractor.from_pretrained(str(folder))
    if features.feature_size != config.num_mel_bins or features.sampling_rate != SAMPLE_RATE:
        raise CheckpointError(
            f"{folder}/preprocessor_config.json gives {features.feature_size} mel bins at {features.sampling_rate} Hz, "
            f"config.json expects {config.num_mel_bins} at {SAMPLE_RATE} Hz"
        )
    with torch.device("meta"):
        model = WhisperVQEncoder(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict(read_state_dict(folder, expected), strict=True, assign=True)
    return GLM4VoiceTokenizer(model.to(device=device, dtype=dtype), features, batch_size=batch_size)
