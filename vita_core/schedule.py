"""Interleave schedules as plain data.

Two separate things:
- the *mode* says who produces each generated position: the backbone ("B") or MCTP module k;
- the *layout* says what kind of token a position may hold (text, audio codes, block ends),
  from the checkpoint's training ratio. The engine masks each position to what the layout allows.

`interleave` is the training-side twin of the layout: it lays out one assistant answer
(text tokens + one audio span) exactly as the reference's data pipeline does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Sequence

from vita_core.errors import InputError

MODES: dict[str, list[int] | None] = {
    "vanilla": None,
    "balance": [1, 4, 3, 8, 4, 10],
    "boost": [1, 10, 4, 10],
    "turbo": [1, 10],
}
BOOST_RATIO = [1, 10, 4, 10]
BALANCE_RATIO = [1, 4, 3, 8, 4, 10]

BACKBONE = -1  # producer id of the backbone; MCTP modules are 0..N-1


def parse_ratio(value: str | Sequence[int]) -> list[int]:
    """'1 10 4 10', '1,10,4,10' or a list -> list of positive ints with an even length."""
    if isinstance(value, str):
        try:
            items = [int(v) for v in value.replace(",", " ").split()]
        except ValueError:
            raise InputError(f"schedule {value!r} must be integers like '1 10 4 10'") from None
    else:
        items = [int(v) for v in value]
    if not items or len(items) % 2:
        raise InputError(f"schedule {items} must have an even number of entries: [text, audio, text, audio, ...]")
    if any(v < 0 for v in items) or any(v == 0 for v in items[::2]):
        raise InputError(f"schedule {items} needs positive backbone counts and non-negative MCTP counts")
    return items


def _pairs_forever(items: list[int]):
    """Yield (first, second) pairs; the last pair repeats forever (the reference's rule)."""
    pairs = list(zip(items[::2], items[1::2]))
    yield from pairs
    while True:
        yield pairs[-1]


@dataclass(frozen=True)
class Mode:
    """Who produces each generated position: `[B1, m1, B2, m2, ...]` backbone then MCTP counts."""

    name: str
    pattern: tuple[int, ...] | None  # None: backbone only (vanilla)

    def producers(self, n: int, num_mtp: int) -> list[int]:
        """Producer of generated positions 0..n-1: BACKBONE or the MCTP module index.

        A run of MCTP positions uses modules 0, 1, 2, ... in order, each fed by the one before.
        When a run is longer than the N modules, the position after module N-1 goes to the
        backbone and the chain restarts at module 0 inside the same run, as upstream's
        `forward` does (its module counter is only reset by a backbone step): boost with N=3 is
        `B 0 1 2 B 0 1 2 B 0 1`, then `B B B B`, and so on.
        """
        if self.pattern is None or num_mtp == 0:
            return [BACKBONE] * n
        out: list[int] = []
        for backbone, mtp in _pairs_forever(list(self.pattern)):
            out += [BACKBONE] * backbone
            out += [k if k < num_mtp else BACKBONE for k in (i % (num_mtp + 1) for i in range(mtp))]
            if len(out) >= n:
                return out[:n]
        return out  # unreachable: the generator never ends


def get_mode(mode: str | Sequence[int]) -> Mode:
    """A named mode (vanilla, balance, boost, turbo) or a custom list/string like '1 10 4 10'."""
    if isinstance(mode, str) and mode.strip().lower() in MODES:
        name = mode.strip().lower()
        pattern = MODES[name]
        return Mode(name, tuple(pattern) if pattern else None)
    items = parse_ratio(mode)
    return Mode(" ".join(map(str, items)), tuple(items))


class Kind(Enum):
    """What a generated position may hold."""

    TEXT = "text"  # any non-audio token, or <|begin_of_audio|> to open the final audio block
    BOA = "boa"  # <|begin_of_audio|> only
    CODE = "code"  # audio codes only
    CODE_OR_EOA = "code_or_eoa"  # audio codes or <|end_of_audio|>
    EOA = "eoa"  # <|end_of_audio|> only (strict layouts)
    AFTER_AUDIO = "after_audio"  # the final block is closed: text and stop tokens only
    ANY = "any"  # no constraint


@dataclass
class LayoutState:
    """Where generation is inside the interleaved layout; advanced token by token."""

    chunk: int = 0  # index of the current text+audio chunk
    text_count: int = 0  # text tokens emitted in the current chunk
    code_count: int = 0  # codes emitted in the current audio block (-1: not inside a block)
    in_block: bool = False
    open_block: bool = False  # the final block: codes until <|end_of_audio|>
    done: bool = False  # the final block is closed


class Layout:
    """The content layout of a checkpoint's training data, e.g. ratio `1 10 4 10`.

    Chunk i holds up to t_i text tokens, then an audio block of <|begin_of_audio|>, a_i - 2 codes
    and <|end_of_audio|>; the last (t, a) pair repeats. Once the text is done, the final block
    is open: it holds every remaining code. So a block that goes on past a_i - 2 codes, or one
    that starts before t_i text tokens, is the final one. `ratio=None` means free (no masking);
    `text_only=True` forbids audio altogether (ASR). `strict=True` never ends the text or a
    block early: every chunk has exactly t_i text tokens and a_i - 2 codes (speed benchmarks on
    random weights, where content cannot be realistic but its mix of text and audio can).
    """

    def __init__(self, ratio: Sequence[int] | None, text_only: bool = False, strict: bool = False) -> None:
        self.ratio = parse_ratio(ratio) if ratio is not None else None
        self.text_only = text_only
        self.strict = strict
        if self.ratio is not None:
            pairs = list(zip(self.ratio[::2], self.ratio[1::2]))
            if any(a < 2 for _, a in pairs):
                raise InputError(f"layout {self.ratio}: every audio count must be at least 2 (begin and end)")
            self._pairs = pairs

    def _pair(self, chunk: int) -> tuple[int, int]:
        return self._pairs[min(chunk, len(self._pairs) - 1)]

    def kind(self, state: LayoutState) -> Kind:
        if self.text_only:
            return Kind.AFTER_AUDIO
        if self.ratio is None:
            return Kind.ANY
        if state.done:
            return Kind.AFTER_AUDIO
        text_n, audio_n = self._pair(state.chunk)
        if not state.in_block:
            if state.text_count < text_n:
                return Kind.AFTER_AUDIO if self.strict else Kind.TEXT
            return Kind.BOA
        if self.strict:
            return Kind.CODE if state.code_count < audio_n - 2 else Kind.EOA
        if state.open_block or state.code_count >= audio_n - 2:
            return Kind.CODE_OR_EOA
        return Kind.CODE

    def advance(self, state: LayoutState, token: int, begin: int, end: int, is_code: bool) -> LayoutState:
        """The state after `token` (ids of <|begin_of_audio|>/<|end_of_audio|> given by the caller)."""
        if self.ratio is None or self.text_only or state.done:
            return state
        s = LayoutState(**state.__dict__)
        text_n, audio_n = self._pair(s.chunk)
        if not s.in_block:
            if token == begin:
                s.in_block, s.code_count = True, 0
                s.open_block = s.text_count < text_n  # text ended early: this is the final block
            else:
                s.text_count += 1
            return s
        if is_code:
            if s.code_count >= audio_n - 2:
                s.open_block = True
            s.code_count += 1
            return s
        if token == end:
            if s.open_block:
                s.done = True
            s.chunk, s.text_count, s.in_block, s.code_count = s.chunk + 1, 0, False, 0
        return s


def interleave(text_ids: Sequence[int], audio_ids: Sequence[int], ratio: Sequence[int], begin: int, end: int) -> list[int]:
    """Lay out one answer's text tokens and audio-code ids as the reference's training data.

    Text is cut into chunks of t1, t2, ... tokens and audio into chunks of a1-2, a2-2, ... codes
    (the last size repeating); the number of chunks is the smaller of the two counts, and the last
    chunk takes all remaining text and all remaining audio. Each chunk is text, BOA, codes, EOA.
    With no text or no audio the answer is returned as text, or as one block.
    """
    ratio = parse_ratio(ratio)
    text, audio = list(text_ids), list(audio_ids)
    if not audio:
        return text
    if not text:
        return [begin, *audio, end]
    text_sizes, audio_sizes = ratio[::2], [a - 2 for a in ratio[1::2]]
    if min(audio_sizes) <= 0:
        raise InputError(f"ratio {ratio}: every audio count must be at least 3 to hold a code")

    def chunks(items: list[int], sizes: list[int]) -> list[list[int]]:
        out, i = [], 0
        while items[i:]:
            size = sizes[min(len(out), len(sizes) - 1)]
            out.append(items[i : i + size])
            i += size
        return out

    text_chunks, audio_chunks = chunks(text, text_sizes), chunks(audio, audio_sizes)
    n = min(len(text_chunks), len(audio_chunks))
    text_chunks = text_chunks[: n - 1] + [sum(text_chunks[n - 1 :], [])]
    audio_chunks = audio_chunks[: n - 1] + [sum(audio_chunks[n - 1 :], [])]
    out: list[int] = []
    for t, a in zip(text_chunks, audio_chunks):
        out += [*t, begin, *a, end]
    return out
