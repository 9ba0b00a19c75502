"""Hugging Face Whisper folders (`WhisperForConditionalGeneration` + `WhisperProcessor`), as the Seed-TTS
reference runs whisper-large-v3: fp32 on CPU, one 30 s window, forced language, transcribe task, greedy."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from vita_core.errors import CheckpointError
from vita_core.eval.asr.base import Progress, batches
from vita_core.eval.wavs import ASR_RATE


class HFWhisper:
    def __init__(self, folder: Path, language: str, device: str = "cpu", batch_size: int = 8):
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        try:
            self.processor = WhisperProcessor.from_pretrained(str(folder))
            self.model = WhisperForConditionalGeneration.from_pretrained(str(folder)).to(device).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{folder}: not a Hugging Face Whisper folder with its processor ({exc})") from exc
        # English-only checkpoints (*.en) take no language/task tokens; HF refuses them there.
        self.multilingual = bool(getattr(self.model.generation_config, "is_multilingual", True))
        if not self.multilingual and language != "en":
            raise CheckpointError(
                f"{folder}: English-only Whisper cannot transcribe {language!r}; use a multilingual one"
            )
        self.name = f"hf-whisper:{Path(folder).name}"
        self.language = language
        self.device = device
        self.batch_size = batch_size

    @torch.inference_mode()
    def transcribe(self, audios: Sequence[np.ndarray], progress: Progress | None = None) -> list[str]:
        out: list[str] = []
        for batch in batches(audios, self.batch_size):
            features = self.processor.feature_extractor(
                list(batch), sampling_rate=ASR_RATE, return_tensors="pt"
            ).input_features.to(self.device)
            prompt = {"language": self.language, "task": "transcribe"} if self.multilingual else {}
            ids = self.model.generate(features, do_sample=False, **prompt)
            out.extend(t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True))
            if progress:
                progress(len(out), len(audios))
        return out
