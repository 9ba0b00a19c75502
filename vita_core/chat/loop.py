"""The spoken conversation loop: listen, encode, answer with interleaved text and speech, play.

Each user utterance becomes a user turn holding its speech codes (the reference's "<|audio|>"
input), or for a Plus checkpoint its SenseVoice feature slots; the answer is generated with the
checkpoint's interleaved layout and every audio code goes straight into the streaming decoder
and on to the speaker. The conversation history is
kept as the exact token ids generated, so the next turn sees what the model said, not a
re-tokenisation of it. Speaking while an answer is generated or played cuts it (barge-in).

Stage times per turn are milliseconds after the end of the user's speech was detected:
audio encoded -> first text token -> first audio codes to the decoder -> first sound out.

A session never overwrites an earlier one: its turns are numbered after those already in the
`--log` file and the `--save-audio` folder, log rows are appended, and each row says its session.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vita_core.chat.answer import STAGES, SpokenAnswer
from vita_core.chat.devices import INPUT_RATE
from vita_core.chat.vad import SpeechStart, Utterance
from vita_core.errors import InputError
from vita_core.files import append_line
from vita_core.speech import SpeechModel
from vita_core.tokens import AudioCodes, AudioContext, Message

DEFAULT_SYSTEM_PROMPT = "Your Name: Omni\nYour Gender: female\nRespond in a text-audio interleaved manner."


@dataclass
class Turn:
    index: int  # numbered across sessions that share a log or audio folder
    user_seconds: float
    user_codes: int
    answer_text: str = ""
    answer_codes: int = 0
    answer_seconds: float = 0.0
    interrupted: bool = False
    stop_reason: str = ""
    stages_ms: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(STAGES))
    playback_lag_ms: float = 0.0
    generate_seconds: float = 0.0
    files: dict[str, str] = field(default_factory=dict)
    session: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Conversation:
    """Token history of one conversation, starting with an optional system turn.

    The user turns' audio parts are kept too: a Plus checkpoint's feature slots are filled in
    again, in order, every time the history is read.
    """

    def __init__(self, speech: SpeechModel, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> None:
        self.speech = speech
        self.ids: list[int] = []
        self.audio: list[AudioCodes | AudioContext] = []
        if system_prompt:
            self.ids = speech.chat.message_ids(Message("system", system_prompt))

    def prompt(self, audio: AudioCodes | AudioContext) -> list[int]:
        """History + a user turn holding this audio part + the assistant header."""
        chat = self.speech.chat
        return self.ids + chat.message_ids(Message("user", [audio])) + chat.header_ids("assistant")

    def embeds(self, prompt: list[int], audio: AudioCodes | AudioContext) -> Any:
        """The prompt's backbone input embeddings (None unless the checkpoint hears features)."""
        return self.speech.prompt_embeds(prompt, [*self.audio, audio])

    def commit(self, prompt: list[int], audio: AudioCodes | AudioContext, answer: list[int]) -> None:
        """Keep the turn: the answer as generated, closed with <|im_end|>\\n however it ended."""
        lay = self.speech.tokens
        body = [t for t in answer if t not in lay.stop_ids]
        self.ids = prompt + body + [lay.im_end, *self.speech.chat.text_ids("\n")]
        self.audio.append(audio)


def _save_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    from vita_core.audio import SoundWriter
    from vita_core.sinks import pcm16

    writer = SoundWriter(path, rate)
    writer.write(pcm16(audio))
    writer.close()


def previous_turns(log_path: Path | None, save_audio: Path | None) -> tuple[int, int]:
    """(the last turn number, the last session number) already recorded in the log and audio folder."""
    last = session = 0
    if log_path is not None and log_path.is_file():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a row cut by a kill: skipped, never rewritten
                continue
            last, session = max(last, int(row.get("index", 0))), max(session, int(row.get("session", 1)))
    if save_audio is not None and save_audio.is_dir():
        for path in save_audio.iterdir():
            match = re.fullmatch(r"turn(\d+)_(user|answer)\.wav", path.name)
            if match:
                last, session = max(last, int(match.group(1))), max(session, 1)
    return last, session


class ChatSession:
    """Runs turns between an input (microphone or file), a segmenter and an output (speaker or file)."""

    def __init__(self, speech: SpeechModel, source: Any, sink: Any, segmenter: Any,
                 system_prompt: str | None = DEFAULT_SYSTEM_PROMPT, sampling: Any = None,
                 max_new_tokens: int = 512, log_path: Path | None = None, save_audio: Path | None = None,
                 on_event: Callable[[str, Any], None] | None = None) -> None:
        if not speech.hears or speech.decoder is None:
            raise InputError("chat needs the speech tokenizer and decoder: pass --tokenizer-dir and --decoder-dir")
        if save_audio is not None:
            save_audio.mkdir(parents=True, exist_ok=True)
        if log_path is not None and not log_path.parent.is_dir():
            raise InputError(f"--log {log_path}: folder {log_path.parent} does not exist")
        self.speech, self.source, self.sink, self.segmenter = speech, source, sink, segmenter
        self.conversation = Conversation(speech, system_prompt)
        self.sampling = sampling or speech.sampling
        self.max_new_tokens = max_new_tokens
        self.log_path, self.save_audio = log_path, save_audio
        self.say = on_event or (lambda _kind, _data: None)
        self.turns: list[Turn] = []
        self._pending: Utterance | None = None
        self.first_index, last_session = previous_turns(log_path, save_audio)
        self.session = last_session + 1

    def run(self, max_turns: int | None = None) -> list[Turn]:
        """Listen and answer until the input ends (or max_turns answers were given)."""
        self.say("listening", None)
        while max_turns is None or len(self.turns) < max_turns:
            utterance = self._pending or self._listen()
            self._pending = None
            if utterance is None:
                break
            self._answer(utterance)
        return self.turns

    def _listen(self) -> Utterance | None:
        while True:
            frame = self.source.read(timeout=0.1)
            if frame is None:
                if getattr(self.source, "ended", False):
                    return None
                continue
            event = self.segmenter.feed(frame)
            if isinstance(event, SpeechStart):
                self.say("speech", None)
            elif isinstance(event, Utterance):
                return event

    def _barge_in(self, max_frames: int = 16) -> bool:
        """Feed what the microphone heard meanwhile (a bounded batch); True if the user started speaking."""
        interrupted = False
        for _ in range(max_frames):
            frame = self.source.poll()
            if frame is None:
                break
            event = self.segmenter.feed(frame)
            if isinstance(event, SpeechStart):
                interrupted = True
            elif isinstance(event, Utterance):
                self._pending, interrupted = event, True
        return interrupted

    def _answer(self, utterance: Utterance) -> None:
        speech, sink, eos = self.speech, self.sink, utterance.end_time
        turn = Turn(index=self.first_index + len(self.turns) + 1, user_seconds=utterance.seconds, user_codes=0,
                    session=self.session)
        audio = speech.audio_part(utterance.audio, INPUT_RATE, f"utterance {turn.index}")
        turn.user_codes = audio.length
        turn.stages_ms["audio_encoded"] = 1000 * (time.perf_counter() - eos)
        self.say("thinking", turn)
        prompt = self.conversation.prompt(audio)
        answer = SpokenAnswer(speech, prompt, self.conversation.embeds(prompt, audio), self.sampling,
                              self.max_new_tokens, since=eos, stages_ms=turn.stages_ms)
        sink.begin()
        for step in answer:
            sink.write(step.pcm)
            if not step.final and self._barge_in():
                turn.interrupted, turn.stop_reason = True, "barge-in"
                break
        if not turn.interrupted:
            turn.stop_reason = answer.stop_reason
        turn.answer_codes = answer.codes
        turn.generate_seconds = answer.seconds
        sink.end()
        while not turn.interrupted and getattr(sink, "playing", False):
            if self._barge_in():
                turn.interrupted, turn.stop_reason = True, "barge-in"
            time.sleep(0.01)
        if turn.interrupted:
            sink.stop()
        sink.idle()
        if sink.first_sound is not None:
            turn.stages_ms["first_sound_out"] = 1000 * (sink.first_sound - eos)
        turn.playback_lag_ms = 1000 * sink.underrun_seconds
        turn.answer_text = answer.text.strip()
        played = sink.take()
        turn.answer_seconds = played.size / sink.sample_rate
        self.conversation.commit(prompt, audio, answer.ids)
        self._finish(turn, utterance, played)

    def _finish(self, turn: Turn, utterance: Utterance, played: np.ndarray) -> None:
        if self.save_audio is not None:
            user = self.save_audio / f"turn{turn.index:03d}_user.wav"
            reply = self.save_audio / f"turn{turn.index:03d}_answer.wav"
            _save_wav(user, utterance.audio, INPUT_RATE)
            _save_wav(reply, played, self.sink.sample_rate)
            turn.files = {"user": str(user), "answer": str(reply)}
        if self.log_path is not None:
            append_line(self.log_path, json.dumps(turn.to_dict(), ensure_ascii=False))
        self.turns.append(turn)
        self.say("turn", turn)
