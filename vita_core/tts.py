"""Text to speech: the reference's TTS prompt, interleaved generation, streaming decode.

The user turn is "Convert the text to speech.\\n<text>" (the reference's task prompt); an
optional voice prompt goes in a system turn "Your Voice: <|audio|>\\n" holding the prompt
audio (its codes, or for a Plus checkpoint its SenseVoice features), as the reference's
inference script does. Each audio code is pushed into the codec's streaming decoder as soon as
it is generated (the decoder decides when it has enough to emit final PCM), so PCM reaches the
caller's `on_audio` while the answer is still being generated.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from vita_core.errors import InputError
from vita_core.speech import SpeechModel, read_audio
from vita_core.tokens import AudioCodes, AudioContext

if TYPE_CHECKING:
    from vita_core.generate import Sampling

TTS_TASK = "Convert the text to speech.\n"
VOICE_PROMPT = "Your Voice: "


@dataclass
class TtsResult:
    """What one synthesis produced and how fast (times are wall-clock from the request)."""

    text: str  # the text the model generated alongside the audio
    num_codes: int
    audio_blocks: int
    samples: int
    sample_rate: int
    audio_seconds: float
    first_audio_ms: float | None  # request -> first PCM handed to on_audio
    seconds: float
    real_time_factor: float | None  # wall seconds per second of audio (< 1 is faster than real time)
    tokens: int
    tokens_per_s: float
    backbone_forwards: int
    mtp_forwards: int
    mode: str
    stop_reason: str
    codes: list[int] = field(default_factory=list, repr=False)

    def to_dict(self, with_codes: bool = False) -> dict:
        out = asdict(self)
        if not with_codes:
            out.pop("codes")
        return out


def tts_prompt(speech: SpeechModel, text: str, voice: AudioCodes | AudioContext | None = None) -> list[int]:
    """Token ids of the TTS request (with a voice prompt when one is given)."""
    from vita_core.tokens import Message

    text = text.strip()
    if not text:
        raise InputError("the text to synthesize is empty")
    messages = []
    if voice is not None:
        messages.append(Message("system", [VOICE_PROMPT, voice, "\n"]))
    messages.append(Message("user", TTS_TASK + text))
    return speech.chat.encode(messages)


def voice_prompt(speech: SpeechModel, prompt_wav: str | Path) -> AudioCodes | AudioContext:
    """A voice-prompt recording as the checkpoint hears it (16 kHz through its audio input)."""
    rate = speech.input_rate
    return speech.audio_part(read_audio(prompt_wav, rate), rate, f"--prompt-wav {prompt_wav}")


def synthesize(
    speech: SpeechModel,
    text: str,
    on_audio: Callable[[np.ndarray], None],
    voice: AudioCodes | AudioContext | None = None,
    sampling: Sampling | None = None,
    max_new_tokens: int = 1024,
) -> TtsResult:
    """Generate speech for `text`, calling `on_audio(pcm)` for every decoded chunk as it is ready."""
    from vita_core.generate import AudioBlockEvent, DoneEvent, TokenEvent

    if speech.decoder is None:
        raise InputError("speech output needs the speech decoder: pass --decoder-dir or set VITA_AUDIO_DECODER")
    start = time.perf_counter()
    prompt = tts_prompt(speech, text, voice)
    stream = speech.decoder.stream()
    sample_rate = int(speech.decoder.sample_rate)
    codes: list[int] = []
    text_ids: list[int] = []
    first_audio: float | None = None
    samples = blocks = 0
    done = None

    def emit(pcm: np.ndarray) -> None:
        nonlocal first_audio, samples
        if pcm.size:
            if first_audio is None:
                first_audio = time.perf_counter() - start
            samples += int(pcm.size)
            on_audio(np.asarray(pcm, dtype=np.float32))

    for event in speech.engine.generate(prompt, mode=speech.mode, layout=speech.answer_layout(),
                                        sampling=sampling or speech.sampling, max_new_tokens=max_new_tokens,
                                        prompt_embeds=speech.prompt_embeds(prompt, [voice] if voice else [])):
        if isinstance(event, TokenEvent) and event.kind == "text":
            text_ids.append(event.token)
        elif isinstance(event, TokenEvent) and event.kind == "audio":
            code = speech.tokens.id_to_code(event.token)
            codes.append(code)
            emit(stream.push([code]))
        elif isinstance(event, AudioBlockEvent):
            blocks += 1
        elif isinstance(event, DoneEvent):
            done = event
    emit(stream.flush())
    assert done is not None
    seconds = time.perf_counter() - start
    audio_seconds = samples / sample_rate
    return TtsResult(
        text=speech.chat.decode_text(text_ids), num_codes=len(codes), audio_blocks=blocks, samples=samples,
        sample_rate=sample_rate, audio_seconds=audio_seconds,
        first_audio_ms=None if first_audio is None else 1000 * first_audio, seconds=seconds,
        real_time_factor=seconds / audio_seconds if audio_seconds else None, tokens=len(done.tokens),
        tokens_per_s=len(done.tokens) / done.seconds if done.seconds else 0.0,
        backbone_forwards=done.backbone_forwards, mtp_forwards=done.mtp_forwards, mode=speech.mode.name,
        stop_reason=done.stop_reason, codes=codes,
    )


def read_lines(path: str | Path) -> list[str]:
    """Non-empty lines of a batch file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"batch file {path} does not exist")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise InputError(f"batch file {path} has no text lines")
    return lines
