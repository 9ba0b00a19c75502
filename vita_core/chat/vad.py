"""Cutting the microphone stream into utterances: silero-vad, or push-to-talk as the fallback.

Both segmenters take 512-sample frames at 16 kHz and return, per frame, nothing, a
`SpeechStart` (someone started talking: the chat loop uses it for barge-in) or a finished
`Utterance` (stamped with the moment its end was detected).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from vita_core.errors import InputError

RATE = 16000


@dataclass
class SpeechStart:
    time: float


@dataclass
class Utterance:
    audio: np.ndarray  # float32 mono 16 kHz
    end_time: float  # perf_counter when the end of speech was detected

    @property
    def seconds(self) -> float:
        return self.audio.size / RATE


Segment = SpeechStart | Utterance | None


def check_vad(threshold: float, min_silence_ms: int) -> None:
    """The VAD flags, checked before anything slow loads."""
    if not 0 < threshold < 1:
        raise InputError(f"--vad-threshold {threshold} must be between 0 and 1")
    if min_silence_ms < 1:
        raise InputError(f"--min-silence-ms {min_silence_ms} must be at least 1")


class SileroSegmenter:
    """silero-vad (weights ship inside the pip package) through its streaming VADIterator."""

    def __init__(self, threshold: float = 0.5, min_silence_ms: int = 600, speech_pad_ms: int = 100,
                 min_speech_ms: int = 250) -> None:
        check_vad(threshold, min_silence_ms)
        from silero_vad import VADIterator, load_silero_vad

        self._vad = VADIterator(load_silero_vad(), threshold=threshold, sampling_rate=RATE,
                                min_silence_duration_ms=min_silence_ms, speech_pad_ms=speech_pad_ms)
        self._min_speech = min_speech_ms * RATE // 1000
        self._recent: collections.deque[np.ndarray] = collections.deque(maxlen=32)  # ~1 s before a start
        self._frames: list[np.ndarray] = []
        self._seen = 0  # samples fed so far
        self._start: int | None = None  # absolute sample where the current speech starts
        self._origin = 0  # absolute sample of the first frame held in _frames

    def feed(self, frame: np.ndarray) -> Segment:
        import torch

        self._seen += frame.size
        event = self._vad(torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)))
        if self._start is None:
            self._recent.append(frame)
            if event and "start" in event:
                held = list(self._recent)
                self._frames = held
                self._origin = self._seen - sum(f.size for f in held)
                self._start = max(int(event["start"]), self._origin)
                return SpeechStart(time.perf_counter())
            return None
        self._frames.append(frame)
        if event and "end" in event:
            audio = np.concatenate(self._frames)
            cut = audio[self._start - self._origin : max(int(event["end"]), self._start) - self._origin]
            self._start, self._frames = None, []
            self._recent.clear()
            if cut.size < self._min_speech:
                return None
            return Utterance(cut.astype(np.float32), time.perf_counter())
        return None

    def reset(self) -> None:
        self._vad.reset_states()
        self._recent.clear()
        self._frames, self._start, self._seen = [], None, 0


class PushToTalkSegmenter:
    """Speech is whatever arrives while `pressed()` is true (e.g. toggled by the Enter key)."""

    def __init__(self, pressed: Callable[[], bool]) -> None:
        self._pressed = pressed
        self._frames: list[np.ndarray] = []
        self._active = False

    def feed(self, frame: np.ndarray) -> Segment:
        if self._pressed():
            self._frames.append(frame)
            if not self._active:
                self._active = True
                return SpeechStart(time.perf_counter())
            return None
        if self._active:
            self._active = False
            audio, self._frames = np.concatenate(self._frames), []
            return Utterance(audio.astype(np.float32), time.perf_counter())
        return None

    def reset(self) -> None:
        self._frames, self._active = [], False
