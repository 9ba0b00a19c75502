"""Speed of the speech decoder: first-chunk latency, real-time factor, and chunk cost over time.

Random codes go through our streaming decoder one code at a time, as the LLM produces them,
and each push that returns PCM is timed. The same codes are also decoded the way the
reference's streaming demo does it, re-decoding the whole history at every chunk, at the first
and the last chunk only (its cost grows with the history, which is what the comparison shows).
Figures are ratios within one run; they are never asserted in tests.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vita_core.bench import DTYPES, resolve_device
from vita_core.errors import InputError


@dataclass
class DecoderBenchResult:
    decoder: str
    device: str
    dtype: str
    parameters: int
    steps: int
    first_chunk_steps: int
    first_chunk_codes: int
    chunk_codes: int
    context_codes: int
    first_chunk_ms: float  # the push that first returns PCM: flow + vocoder of the first chunk
    first_chunk_audio_ms: float  # audio length of that first PCM
    chunk_ms: list[float] = field(default_factory=list)  # later chunks, in order (chunk 1 = first full chunk)
    last_over_first: float = 0.0  # chunk_ms[-1] / chunk_ms[0]
    reference_first_ms: float = 0.0  # whole-history re-decode at chunk 1
    reference_last_ms: float = 0.0  # ... and at the last chunk
    reference_last_over_first: float = 0.0
    stream_rtf: float = 0.0  # streaming wall time / audio seconds
    one_shot_rtf: float = 0.0  # decode() of all codes at once
    audio_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], device: str) -> tuple[object, float]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, (time.perf_counter() - start) * 1000


def bench_decoder(
    decoder_dir: str | None = None,
    real_dims: bool = True,
    chunks: int = 20,
    device: str = "auto",
    dtype: str = "float32",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> DecoderBenchResult:
    """Stream `chunks` full chunks of random codes through the decoder and time every chunk.

    Without `decoder_dir`, a random-init folder is built first (released sizes when `real_dims`).
    """
    from vita_core.codec.glm4voice.decoder import load_glm4voice_decoder
    from vita_core.tiny.glm4voice_decoder import build_tiny_glm4voice_decoder

    if chunks < 2:
        raise InputError(f"--decoder-chunks {chunks}: need at least 2 chunks to compare the first and the last")
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    device = resolve_device(device)
    say = progress or (lambda msg: None)
    with tempfile.TemporaryDirectory(prefix="vita-decoder-bench-") as tmp:
        name = decoder_dir or ("random, released sizes" if real_dims else "random, tiny")
        if decoder_dir is None:
            say(f"building a random decoder folder ({name})")
            decoder_dir = str(build_tiny_glm4voice_decoder(Path(tmp) / "decoder", seed=seed, real_dims=real_dims))
        say(f"loading {decoder_dir} on {device}")
        dec = load_glm4voice_decoder(decoder_dir, device=device, dtype=DTYPES[dtype])
    opts = dec.options
    rng = np.random.default_rng(seed)
    total = opts.first_chunk_codes + chunks * opts.chunk_codes
    codes = rng.integers(0, dec.flow.cfg.vocab_size, total).tolist()
    params = sum(p.numel() for p in dec.flow.parameters()) + sum(p.numel() for p in dec.hift.parameters())

    say("warm-up (twice, so the recurring chunk shapes are captured as CUDA graphs on a GPU)")
    for _ in range(2):
        warm = dec.stream()
        for c in codes[: opts.first_chunk_codes + 3 * opts.chunk_codes]:
            warm.push([c])
        warm.flush()

    say(f"streaming {total} codes ({chunks} full chunks after the first)")
    stream, timings, first = dec.stream(), [], None
    samples = 0
    for c in codes:
        pcm, ms = _timed(lambda: stream.push([c]), device)
        if len(pcm):
            samples += len(pcm)
            if first is None:
                first = (ms, 1000 * len(pcm) / dec.sample_rate)
            else:
                timings.append(ms)
    pcm, ms = _timed(stream.flush, device)
    samples += len(pcm)
    stream_ms = sum(timings) + first[0] + ms
    audio_s = samples / dec.sample_rate

    say("reference-style re-decode of the whole history at the first and last chunk")
    ref_first = _timed(lambda: dec.decode(codes[: opts.first_chunk_codes + opts.chunk_codes]), device)[1]
    ref_last = _timed(lambda: dec.decode(codes), device)[1]
    say("one-shot decode of all codes")
    one_shot_ms = _timed(lambda: dec.decode(codes), device)[1]
    return DecoderBenchResult(
        decoder=name, device=device, dtype=dtype, parameters=params, steps=opts.steps,
        first_chunk_steps=opts.first_chunk_steps, first_chunk_codes=opts.first_chunk_codes,
        chunk_codes=opts.chunk_codes, context_codes=opts.context_codes, first_chunk_ms=first[0],
        first_chunk_audio_ms=first[1], chunk_ms=timings, last_over_first=timings[-1] / timings[0],
        reference_first_ms=ref_first, reference_last_ms=ref_last, reference_last_over_first=ref_last / ref_first,
        stream_rtf=stream_ms / 1000 / audio_s, one_shot_rtf=one_shot_ms / 1000 / audio_s, audio_seconds=audio_s,
    )
