"""The realtime session object: vita's defaults and the checks of a `session.update`.

A session.update is checked whole before any of it applies, so a bad field leaves the session as it
was and the client gets one `error` event naming that field.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from vita_core.errors import InputError
from vita_core.speech import SpeechModel

INF_TOKENS = 2048  # max_response_output_tokens "inf": the budget of one answer
DEFAULT_VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
               "create_response": True, "interrupt_response": True}


class Refused(Exception):
    """A client event that cannot be done: answered with an `error` event."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def _check_vad(value: Any) -> dict[str, Any] | None:
    """server_vad settings laid over OpenAI's defaults, or None (null or type none: the client commits its turns)."""
    if value is None or (isinstance(value, dict) and value.get("type") == "none"):
        return None
    if not isinstance(value, dict) or value.get("type", "server_vad") != "server_vad":
        raise Refused("invalid_value", "session.turn_detection: use {\"type\": \"server_vad\", ...} or null",
                      "session.turn_detection")
    vad = {**DEFAULT_VAD, **value}
    if set(vad) - set(DEFAULT_VAD):
        unknown = sorted(set(vad) - set(DEFAULT_VAD))
        raise Refused("unknown_parameter", f"session.turn_detection has unknown fields {unknown}",
                      "session.turn_detection")
    if not isinstance(vad["threshold"], (int, float)) or not 0 < vad["threshold"] < 1:
        raise Refused("invalid_value", f"session.turn_detection.threshold {vad['threshold']!r} must be between 0 and 1",
                      "session.turn_detection.threshold")
    for key in ("silence_duration_ms", "prefix_padding_ms"):
        if not isinstance(vad[key], int) or vad[key] < (1 if key == "silence_duration_ms" else 0):
            raise Refused("invalid_value", f"session.turn_detection.{key} {vad[key]!r} must be a whole number of ms",
                          f"session.turn_detection.{key}")
    return vad


def check_modalities(value: Any, where: str) -> list[str]:
    """Text, or text with audio (vita speaks with its text, never audio alone)."""
    if value not in (["text"], ["text", "audio"], ["audio", "text"]):
        raise Refused("invalid_value", f'{where} {value!r}: use ["text", "audio"] or ["text"]', where)
    return list(value)


def updated(current: dict[str, Any], given: dict[str, Any], speech: SpeechModel,
            answered: int) -> tuple[dict[str, Any], SpeechModel]:
    """The session after `given` (and the model with its mode), or Refused naming the first bad field."""
    from vita_core.schedule import get_mode

    new = dict(current)
    for key, value in given.items():
        where = f"session.{key}"
        if key == "modalities":
            new[key] = check_modalities(value, where)
        elif key == "voice" and isinstance(value, str):
            new[key] = value  # vita has the checkpoint's one voice: the name is kept, not used
        elif key == "instructions" and isinstance(value, str):
            if answered and value != current["instructions"]:
                raise Refused("invalid_value", "session.instructions can only change before the first response",
                              where)
            new[key] = value
        elif key == "turn_detection":
            new[key] = _check_vad(value)
        elif key in ("input_audio_format", "output_audio_format"):
            if value != "pcm16":
                raise Refused("invalid_value", f"{where} {value!r}: vita takes and gives pcm16 (24 kHz)", where)
        elif key == "mode" and isinstance(value, str):
            try:
                speech = replace(speech, mode=get_mode(value))
            except InputError as exc:
                raise Refused("invalid_value", f"{where}: {exc}", where) from None
            new[key] = value
        elif key == "temperature" and isinstance(value, (int, float)) and value >= 0:
            new[key] = float(value)
        elif key == "max_response_output_tokens" and (value == "inf" or (isinstance(value, int) and value >= 1)):
            new[key] = value
        elif key in ("input_audio_transcription", "tools", "tool_choice") and not value:
            continue  # OpenAI's clients send these empty; vita has neither
        else:
            raise Refused("invalid_value", f"{where}: {value!r} is not a value vita takes for it", where)
    return new, speech
