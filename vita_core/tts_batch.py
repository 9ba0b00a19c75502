"""Several texts spoken in one batched generation (`Engine.generate_batch`): what `vita eval --model` uses.

Each text is its own request (its prompt, voice prompt and Sampling), so with greedy fp32 each one's
codes equal those of `tts.synthesize` alone; the batch only shares each round's forward pass among
the requests whose next position has the same producer. Each request's codes go into a decoder
stream of its own as they are generated, as in `synthesize`. A text longer than one chunk
(`chunk_text`) is spoken through `synthesize`, one request per chunk, after the batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from vita_core.errors import InputError
from vita_core.speech import SpeechModel
from vita_core.tokens import AudioCodes, AudioContext
from vita_core.tts import CHUNK_TOKENS, TtsResult, Utterance, chunk_text, synthesize, tts_prompt

if TYPE_CHECKING:
    from vita_core.generate import Sampling


@dataclass(frozen=True)
class TtsJob:
    """One text of a batch, with its own voice prompt and sampling (None: the checkpoint's)."""

    text: str
    voice: AudioCodes | AudioContext | None = None
    sampling: Sampling | None = None


@dataclass
class Spoken:
    """One job's whole PCM (float32 at result.sample_rate) and its record."""

    pcm: np.ndarray
    result: TtsResult


def synthesize_batch(speech: SpeechModel, jobs: Sequence[TtsJob], max_new_tokens: int = 1024,
                     chunk_tokens: int = CHUNK_TOKENS) -> list[Spoken]:
    """Speak every job, one-chunk texts together in one `generate_batch`; results in the jobs' order.

    Every job is checked before anything is generated. Times in each result run from the batch's start.
    """
    if speech.decoder is None:
        raise InputError("speech output needs the speech decoder: pass --decoder-dir or set VITA_AUDIO_DECODER")
    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens {max_new_tokens} must be at least 1")

    def count(piece: str) -> int:
        return len(speech.tokenizer.encode(piece, add_special_tokens=False))

    for job in jobs:
        if not job.text.strip():
            raise InputError("the text to synthesize is empty")
    single = [n for n, job in enumerate(jobs) if len(chunk_text(job.text, chunk_tokens, count)) == 1]
    out: dict[int, Spoken] = dict(zip(single, _one_batch(speech, [jobs[n] for n in single], max_new_tokens)))
    for n, job in enumerate(jobs):
        if n not in out:
            pcm: list[np.ndarray] = []
            result = synthesize(speech, job.text, pcm.append, voice=job.voice, sampling=job.sampling,
                                max_new_tokens=max_new_tokens, chunk_tokens=chunk_tokens)
            out[n] = Spoken(_joined(pcm), result)
    return [out[n] for n in range(len(jobs))]


def _one_batch(speech: SpeechModel, jobs: Sequence[TtsJob], max_new_tokens: int) -> list[Spoken]:
    """One request per job in one `generate_batch`; each job's decoder stream flushed at its DoneEvent."""
    from vita_core.generate import DoneEvent, Request

    if not jobs:
        return []
    requests, pcms, utterances = [], [], []
    start = time.perf_counter()
    for job in jobs:
        prompt = tts_prompt(speech, job.text, job.voice)
        embeds = speech.prompt_embeds(prompt, [job.voice] if job.voice else [])
        requests.append(Request(prompt, speech.mode, speech.answer_layout(), job.sampling or speech.sampling,
                                max_new_tokens, prompt_embeds=embeds))
        pcm: list[np.ndarray] = []
        pcms.append(pcm)
        utterances.append(Utterance(speech, pcm.append, start, max_new_tokens))
    results: dict[int, TtsResult] = {}
    for n, event in speech.engine.generate_batch(requests):
        utterances[n].feed(event)
        if isinstance(event, DoneEvent):
            results[n] = utterances[n].finish()
    return [Spoken(_joined(pcms[n]), results[n]) for n in range(len(jobs))]


def _joined(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
