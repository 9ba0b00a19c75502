"""The generation engine: prefill, step loop, KV caches, the MCTP chain, stop rules; yields events.

Who produces each position comes from the mode (`schedule.Mode`), what it may hold from the
layout (`schedule.Layout`). A backbone step runs the LLM over every token it has not seen yet
(one token, or the token it just made plus the MCTP tokens since); MCTP module k then runs right
after the step that feeds it, over every position it has not seen yet, so one Boost cycle is one
backbone pass plus ten one-layer MCTP steps. All state is per request (`GenerationState`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from vita_core.errors import InputError
from vita_core.kv_cache import KVCache
from vita_core.model.attention import causal_mask_for_cache
from vita_core.model.fast import FastModel, Linear, fast_path_supported
from vita_core.model.modeling import VitaAudioForCausalLM
from vita_core.model.static import StaticKVCache, StaticModel
from vita_core.schedule import BACKBONE, Kind, Layout, LayoutState, Mode, get_mode
from vita_core.tokens import TokenLayout


@dataclass(frozen=True)
class Sampling:
    """temperature 0 means greedy; the rest follow Hugging Face's processors in the same order."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise InputError(f"temperature {self.temperature} must be >= 0 (0 means greedy)")
        if self.top_k < 0:
            raise InputError(f"top_k {self.top_k} must be >= 0 (0 disables it)")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p {self.top_p} must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise InputError(f"repetition_penalty {self.repetition_penalty} must be > 0")


@dataclass
class TokenEvent:
    """One generated token; `producer` is BACKBONE (-1) or the MCTP module index."""

    token: int
    index: int
    producer: int
    kind: str  # text | audio | begin_audio | end_audio | stop


@dataclass
class AudioBlockEvent:
    """The codes of one audio block, emitted at its <|end_of_audio|> (or at the end, unclosed)."""

    codes: list[int]
    block: int
    closed: bool
    seconds: float  # since generation started


@dataclass
class ForwardEvent:
    """One forward pass: which module, how many query positions, how long it took (with the logits)."""

    producer: int
    positions: int
    seconds: float
    logit_rows: int = 0  # lm_head rows read to choose the token (0: the layout forced it)


@dataclass
class DoneEvent:
    tokens: list[int]
    producers: list[int]
    stop_reason: str  # stop | length
    backbone_forwards: int
    mtp_forwards: int
    seconds: float


Event = TokenEvent | AudioBlockEvent | ForwardEvent | DoneEvent


@dataclass
class GenerationState:
    """Everything one request needs between steps."""

    tokens: list[int]
    embeds: torch.Tensor  # [T_max, H] backbone input embeddings by position
    token_embeds: torch.Tensor  # [T_max, H] token embeddings (MCTP input); `embeds` itself unless the prompt
    # came with its own embeddings (Plus audio features), which only the backbone reads
    hidden: torch.Tensor  # [levels, T_max, H]: level 0 backbone, level k+1 module k's output
    seen: list[int]  # per level: next position to process (backbone starts at 0, module k at k+1)
    cache: KVCache | StaticKVCache
    layout_state: LayoutState = field(default_factory=LayoutState)
    generator: torch.Generator | None = None
    presence: torch.Tensor | None = None  # bool [V]: ids seen so far (repetition penalty)


class Engine:
    """Runs requests on a shared, read-only model.

    `static_cache=None` takes the GPU fast path on CUDA (`vita_core.model.static.StaticModel`: a KV cache
    preallocated at `static_len` positions, each recurring pass replayed as a CUDA graph) and nowhere else;
    `static_cache=True` runs that same path eagerly on CPU (how its logic is tested), `False` turns it off.
    Otherwise `fast=None` takes the CPU fast path (`vita_core.model.fast.FastModel`: prepacked oneDNN
    weights, ~20 ops a layer) wherever it is supported (CPU, float32 or bfloat16) and Hugging Face's
    layers elsewhere; `fast=False` forces the latter (the reference the fast paths are tested against).
    """

    def __init__(self, model: VitaAudioForCausalLM, tokens: TokenLayout, fast: bool | None = None,
                 static_cache: bool | None = None, static_len: int = 4096) -> None:
        self.model = model
        self.tokens = tokens
        tokens.check_config(model.config.vocab_size)
        self.device = model.lm_head.weight.device
        if static_cache is None:
            static_cache = self.device.type == "cuda" and not fast
        if static_cache and fast:
            raise InputError("the static KV cache and the CPU fast path are two different engines; "
                             "pass static_cache=False to use the fast path")
        if static_len < 1:
            raise InputError(f"static_len {static_len} must be at least 1 position")
        self.static = StaticModel(model, static_len, graphs=self.device.type == "cuda") if static_cache else None
        if fast and not fast_path_supported(model):
            raise InputError(f"the fast path needs a CPU model in float32 or bfloat16, not "
                             f"{self.device.type} {model.lm_head.weight.dtype}; leave it off")
        auto_fast = self.static is None and fast_path_supported(model)
        self.fast = FastModel(model) if (auto_fast if fast is None else fast) else None
        pack = self.fast is not None
        w = model.lm_head.weight.detach()
        # Logits only over the rows a position may choose: the text rows, or the codes + <|end_of_audio|>.
        self._text_head = Linear(w[: tokens.audio_offset], pack=pack)
        self._code_head = Linear(torch.cat([w[tokens.audio_offset : tokens.audio_end],
                                            w[tokens.end_of_audio : tokens.end_of_audio + 1]]), pack=pack)
        self._full_head = Linear(w, pack=False)  # free layouts (Kind.ANY) only

    @property
    def path(self) -> str:
        """Which forward path this engine runs, in words (for `vita bench`)."""
        if self.static is not None:
            return "static KV cache + CUDA graphs" if self.static.graphs else "static KV cache (eager)"
        return "fast path (prepacked oneDNN)" if self.fast is not None else "Hugging Face layers"

    # ---- forward passes ----

    def _new_state(self, prompt: Sequence[int], max_new: int, prompt_embeds: torch.Tensor | None,
                   sampling: Sampling) -> GenerationState:
        m, total = self.model, len(prompt) + max_new + 1
        dtype, hidden = m.lm_head.weight.dtype, m.config.hidden_size
        levels = max(m.num_mtp, 1)
        embeds = torch.zeros(total, hidden, device=self.device, dtype=dtype)
        state = GenerationState(
            tokens=list(prompt),
            embeds=embeds,
            token_embeds=embeds if prompt_embeds is None else torch.zeros_like(embeds),
            hidden=torch.zeros(levels, total, hidden, device=self.device, dtype=dtype),
            seen=[0] + [k + 1 for k in range(m.num_mtp)],
            # a request needs prompt + budget positions (the last token is never fed back)
            cache=(self.static.acquire(total - 1) if self.static is not None
                   else KVCache(m.config, total, range(m.config.num_hidden_layers), self.device, dtype)),
        )
        ids = torch.tensor(prompt, device=self.device)
        state.token_embeds[: len(prompt)] = m.embed(ids)
        if prompt_embeds is not None:
            if tuple(prompt_embeds.shape) != (len(prompt), hidden):
                raise ValueError(f"prompt_embeds has shape {tuple(prompt_embeds.shape)}, "
                                 f"expected ({len(prompt)}, {hidden})")
            state.embeds[: len(prompt)] = prompt_embeds.to(device=self.device, dtype=dtype)
        if sampling.seed is not None:
            state.generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        if sampling.repetition_penalty != 1.0:
            state.presence = torch.zeros(m.config.vocab_size, dtype=torch.bool, device=self.device)
            state.presence[ids] = True
        return state

    def _embed_new(self, state: GenerationState, start: int, end: int) -> None:
        ids = torch.tensor(state.tokens[start:end], device=self.device)
        state.embeds[start:end] = self.model.embed(ids)
        if state.token_embeds is not state.embeds:
            state.token_embeds[start:end] = state.embeds[start:end]

    def _run(self, states: list[GenerationState], producer: int) -> list[tuple[torch.Tensor, int]]:
        """Catch the producer up to each request's last token in one pass (stacked rows on the fast
        path); return each one's hidden state there and the positions it ran."""
        level = 0 if producer == BACKBONE else producer + 1
        spans = [(s.seen[level], len(s.tokens)) for s in states]
        if self.fast is not None:
            starts, caches = [a for a, _ in spans], [s.cache for s in states]
            if producer == BACKBONE:
                outs = self.fast.backbone([s.embeds[a:b] for s, (a, b) in zip(states, spans)], starts, caches)
            else:
                outs = self.fast.mtp(producer, [s.token_embeds[a:b] for s, (a, b) in zip(states, spans)],
                                     [s.hidden[producer, a - 1 : b - 1] for s, (a, b) in zip(states, spans)],
                                     starts, caches)
        elif self.static is not None:  # one (graph) pass per request: a graph holds one request's cache
            outs = [self.static.run(producer, s.embeds[a:b], None, a, s.cache) if producer == BACKBONE
                    else self.static.run(producer, s.token_embeds[a:b], s.hidden[producer, a - 1 : b - 1], a, s.cache)
                    for s, (a, b) in zip(states, spans)]
        else:
            outs = [self._run_hf(s, producer, a, b) for s, (a, b) in zip(states, spans)]
        for s, (a, b), out in zip(states, spans, outs):
            if level < s.hidden.shape[0]:
                s.hidden[level, a:b] = out
            s.seen[level] = b
        return [(out[-1], b - a) for out, (a, b) in zip(outs, spans)]

    def _run_hf(self, state: GenerationState, producer: int, start: int, last: int) -> torch.Tensor:
        """One request through Hugging Face's layers (devices and dtypes the fast path does not cover)."""
        m = self.model
        positions = torch.arange(start, last, device=self.device).unsqueeze(0)
        kv_len = last if producer == BACKBONE else last - (producer + 1)
        mask = causal_mask_for_cache(last - start, kv_len, self.device)
        if producer == BACKBONE:
            return m.backbone(state.embeds[start:last].unsqueeze(0), positions, mask, state.cache)[0]
        prev = state.hidden[producer, start - 1 : last - 1].unsqueeze(0)
        return m.mtp(producer, state.token_embeds[start:last].unsqueeze(0), prev, positions, mask, state.cache)[0]

    # ---- choosing the next token ----

    def _head(self, kind: Kind) -> Linear | None:
        """The lm_head rows a position of this kind may choose from (None: the layout forces the token)."""
        if kind in (Kind.BOA, Kind.EOA):
            return None
        if kind in (Kind.CODE, Kind.CODE_OR_EOA):
            return self._code_head
        return self._full_head if kind is Kind.ANY else self._text_head

    def _logits(self, hidden: list[torch.Tensor], kinds: list[Kind]) -> list[torch.Tensor | None]:
        """Each position's logits over its head's rows: one matmul per head for all positions needing it."""
        out: list[torch.Tensor | None] = [None] * len(hidden)
        by_head: dict[int, tuple[Linear, list[int]]] = {}
        for i, kind in enumerate(kinds):
            head = self._head(kind)
            if head is not None:
                by_head.setdefault(id(head), (head, []))[1].append(i)
        for head, members in by_head.values():
            rows = head(torch.stack([hidden[i] for i in members]))
            for j, i in enumerate(members):
                out[i] = rows[j]
        return out

    def _choose(self, logits: torch.Tensor | None, kind: Kind, state: GenerationState, sampling: Sampling) -> int:
        """The next token from the logits over `_head(kind)`'s rows."""
        lay = self.tokens
        if kind is Kind.BOA:
            return lay.begin_of_audio
        if kind is Kind.EOA:
            return lay.end_of_audio
        assert logits is not None
        if kind in (Kind.CODE, Kind.CODE_OR_EOA):
            if kind is Kind.CODE:
                logits = logits[: lay.num_codes]
            index = self._pick(logits.float(), state, sampling, lay.audio_offset)
            return lay.audio_offset + index if index < lay.num_codes else lay.end_of_audio
        if kind is Kind.ANY:
            return self._pick(logits.float(), state, sampling, 0)
        text = logits.float()
        # the audio rows are -inf: padding keeps the vector (and so any sampling draw) as the full vocabulary's
        logits = torch.cat([text, text.new_full((self.model.config.vocab_size - text.shape[0],), float("-inf"))])
        logits[lay.end_of_audio] = float("-inf")
        if kind is Kind.AFTER_AUDIO:
            logits[lay.begin_of_audio] = float("-inf")
        return self._pick(logits, state, sampling, 0)

    def _pick(self, logits: torch.Tensor, state: GenerationState, sampling: Sampling, offset: int) -> int:
        if state.presence is not None:
            lay = self.tokens
            if offset == lay.audio_offset and logits.shape[0] > lay.num_codes:  # the codes, then <|end_of_audio|>
                seen = torch.cat([state.presence[offset : lay.audio_end],
                                  state.presence[lay.end_of_audio : lay.end_of_audio + 1]])
            else:
                seen = state.presence[offset : offset + logits.shape[0]]
            p = sampling.repetition_penalty
            logits = torch.where(seen, torch.where(logits > 0, logits / p, logits * p), logits)
        if sampling.temperature == 0:
            return int(torch.argmax(logits))
        logits = logits / sampling.temperature
        if sampling.top_k and sampling.top_k < logits.shape[0]:
            kth = torch.topk(logits, sampling.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if sampling.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=False)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum <= 1 - sampling.top_p
            drop[-1] = False
            logits = logits.masked_fill(drop.scatter(0, order, drop), float("-inf"))
        probs = logits.softmax(-1)
        return int(torch.multinomial(probs, 1, generator=state.generator))

    # ---- the loop ----

    def generate(
        self,
        prompt: Sequence[int],
        mode: str | Sequence[int] | Mode = "vanilla",
        layout: Layout | None = None,
        sampling: Sampling = Sampling(),
        max_new_tokens: int = 1024,
        stop_ids: Sequence[int] | None = None,
        prompt_embeds: torch.Tensor | None = None,
    ) -> Iterator[Event]:
        """Yield TokenEvent/ForwardEvent as they happen, AudioBlockEvent per block, DoneEvent last.

        `stop_ids=()` never stops early (benchmarks); by default <|im_end|> and <|endoftext|> stop.
        A prompt that fills the model's context (max_position_embeddings) is refused in one line, and the
        budget is cut so that prompt + new tokens fit in it (the run then ends with stop_reason "length").
        `prompt_embeds` [len(prompt), H] replaces the backbone's input embeddings of the prompt (a Plus
        checkpoint's audio features); the MCTP modules read the prompt's token embeddings regardless.
        """
        request = Request(prompt, mode, layout, sampling, max_new_tokens, stop_ids, prompt_embeds)
        for _, event in self.generate_batch([request]):
            yield event

    def generate_batch(self, requests: Sequence[Request]) -> Iterator[tuple[int, Event]]:
        """Run several requests together: yield (request index, event), each request's events in order.

        Each round, the requests whose next position has the same producer share one forward pass
        (on the fast path: one matmul over their stacked rows, attention over each one's own cache);
        a request's tokens are its tokens alone, up to float rounding of the stacked matmuls.
        """
        running = [self._start(r) for r in requests]
        t0 = time.perf_counter()
        try:
            yield from self._loop(running, t0)
        finally:  # also when the caller stops early: the static caches go back to the pool
            for r in running:
                if self.static is not None and r.state is not None:
                    self.static.release(r.state.cache)

    def _loop(self, running: list[_Running], t0: float) -> Iterator[tuple[int, Event]]:
        with torch.inference_mode():
            for r in running:
                r.state = self._new_state(r.request.prompt, len(r.producers), r.request.prompt_embeds,
                                          r.request.sampling)
            active = list(range(len(running)))
            while active:
                groups: dict[int, list[int]] = {}
                for i in active:
                    groups.setdefault(running[i].producers[running[i].n], []).append(i)
                for producer, members in groups.items():
                    start = time.perf_counter()
                    outs = self._run([running[i].state for i in members], producer)
                    kinds = [running[i].layout.kind(running[i].state.layout_state) for i in members]
                    logits = self._logits([h for h, _ in outs], kinds)
                    for i, kind, row, (_, positions) in zip(members, kinds, logits, outs):
                        for event in self._advance(running[i], producer, kind, row, positions, start, t0):
                            yield i, event
                active = [i for i in active if not running[i].finished]

    def _start(self, request: Request) -> _Running:
        if not request.prompt:
            raise InputError("the prompt is empty")
        if request.max_new_tokens < 1:
            raise InputError(f"max_new_tokens {request.max_new_tokens} must be at least 1")
        budget = request.max_new_tokens
        context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        if context:
            if len(request.prompt) >= context:
                raise InputError(f"the prompt is {len(request.prompt)} tokens, more than the model's context of "
                                 f"{context} positions (max_position_embeddings); shorten the text, audio or history")
            # the state is allocated for prompt + budget: never past the context, however large the budget
            budget = min(budget, context - len(request.prompt))
        mode = request.mode if isinstance(request.mode, Mode) else get_mode(request.mode)
        stops = set(self.tokens.stop_ids if request.stop_ids is None else request.stop_ids)
        return _Running(request, request.layout or Layout(None), stops, mode.producers(budget, self.model.num_mtp))

    def _advance(self, r: _Running, producer: int, kind: Kind, logits: torch.Tensor | None, positions: int,
                 start: float, t0: float) -> list[Event]:
        """Choose request r's next token from its logits; the events it makes."""
        lay, state = self.tokens, r.state
        last = len(state.tokens)
        r.counts["b" if producer == BACKBONE else "m"] += 1
        token = self._choose(logits, kind, state, r.request.sampling)
        rows = 0 if logits is None else logits.shape[0]
        events: list[Event] = [ForwardEvent(producer, positions, time.perf_counter() - start, rows)]
        state.tokens.append(token)
        self._embed_new(state, last, last + 1)
        if state.presence is not None:
            state.presence[token] = True
        state.layout_state = r.layout.advance(
            state.layout_state, token, lay.begin_of_audio, lay.end_of_audio, lay.is_audio_code(token)
        )
        n, r.n = r.n, r.n + 1
        if token in r.stops:
            events.append(TokenEvent(token, n, producer, "stop"))
            r.reason = "stop"
        elif lay.is_audio_code(token):
            r.block.append(lay.id_to_code(token))
            events.append(TokenEvent(token, n, producer, "audio"))
        elif token == lay.begin_of_audio:
            events.append(TokenEvent(token, n, producer, "begin_audio"))
        elif token == lay.end_of_audio:
            events.append(TokenEvent(token, n, producer, "end_audio"))
            events.append(AudioBlockEvent(r.block, r.blocks, True, time.perf_counter() - t0))
            r.block, r.blocks = [], r.blocks + 1
        else:
            events.append(TokenEvent(token, n, producer, "text"))
        if r.reason == "stop" or r.n == len(r.producers):
            r.finished = True
            if r.block:
                events.append(AudioBlockEvent(r.block, r.blocks, False, time.perf_counter() - t0))
            generated = state.tokens[len(r.request.prompt) :]
            events.append(DoneEvent(generated, r.producers[: len(generated)], r.reason, r.counts["b"],
                                    r.counts["m"], time.perf_counter() - t0))
        return events


@dataclass
class Request:
    """One generation request (the arguments of `Engine.generate`), for `Engine.generate_batch`."""

    prompt: Sequence[int]
    mode: str | Sequence[int] | Mode = "vanilla"
    layout: Layout | None = None
    sampling: Sampling = Sampling()
    max_new_tokens: int = 1024
    stop_ids: Sequence[int] | None = None
    prompt_embeds: torch.Tensor | None = None


@dataclass
class _Running:
    """A request inside the loop: its state, schedule and where it is."""

    request: Request
    layout: Layout
    stops: set[int]
    producers: list[int]
    state: GenerationState | None = None
    n: int = 0
    block: list[int] = field(default_factory=list)
    blocks: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"b": 0, "m": 0})
    reason: str = "length"
    finished: bool = False


def generate_ids(engine: Engine, prompt: Sequence[int], **kwargs: object) -> DoneEvent:
    """Run to completion and return the summary (tests, ASR, evaluation)."""
    done = None
    for event in engine.generate(prompt, **kwargs):
        if isinstance(event, DoneEvent):
            done = event
    assert done is not None
    return done
