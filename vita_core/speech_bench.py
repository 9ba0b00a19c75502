"""Speed of a trained speech checkpoint (e.g. the bundled vita-mini) as a user meets it: text in, PCM out.

`vita bench --preset` times the backbone and MCTP modules on random weights with a fixed content
layout; this times `vita tts` itself on real sentences in each mode: the streaming real-time factor
(wall seconds per second of speech, codec decoding included), the time to the first decoded PCM
chunk with the model already loaded, and tokens per second. The modes of a trained model say
different things in different lengths, so the speedup over vanilla is the ratio of real-time factors
(seconds of speech made per wall second), measured in one run on the same sentences.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from vita_core.errors import InputError
from vita_core.roofline import free_cores, load_average
from vita_core.schedule import get_mode
from vita_core.speech import SpeechModel

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back when you get this message.",
    "It is going to rain tomorrow, so bring an umbrella.",
    "Reading a good book is the best way to spend an evening.",
)


@dataclass
class SpeechModeResult:
    """One mode over all sentences and repeats (medians of the per-sentence figures)."""

    mode: str
    real_time_factor: float  # total wall seconds / total seconds of speech
    first_audio_ms: float  # median, request -> first PCM chunk
    first_audio_ms_max: float
    tokens_per_s: float  # generated tokens / generation seconds
    audio_seconds: float  # speech made per pass over the sentences
    backbone_forwards: int  # per pass over the sentences
    mtp_forwards: int
    speedup: float = 1.0  # vanilla's real-time factor / this one


@dataclass
class SpeechBenchResult:
    model: str
    device: str
    dtype: str
    threads: int
    sentences: int
    repeats: int
    load_before: float
    load_after: float = 0.0
    modes: list[SpeechModeResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def bench_speech(speech: SpeechModel, modes: Sequence[str] = ("vanilla", "balance", "boost", "turbo"),
                 sentences: Sequence[str] = SENTENCES, repeats: int = 3, warmup: int = 1, threads: int | None = None,
                 dtype: str = "float32", max_new_tokens: int = 1024,
                 progress: Callable[[str], None] | None = None) -> SpeechBenchResult:
    """Synthesize `sentences` greedily in each mode (vanilla first, for the ratios), `repeats` times after
    `warmup` unmeasured passes; `threads=None` takes the cores no other process keeps busy."""
    from vita_core.generate import Sampling
    from vita_core.tts import synthesize

    if repeats < 1 or warmup < 0:
        raise InputError("--repeats must be >= 1 and --warmup >= 0")
    if threads is not None and threads < 1:
        raise InputError(f"--threads {threads} must be at least 1")
    if not sentences:
        raise InputError("give at least one sentence to synthesize")
    from vita_core.eval.model_runs import in_mode

    names = list(dict.fromkeys(["vanilla", *modes]))
    for name in names:
        get_mode(name)  # validate before the slow part
    say = progress or (lambda _msg: None)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or free_cores())
    result = SpeechBenchResult(str(speech.folder), speech.device, dtype, torch.get_num_threads(), len(sentences),
                               repeats, load_average())
    greedy = Sampling()
    try:
        for name in names:
            moded = in_mode(speech, name)
            for i in range(warmup):
                say(f"{name}: warm-up {i + 1}/{warmup}")
                synthesize(moded, sentences[0], lambda _pcm: None, sampling=greedy, max_new_tokens=max_new_tokens)
            runs = []
            for i in range(repeats):
                say(f"{name}: pass {i + 1}/{repeats} over {len(sentences)} sentences")
                runs += [synthesize(moded, s, lambda _pcm: None, sampling=greedy, max_new_tokens=max_new_tokens)
                         for s in sentences]
            seconds, audio = sum(r.seconds for r in runs), sum(r.audio_seconds for r in runs)
            if not audio:
                raise InputError(f"{speech.folder} made no speech in {name} mode; is it a speech model?")
            first = [r.first_audio_ms for r in runs if r.first_audio_ms is not None]
            generating = sum(r.tokens / r.tokens_per_s for r in runs if r.tokens_per_s)
            m = SpeechModeResult(
                mode=name, real_time_factor=seconds / audio, first_audio_ms=statistics.median(first),
                first_audio_ms_max=max(first), tokens_per_s=sum(r.tokens for r in runs) / generating,
                audio_seconds=audio / repeats, backbone_forwards=sum(r.backbone_forwards for r in runs) // repeats,
                mtp_forwards=sum(r.mtp_forwards for r in runs) // repeats)
            m.speedup = result.modes[0].real_time_factor / m.real_time_factor if result.modes else 1.0
            result.modes.append(m)
    finally:
        torch.set_num_threads(previous_threads)
    result.modes = [m for m in result.modes if m.mode in modes or m.mode == "vanilla"]
    result.load_after = load_average()
    return result
