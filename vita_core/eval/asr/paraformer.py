"""FunASR Paraformer folders (paraformer-zh), loaded with `funasr.AutoModel(model=DIR)` offline, no VAD or
punctuation, as the Seed-TTS zh reference runs it. Transcripts are returned raw; the protocol's zhconv step is
applied by the scorer."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Sequence

import numpy as np

from vita_core.errors import CheckpointError, InputError
from vita_core.eval.asr.base import Progress, batches


class Paraformer:
    def __init__(self, folder: Path, language: str = "zh", device: str = "cpu", batch_size: int = 8):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # funasr prints notices on import
                from funasr import AutoModel
        except ImportError as exc:
            raise InputError("funasr is not installed: run `pip install funasr kaldi-native-fbank`") from exc
        folder = Path(folder)
        if not (folder / "config.yaml").is_file() or not (folder / "model.pt").is_file():
            raise CheckpointError(f"{folder}: a Paraformer folder needs config.yaml and model.pt")
        with contextlib.redirect_stdout(io.StringIO()):  # funasr prints its banner and config
            self.model = AutoModel(
                model=str(folder), device=device, disable_update=True, disable_pbar=True, log_level="ERROR"
            )
        self.name = f"paraformer:{folder.name}"
        self.language = language
        self.batch_size = batch_size

    def transcribe(self, audios: Sequence[np.ndarray], progress: Progress | None = None) -> list[str]:
        out: list[str] = []
        for batch in batches(audios, self.batch_size):
            with contextlib.redirect_stdout(io.StringIO()):
                results = self.model.generate(input=list(batch), batch_size_s=300, disable_pbar=True)
            out.extend(r["text"].strip() for r in results)
            if progress:
                progress(len(out), len(audios))
        return out
