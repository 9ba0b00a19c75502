"""Speed of the inference modes, measured the way the paper means it, with warm-up and repeats.

A random-init model of a size preset, a fixed random prompt, exactly N new tokens (stop tokens
ignored), the same strict content layout for every mode (so every mode generates the same mix
of text and audio positions), then the median and spread over repeats. Speedups are ratios of
medians from one run on one machine; they are never asserted in tests. Each mode is also set
against its limit (`roofline`: each forward's weight reads at the measured read bandwidth or
its matmul work at the measured matmul rate, whichever takes longer), and `against_hf` times Hugging Face's `generate` on the same backbone weights.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from vita_core.errors import InputError
from vita_core.generate import AudioBlockEvent, DoneEvent, Engine, ForwardEvent, Request
from vita_core.model.checkpoint import hf_config, preset_config, random_model
from vita_core.model.modeling import VitaAudioForCausalLM
from vita_core.roofline import (WeightBytes, free_cores, limit_tokens_per_s, load_average, matmul_flops,
                                read_bandwidth)
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
    limit_tokens_per_s: float = 0.0  # the forwards' weight reads and matmul work at the measured rates
    percent_of_limit: float = 0.0
    speedup: float = 1.0  # median tokens/s over vanilla's
    limit_speedup: float = 1.0  # this mode's limit over vanilla's
    batch_tokens_per_s: float = 0.0  # with --batch N: all N requests' tokens over the batch's wall time
    batch_request_tokens_per_s: float = 0.0  # the median request's own tokens/s inside the batch
    batch_first_audio_block_ms: list[float] = field(default_factory=list)  # per request


@dataclass
class HFResult:
    """Hugging Face `Qwen2ForCausalLM.generate`, greedy, on the same backbone weights and prompt."""

    tokens_per_s: float
    tokens_per_s_min: float
    tokens_per_s_max: float
    vanilla_over_hf: float  # vita vanilla tokens/s over these


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
    threads: int
    fast_path: bool  # the engine ran the CPU fast path (prepacked oneDNN layers)
    read_gb_per_s: float  # measured read bandwidth the limits use
    matmul_gflops: float  # measured matmul rate the limits use (a pass over many positions is compute-bound)
    load_before: float  # 1-minute load average before and after measuring (the machine is shared)
    engine_path: str  # which forward path ran, in words (`Engine.path`): static KV cache + CUDA graphs, ...
    load_after: float = 0.0
    batch: int = 1
    modes: list[ModeResult] = field(default_factory=list)
    hf_generate: HFResult | None = None

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
    first_block, prefill, per, forwards = None, True, {"b": [], "c": [], "m": []}, []
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for event in engine.generate(prompt, mode=mode, layout=layout, max_new_tokens=new_tokens, stop_ids=()):
        if isinstance(event, ForwardEvent):
            forwards.append((event.producer, event.positions, event.logit_rows))
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
    return {"seconds": elapsed, "tokens": len(done.tokens), "done": done, "first_block": first_block, "per": per,
            "forwards": forwards}


def hf_backbone(model: VitaAudioForCausalLM) -> torch.nn.Module:
    """The model's LLM as a Hugging Face `Qwen2ForCausalLM` sharing its weight tensors (no copy)."""
    from transformers import Qwen2ForCausalLM

    layers = model.num_backbone_layers
    cfg = hf_config({**model.upstream_config, "num_hidden_layers": layers, "num_nextn_predict_layers": 0},
                    model.config._attn_implementation)
    with torch.device("meta"):
        hf = Qwen2ForCausalLM(cfg)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("mtp_")
             and not (k.startswith("model.layers.") and int(k.split(".")[2]) >= layers)}
    hf.load_state_dict(state, strict=True, assign=True)
    hf.model.rotary_emb = model.model.rotary_emb  # its inverse frequencies are buffers outside the state dict
    return hf.eval()


def _hf_generate(model: VitaAudioForCausalLM, prompt: list[int], new_tokens: int, warmup: int, repeats: int,
                 say: Callable[[str], None]) -> list[float]:
    """tokens/s of Hugging Face's greedy `generate` (no stop token) on the model's backbone."""
    hf = hf_backbone(model)
    ids = torch.tensor([prompt], device=model.lm_head.weight.device)
    rates = []
    for i in range(warmup + repeats):
        say(f"hf generate: {'warm-up' if i < warmup else 'run'} {i + 1 if i < warmup else i - warmup + 1}")
        n = min(new_tokens, 64) if i < warmup else new_tokens
        start = time.perf_counter()
        with torch.inference_mode():
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                              eos_token_id=None, pad_token_id=0)
        if ids.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            rates.append((out.shape[1] - ids.shape[1]) / (time.perf_counter() - start))
    return rates


def _batch_run(engine: Engine, prompts: list[list[int]], mode: str, layout: Layout, new_tokens: int) -> dict:
    """One batch of requests in one mode: total tokens/s, each request's tokens/s and first closed block."""
    requests = [Request(p, mode, layout, max_new_tokens=new_tokens, stop_ids=()) for p in prompts]
    first: dict[int, float] = {}
    rates: list[float] = []
    start = time.perf_counter()
    for i, event in engine.generate_batch(requests):
        if isinstance(event, AudioBlockEvent) and event.closed and i not in first:
            first[i] = event.seconds
        elif isinstance(event, DoneEvent):
            rates.append(len(event.tokens) / event.seconds)
    elapsed = time.perf_counter() - start
    return {"total": len(prompts) * new_tokens / elapsed, "request": statistics.median(rates),
            "first": [1000 * first[i] for i in sorted(first)]}


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
    threads: int | None = None,
    against_hf: bool = False,
    batch: int = 1,
    static_cache: bool | None = None,
    progress: Callable[[str], None] | None = None,
    tokens: TokenLayout | None = None,
    on_mode: Callable[[BenchResult], None] | None = None,
) -> BenchResult:
    """Measure every mode on one random-init model; vanilla is always measured (first) for the ratios.

    `threads=None` takes the cores no other process is keeping busy (CPU only). `batch` > 1 also runs
    each mode as one batch of that many requests with different random prompts (`Engine.generate_batch`).
    `tokens` (a tokenizer's layout, e.g. vita-mini's) sizes the vocabulary and the audio codes the
    engine writes; without it the released layout (168072 ids, 16384 codes) is used.
    `static_cache` picks the engine's static-KV-cache path (None: on CUDA only; False turns it off there,
    to compare; True runs it eagerly on CPU). `on_mode(result)` is called as each mode finishes, with the modes measured so far (speedups
    included), so a caller can show results as they come and keep them if the run is stopped.
    """
    if new_tokens < 16:
        raise InputError(f"--new-tokens {new_tokens} is too small to measure; use at least 16")
    if repeats < 1 or warmup < 0 or prompt_tokens < 1:
        raise InputError("--repeats must be >= 1, --warmup >= 0 and --prompt-tokens >= 1")
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads {threads} must be at least 1")
    if batch < 1:
        raise InputError(f"--batch {batch} must be at least 1")
    names = list(dict.fromkeys(["vanilla", *modes]))
    for name in names:
        get_mode(name)  # validate before the slow part
    device = resolve_device(device)
    say = progress or (lambda _msg: None)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or free_cores())
    try:
        return _measure(preset, names, modes, new_tokens, repeats, warmup, prompt_tokens, device, dtype, layout,
                        seed, against_hf, batch, static_cache, say, tokens, on_mode)
    finally:
        torch.set_num_threads(previous_threads)


def _measure(preset: str, names: list[str], modes: Sequence[str], new_tokens: int, repeats: int, warmup: int,
             prompt_tokens: int, device: str, dtype: str, layout: Sequence[int], seed: int, against_hf: bool,
             batch: int, static_cache: bool | None, say: Callable[[str], None], tokens: TokenLayout | None,
             on_mode: Callable[[BenchResult], None] | None) -> BenchResult:
    load_before = load_average()
    say(f"building a random {preset} model on {device} ({dtype}), {torch.get_num_threads()} thread(s)")
    model = random_model(preset_config(preset, tokens=tokens), seed=seed, dtype=DTYPES[dtype], device=device)
    tokens = tokens or RELEASED_LAYOUT
    engine = Engine(model, tokens, static_cache=static_cache)
    say(f"engine: {engine.path}")
    content = Layout(layout, strict=True)
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, tokens.endoftext, (prompt_tokens,), generator=g).tolist()  # text ids precede specials
    say("measuring the read bandwidth")
    bandwidth = read_bandwidth(torch.device(device))
    say("measuring the matmul rate")
    flops = matmul_flops(torch.device(device), DTYPES[dtype])
    weights = WeightBytes.of(model)
    result = BenchResult(preset, device, dtype, new_tokens, prompt_tokens, repeats, list(layout),
                         sum(p.numel() for p in model.parameters()), torch.get_num_threads(), engine.fast is not None,
                         round(bandwidth / 1e9, 2), round(flops / 1e9, 1), load_before, engine.path, batch=batch)
    prompts = [prompt] + [torch.randint(0, tokens.endoftext, (prompt_tokens,), generator=g).tolist()
                          for _ in range(batch - 1)]
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
        limit = limit_tokens_per_s(weights, runs[0]["forwards"], runs[0]["tokens"], bandwidth, flops)
        result.modes.append(ModeResult(
            mode=name, tokens_per_s=statistics.median(rates), tokens_per_s_min=min(rates),
            tokens_per_s_max=max(rates), backbone_forwards=done.backbone_forwards, mtp_forwards=done.mtp_forwards,
            first_audio_block_ms=1000 * statistics.median(blocks) if blocks else float("nan"),
            backbone_forward_ms=1000 * statistics.median(per_b) if per_b else 0.0,
            backbone_catchup_ms=1000 * statistics.median(per_c) if per_c else 0.0,
            mtp_forward_ms=1000 * statistics.median(per_m) if per_m else 0.0,
            limit_tokens_per_s=limit, percent_of_limit=100 * statistics.median(rates) / limit,
        ))
        if batch > 1:
            say(f"{name}: a batch of {batch} requests")
            b = _batch_run(engine, prompts, name, content, new_tokens)
            m = result.modes[-1]
            m.batch_tokens_per_s, m.batch_request_tokens_per_s, m.batch_first_audio_block_ms = (
                b["total"], b["request"], b["first"])
        base, base_limit = result.modes[0].tokens_per_s, result.modes[0].limit_tokens_per_s
        result.modes[-1].speedup = result.modes[-1].tokens_per_s / base
        result.modes[-1].limit_speedup = result.modes[-1].limit_tokens_per_s / base_limit
        if on_mode is not None:
            on_mode(result)
    result.modes = [m for m in result.modes if m.mode in modes or m.mode == "vanilla"]
    if against_hf:
        rates = _hf_generate(model, prompt, new_tokens, warmup, repeats, say)
        result.hf_generate = HFResult(statistics.median(rates), min(rates), max(rates),
                                      base / statistics.median(rates))
    result.load_after = load_average()
    return result
