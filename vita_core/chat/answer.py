"""One answer generated step by step: text as it is written, speech as the codec decodes it, stage times.

`vita chat` plays the steps on the speaker and `vita serve` sends them to a client; both stop an
answer by simply leaving the loop (barge-in, a cancelled request, a client gone), and both read
the same stage times: milliseconds after `since` (the end of the user's speech) at which the
first text token and the first audio code were generated. The caller stamps the other two stages
(audio encoded, first sound out), since only it knows when they happen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from vita_core.speech import SpeechModel

if TYPE_CHECKING:
    from vita_core.generate import Sampling

STAGES = ("audio_encoded", "first_text_token", "first_audio_codes", "first_sound_out")


@dataclass
class AnswerStep:
    """What one generated token added: new text (may be "") and new PCM at the decoder's rate (may be empty)."""

    text: str
    pcm: np.ndarray
    final: bool = False  # the decoder's flush after the last token


@dataclass
class SpokenAnswer:
    """Iterate to generate the answer to `prompt`; the fields hold what was generated so far.

    `spoken=False` generates text only (no audio layout, no decoder).
    """

    speech: SpeechModel
    prompt: list[int]
    embeds: Any = None
    sampling: Sampling | None = None
    max_new_tokens: int = 512
    since: float = field(default_factory=time.perf_counter)
    spoken: bool = True
    stages_ms: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(STAGES))
    ids: list[int] = field(default_factory=list)  # every generated token, for `Conversation.commit`
    text_ids: list[int] = field(default_factory=list)
    codes: int = 0
    stop_reason: str = ""
    seconds: float = 0.0  # generating until the last step handed out (the caller's time between steps included)
    _sent: str = ""

    @property
    def text(self) -> str:
        """The text generated so far (audio codes and special tokens dropped)."""
        return self.speech.chat.decode_text(self.text_ids)

    def _stamp(self, stage: str) -> None:
        if self.stages_ms[stage] is None:
            self.stages_ms[stage] = 1000 * (time.perf_counter() - self.since)

    def _new_text(self) -> str:
        """Text since the last step; a token that ends inside a multi-byte character waits for the next one."""
        full = self.text
        if full.endswith("\ufffd") or not full.startswith(self._sent):
            return ""
        delta, self._sent = full[len(self._sent):], full
        return delta

    def __iter__(self) -> Iterator[AnswerStep]:
        from vita_core.generate import DoneEvent, TokenEvent

        speech, empty = self.speech, np.zeros(0, np.float32)
        stream = speech.decoder.stream() if self.spoken else None
        layout = speech.answer_layout() if self.spoken else speech.text_layout()
        start = time.perf_counter()
        for event in speech.engine.generate(self.prompt, mode=speech.mode if self.spoken else "vanilla",
                                            layout=layout, sampling=self.sampling or speech.sampling,
                                            max_new_tokens=self.max_new_tokens, prompt_embeds=self.embeds):
            if isinstance(event, TokenEvent):
                self.ids.append(event.token)
                pcm = empty
                if event.kind == "text":
                    self.text_ids.append(event.token)
                    self._stamp("first_text_token")
                elif event.kind == "audio" and stream is not None:
                    self._stamp("first_audio_codes")
                    self.codes += 1
                    pcm = stream.push([speech.tokens.id_to_code(event.token)])
                self.seconds = time.perf_counter() - start
                yield AnswerStep(self._new_text() if event.kind == "text" else "", pcm)
            elif isinstance(event, DoneEvent):
                self.stop_reason = event.stop_reason
        tail = self.text[len(self._sent):] if self.text.startswith(self._sent) else ""
        self._sent += tail
        pcm = stream.flush() if stream is not None else empty
        self.seconds = time.perf_counter() - start
        yield AnswerStep(tail, pcm, final=True)
