"""Speed of the inference modes, measured the way the paper means it, with warm-up and repeats.

A random-init model of a size preset, a fixed random prompt, exactly N new tokens (stop tokens
ignored), the same strict content layout for every mode (so every mode generates the same mix
of text and audio positions), then the median and spread over repeats. Speedups are ratios of
medians from one run on one machine; they are never asserted in tests.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from vita_core.errors import InputError
from vita_core.generate import AudioBlockEvent, DoneEvent, Engine, ForwardEvent
from vita_core.model.checkpoint import preset_config, random_model
from vita_core.schedule import BACKBONE, BOOST_RATIO, Layout, get_mode
from vita_core.tokens import NUM_AUDIO_CODES, TokenLayout

# The released Boost/Balance id layout, so no tokenizer is needed to benchmark a preset.
RELEASED_LAYOUT = TokenLayout.from_dict(dict(endoftext=151643, im_start=151644, im_end=151645, begin_of_audio=151674,
                                              end_of_audio=151675, audio_placeholder=151684, audio_offset=151685,
                                              vocab_size=151685 + NUM_AUDIO_CODES))

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModeResult:
    mode: str
    tokens_per_s: float  # median over repeats
    tokens_per_s_min: float
    tokens_per_s_max: float
    backbone_forwards: int
    mtp_forwards: int
    first_audio_block_ms: float  # median time from the request to the first closed audio block
    backbone_forward_ms: float  # median wall time of a one-position backbone pass
    backbone_catchup_ms: float  # median wall time of a multi-position pass over MCTP tokens (0 if none)
    mtp_forward_ms: float  # median wall time of one MCTP step (0 if none)
    speedup: float = 1.0  # median tokens/s over vanilla's


@dataclass
class BenchResult:
    preset: str
    device: str
    dtype: str
    new_tokens: int
    prompt_tokens: int
    repeats: int
    layout: list[int]
    parameters: int
    modes: list[ModeResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(device: str) -> str:
    """'auto' -> cuda when available, else cpu; checks that a named CUDA device exists."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"--device {device!r}: use auto, cpu, cuda or cuda:N")
    return device


def _one_run(engine: Engine, prompt: list[int], mode: str, layout: Layout, new_tokens: int) -> dict:
    first_block, prefill, per = None, True, {"b": [], "c": [], "m": []}
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for event in engine.generate(prompt, mode=mode, layout=layout, max_new_tokens=new_tokens, stop_ids=()):
        if isinstance(event, ForwardEvent):
            if prefill:
                prefill = False  # the first pass is the prefill, not a decoding step
                continue
            key = "m" if event.producer != BACKBONE else "b" if event.positions == 1 else "c"
            per[key].append(event.seconds)
        elif isinstance(event, AudioBlockEvent) and first_block is None and event.closed:
            first_block = event.seconds
        elif isinstance(event, DoneEvent):
            done = event
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "tokens": len(done.tokens), "done": done, "first_block": first_block, "per": per}


def bench_modes(
    preset: str = "0.5b",
    modes: Sequence[str] = ("vanilla", "balance", "boost", "turbo"),
    new_tokens: int = 512,
    repeats: int = 3,
    warmup: int = 1,
    prompt_tokens: int = 32,
    device: str = "auto",
    dtype: str = "float32",
    layout: Sequence[int] = BOOST_RATIO,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    tokens: TokenLayout | None = None,
    on_mode: Callable[[BenchResult], None] | None = None,
) -> BenchResult:
    """Measure every mode on one random-init model; vanilla is always measured (first) for the ratios.

    `tokens` (a tokenizer's layout, e.g. vita-mini's) sizes the vocabulary and the audio codes the
    engine writes; without it the released layout (168072 ids, 16384 codes) is used.
    `on_mode(result)` is called as each mode finishes, with the modes measured so far (speedups
    included), so a caller can show results as they come and keep them if the run is stopped.
    """
    if new_tokens < 16:
        raise InputError(f"--new-tokens {new_tokens} is too small to measure; use at least 16")
    if repeats < 1 or warmup < 0 or prompt_tokens < 1:
        raise InputError("--repeats must be >= 1, --warmup >= 0 and --prompt-tokens >= 1")
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    names = list(dict.fromkeys(["vanilla", *modes]))
    for name in names:
        get_mode(name)  # validate before the slow part
    device = resolve_device(device)
    say = progress or (lambda _msg: None)
    say(f"building a random {preset} model on {device} ({dtype})")
    model = random_model(preset_config(preset, tokens=tokens), seed=seed, dtype=DTYPES[dtype], device=device)
    tokens = tokens or RELEASED_LAYOUT
    engine = Engine(model, tokens)
    content = Layout(layout, strict=True)
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, tokens.endoftext, (prompt_tokens,), generator=g).tolist()  # text ids precede specials
    result = BenchResult(preset, device, dtype, new_tokens, prompt_tokens, repeats, list(layout),
                         sum(p.numel() for p in model.parameters()))
    for name in names:
        for i in range(warmup):
            say(f"{name}: warm-up {i + 1}/{warmup}")
            _one_run(engine, prompt, name, content, min(new_tokens, 64))
        runs = []
        for i in range(repeats):
            say(f"{name}: run {i + 1}/{repeats}")
            runs.append(_one_run(engine, prompt, name, content, new_tokens))
        rates = [r["tokens"] / r["seconds"] for r in runs]
        blocks = [r["first_block"] for r in runs if r["first_block"] is not None]
        per_b, per_c, per_m = ([s for r in runs for s in r["per"][key]] for key in "bcm")
        done = runs[0]["done"]
        result.modes.append(ModeResult(
            mode=name, tokens_per_s=statistics.median(rates), tokens_per_s_min=min(rates),
            tokens_per_s_max=max(rates), backbone_forwards=done.backbone_forwards, mtp_forwards=done.mtp_forwards,
            first_audio_block_ms=1000 * statistics.median(blocks) if blocks else float("nan"),
            backbone_forward_ms=1000 * statistics.median(per_b) if per_b else 0.0,
            backbone_catchup_ms=1000 * statistics.median(per_c) if per_c else 0.0,
            mtp_forward_ms=1000 * statistics.median(per_m) if per_m else 0.0,
        ))
        result.modes[-1].speedup = result.modes[-1].tokens_per_s / result.modes[0].tokens_per_s
        if on_mode is not None:
            on_mode(result)
    return result
