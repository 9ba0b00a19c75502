"""Speech requests that wait for the model together are generated together: one forward pass per step.

Each /v1/audio/speech request becomes a `SpeechTask` queued here and a job on the model thread. The
first of those jobs to reach the thread takes every task still waiting (up to `max_batch`) and runs
them through `Engine.generate_batch`, each with its own prompt, mode, sampling, budget, decoder
stream and sink, so each answer holds the codes it would have alone (greedy, fp32) and streams as it
is decoded; the other tasks' jobs then find their work done. A task whose client left (or that ran
past --request-timeout) stops receiving audio at once and the batch goes on for the others; the
batch ends early when none is left. Text long enough to be spoken in several chunks is not batched:
its job speaks it alone, chunk after chunk, through `synthesize`, as `vita tts` does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vita_core.sinks import StreamSink, flac_bytes
from vita_core.speech import SpeechModel
from vita_server.jobs import Cancelled, Job, Runtime, TimedOut

if TYPE_CHECKING:
    from vita_core.generate import Sampling


class _JobStream:
    """A binary stream for `StreamSink` whose writes go to the job (so each write also checks it should go on)."""

    def __init__(self, job: Job) -> None:
        self._job = job

    def write(self, data: bytes) -> int:
        self._job.put(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Every write is handed over at once; nothing is buffered."""


@dataclass
class SpeechTask:
    """One speech request: what to say, how, and where its audio goes."""

    speech: SpeechModel  # with the request's mode
    text: str
    sampling: Sampling
    max_new_tokens: int
    fmt: str  # wav | pcm | flac
    job: Job | None = None
    chunk: str | None = ""  # the one chunk `synthesize` would speak ("" until known, None for several)
    done: bool = False  # generated (in some job's batch) or given up
    error: BaseException | None = None  # raised by its own job once the batch is over
    _chunks: list[np.ndarray] = field(default_factory=list)
    _sink: StreamSink | None = None

    def begin(self) -> None:
        if self.fmt != "flac":
            self._sink = StreamSink(_JobStream(self.job), int(self.speech.decoder.sample_rate), self.fmt)

    def audio(self, pcm: np.ndarray) -> None:
        if not pcm.size:
            return
        if self._sink is None:  # FLAC needs its sizes up front: sent whole once generated
            self._chunks.append(pcm)
        else:
            self._sink.write(pcm)

    def end(self) -> None:
        if self._sink is None:
            wav = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
            self.job.put(flac_bytes(wav, int(self.speech.decoder.sample_rate)))
        else:
            self._sink.close()


class SpeechBatcher:
    """The speech tasks waiting for the model thread, and the batch that runs them."""

    def __init__(self, max_batch: int = 8) -> None:
        self.max_batch = max_batch
        self._waiting: list[SpeechTask] = []
        self._lock = threading.Lock()

    def start(self, rt: Runtime, task: SpeechTask) -> Job:
        """Queue `task` (503 when the queue is full); its job runs it, in a batch when others wait too."""

        def enqueue(job: Job) -> None:
            task.job = job
            with self._lock:
                self._waiting.append(task)

        def run(_job: Job) -> None:
            if not task.done:
                batch = self._take(task)
                if len(batch) > 1:
                    self._run_batch(batch)
                else:
                    self._alone(task)
            if task.error is not None:
                raise task.error

        return rt.start(run, before=enqueue)

    def _take(self, first: SpeechTask) -> list[SpeechTask]:
        """`first`, and when it is one chunk the other one-chunk tasks waiting, oldest first, up to max_batch."""
        with self._lock:
            batch = [first]
            if _one_chunk(first) is not None:
                batch += [t for t in self._waiting if t is not first and _one_chunk(t) is not None]
            batch = batch[: self.max_batch]
            self._waiting = [t for t in self._waiting if t not in batch]
        return batch

    @staticmethod
    def _alone(task: SpeechTask) -> None:
        """One request, any length: `synthesize`, as `vita tts` speaks it."""
        from vita_core.tts import synthesize

        task.begin()
        synthesize(task.speech, task.text, task.audio, sampling=task.sampling, max_new_tokens=task.max_new_tokens,
                   on_progress=lambda _p: task.job.check())
        task.end()
        task.done = True

    @staticmethod
    def _run_batch(batch: list[SpeechTask]) -> None:
        """One-chunk tasks through one `generate_batch`; each task's failure stays its own."""
        from vita_core.generate import DoneEvent, Request, TokenEvent
        from vita_core.tts import tts_prompt

        live, streams, requests = [], [], []
        for task in batch:
            try:
                task.job.check()
                prompt = tts_prompt(task.speech, _one_chunk(task))
                task.begin()
            except Exception as exc:  # Cancelled and TimedOut included: its own job reports it
                task.done, task.error = True, None if isinstance(exc, Cancelled) else exc
                continue
            live.append(task)
            streams.append(task.speech.decoder.stream())
            requests.append(Request(prompt, task.speech.mode, task.speech.answer_layout(), task.sampling,
                                    task.max_new_tokens))
        if not live:
            return
        try:
            for i, event in live[0].speech.engine.generate_batch(requests):
                task = live[i]
                if task.done:
                    if all(t.done for t in live):
                        break
                    continue
                try:
                    if isinstance(event, TokenEvent):
                        task.job.check()
                        if event.kind == "audio":
                            task.audio(streams[i].push([task.speech.tokens.id_to_code(event.token)]))
                    elif isinstance(event, DoneEvent):
                        task.audio(streams[i].flush())
                        task.end()
                        task.done = True
                except (Cancelled, TimedOut) as exc:
                    task.done, task.error = True, None if isinstance(exc, Cancelled) else exc
        except Exception as exc:  # the batch itself failed: every task still in it reports it
            for task in live:
                if not task.done:
                    task.done, task.error = True, exc


def _one_chunk(task: SpeechTask) -> str | None:
    """The text as `synthesize` would speak it when it is one chunk, else None (several chunks)."""
    from vita_core.tts import CHUNK_TOKENS, chunk_text

    if task.chunk == "":
        count = lambda piece: len(task.speech.tokenizer.encode(piece, add_special_tokens=False))  # noqa: E731
        chunks = chunk_text(task.text, CHUNK_TOKENS, count)
        task.chunk = chunks[0] if len(chunks) == 1 else None
    return task.chunk
