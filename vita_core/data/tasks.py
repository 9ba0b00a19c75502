"""Training samples in the reference's jsonl form, the task prompts, and the reasons a sample is skipped.

A `Record` is one chat sample as the reference's data files hold it: `messages` whose text may
contain `<|audio|>` placeholders, filled in order from `audios`. Importers turn corpora into
records; `vita prepare` turns records into token ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vita_core.tokens import AUDIO_PLACEHOLDER

ASR_PROMPT = "Convert the speech to text.\n"
TTS_PROMPT = "Convert the text to speech.\n"

TASKS = ("asr", "tts")  # what an (audio, transcript) pair can become

ROLE_ALIASES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "system": "system"}

# Why a sample was not written. Every skipped sample carries one of these.
MISSING = "missing"  # an audio file does not exist
UNREADABLE = "unreadable"  # an audio file cannot be decoded, or holds no samples
TOO_LONG = "too_long"  # audio longer than --max-seconds or tokens longer than --max-tokens
EMPTY_TEXT = "empty_text"  # a transcript or message with no text
INVALID = "invalid"  # a malformed row: bad roles, placeholder count, several audio spans in one answer
REASONS = (MISSING, UNREADABLE, TOO_LONG, EMPTY_TEXT, INVALID)


@dataclass
class Record:
    """One chat sample: messages with `<|audio|>` placeholders, and the audio files that fill them."""

    id: str
    messages: list[dict[str, str]]
    audios: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Skip:
    """A sample that was not written, and why (one of REASONS)."""

    id: str
    reason: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "reason": self.reason, "detail": self.detail}


def pair_record(utt_id: str, audio: Path, text: str, task: str) -> Record:
    """An (audio, transcript) pair as an ASR or TTS sample, with the reference's prompts."""
    if task == "asr":
        messages = [
            {"role": "user", "content": ASR_PROMPT + AUDIO_PLACEHOLDER},
            {"role": "assistant", "content": text},
        ]
    elif task == "tts":
        messages = [
            {"role": "user", "content": TTS_PROMPT + text},
            {"role": "assistant", "content": AUDIO_PLACEHOLDER},
        ]
    else:
        raise ValueError(f"unknown task {task!r}")
    return Record(f"{task}/{utt_id}", messages, [audio])


def kind_of(messages: list[dict[str, str]]) -> str:
    """asr, tts, sqa (audio in an answer) or text (no audio), read off the messages."""
    user = " ".join(m["content"] for m in messages if m["role"] == "user")
    answer = " ".join(m["content"] for m in messages if m["role"] == "assistant")
    if ASR_PROMPT.strip() in user:
        return "asr"
    if TTS_PROMPT.strip() in user:
        return "tts"
    if AUDIO_PLACEHOLDER in answer or AUDIO_PLACEHOLDER in user:
        return "sqa"
    return "text"


def apply_tts_rule(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Prepend the TTS text to every answer after a TTS request, so the answer re-emits it.

    The reference does this for every sample whose user turn holds the TTS prompt (dataset_qwen2.py,
    "add text to TTS"): the text after the prompt, stripped, goes in front of the answer's content.
    """
    out, add_text = [], None
    for m in messages:
        if m["role"] == "user" and TTS_PROMPT.strip() in m["content"]:
            add_text = m["content"].replace(TTS_PROMPT, "").strip()
        if m["role"] == "assistant" and add_text is not None:
            m = {"role": m["role"], "content": add_text + m["content"]}
        out.append(m)
    return out
