"""openai-whisper checkpoints (`whisper.load_model(path)`), greedy, one 30 s window, forced language."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from vita_core.errors import CheckpointError, InputError
from vita_core.eval.asr.base import Progress, batches


def _import_whisper():
    try:
        import whisper
    except ImportError as exc:
        raise InputError(
            "openai-whisper is not installed: run `pip install --no-deps openai-whisper` "
            "(tiktoken, numba and more-itertools come with vita)"
        ) from exc
    return whisper


class OpenAIWhisper:
    """A `.pt` checkpoint as openai-whisper saves it (`dims` + `model_state_dict`)."""

    def __init__(self, path: Path, language: str, device: str = "cpu", batch_size: int = 8):
        whisper = _import_whisper()
        try:
            self.model = whisper.load_model(str(path), device=device)
        except (RuntimeError, KeyError, TypeError, OSError, EOFError, pickle.UnpicklingError) as exc:
            raise CheckpointError(f"{path}: not a loadable openai-whisper checkpoint ({exc})") from exc
        if language != "en" and not self.model.is_multilingual:
            raise CheckpointError(
                f"{path}: English-only Whisper cannot transcribe {language!r}; use a multilingual one"
            )
        self.name = f"openai-whisper:{Path(path).name}"
        self.language = language
        self.batch_size = batch_size
        self.options = whisper.DecodingOptions(
            task="transcribe", language=language, temperature=0.0, without_timestamps=True, fp16=device != "cpu"
        )

    @torch.inference_mode()
    def transcribe(self, audios: Sequence[np.ndarray], progress: Progress | None = None) -> list[str]:
        whisper = _import_whisper()
        out: list[str] = []
        for batch in batches(audios, self.batch_size):
            mels = torch.stack(
                [
                    whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(a)), self.model.dims.n_mels)
                    for a in batch
                ]
            ).to(self.model.device)
            out.extend(r.text.strip() for r in whisper.decode(self.model, mels, self.options))
            if progress:
                progress(len(out), len(audios))
        return out
