"""ASR backends for scoring, each loaded once from a local file or folder.

The format is recognised from the path: a file -> openai-whisper checkpoint; a folder with
config.json -> Hugging Face Whisper; a folder with config.yaml + model.pt -> FunASR Paraformer.
The Seed-TTS protocol uses Whisper for English and Paraformer-zh for Chinese.
"""

from __future__ import annotations

from pathlib import Path

from vita_core.errors import CheckpointError
from vita_core.eval.asr.base import Progress, Transcriber, batches
from vita_core.eval.normalize import check_lang

PROTOCOL_FAMILY = {"en": "whisper", "zh": "paraformer"}

__all__ = ["Progress", "Transcriber", "batches", "load_transcriber", "detect_format", "protocol_note"]


def detect_format(path: Path) -> str:
    """'openai-whisper', 'hf-whisper' or 'paraformer', from what is at `path`."""
    path = Path(path)
    if path.is_file():
        return "openai-whisper"
    if (path / "config.json").is_file():
        return "hf-whisper"
    if (path / "config.yaml").is_file() and (path / "model.pt").is_file():
        return "paraformer"
    if not path.exists():
        raise CheckpointError(f"{path}: ASR model not found")
    raise CheckpointError(
        f"{path}: not an ASR model (expected an openai-whisper .pt file, a Hugging Face Whisper folder with "
        "config.json, or a FunASR Paraformer folder with config.yaml and model.pt)"
    )


def load_transcriber(path: Path, language: str, device: str = "cpu", batch_size: int = 8) -> Transcriber:
    """Load the ASR model at `path` once, to transcribe `language` ("en" or "zh")."""
    check_lang(language)
    kind = detect_format(path)
    if kind == "openai-whisper":
        from vita_core.eval.asr.openai_whisper import OpenAIWhisper

        return OpenAIWhisper(path, language, device, batch_size)
    if kind == "hf-whisper":
        from vita_core.eval.asr.hf_whisper import HFWhisper

        return HFWhisper(path, language, device, batch_size)
    from vita_core.eval.asr.paraformer import Paraformer

    return Paraformer(path, language, device, batch_size)


def protocol_note(transcriber: Transcriber, language: str) -> str | None:
    """A warning when the backend is not the one the Seed-TTS protocol uses for `language`."""
    family = PROTOCOL_FAMILY[language]
    if family in transcriber.name:
        return None
    return (
        f"the Seed-TTS protocol transcribes {language} with {family}; "
        f"{transcriber.name} gives numbers that are not comparable"
    )
