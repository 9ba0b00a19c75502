"""`pack`: a recipe's prepared samples -> fixed-length packed shards for training.

Each selected sample is laid out for the stage: every answer's text and audio interleaved by the
recipe's ratio (`vita_core.schedule.interleave`, the reference's `text_audio_interval`), labels on
answer content plus the `<|im_end|>` and "\\n" that close it (as the reference's preprocess), -100
elsewhere. Samples are packed best-fit decreasing within a window of the shuffled order; bins
that still have room stay open across windows (up to `max_open`), so padding stays low while the
training order stays shuffled. Packs are padded with <|endoftext|> (label -100), which the reader
treats as its own final segment. Everything follows from the recipe and seed: same input, same
bytes. Samples longer than the sequence length are reported, never cut or dropped silently.

Shard K of the output folder: `packs-K.tokens.npy` and `packs-K.labels.npy` (int32 [packs, seq_len]),
`packs-K.lens.npy` (int32, the real sample lengths of all packs back to back) and
`packs-K.offsets.npy` (int64 [packs + 1], where each pack's lengths start in lens.npy), and
`packs-K.json` (which samples each pack holds). `manifest.json` has the settings and statistics.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vita_core.data.prepared import PreparedSet, SampleRef, write_json, write_npy
from vita_core.data.recipe import Recipe, select
from vita_core.errors import InputError
from vita_core.schedule import interleave, parse_ratio

FORMAT = "vita-packed-1"
IGNORE = -100
Progress = Callable[[str, int, int], None]


def _chunks(n: int, sizes: Sequence[int]) -> int:
    """How many chunks `n` items make when cut into sizes[0], sizes[1], ... (the last size repeating)."""
    count = used = 0
    while used < n:
        used += sizes[min(count, len(sizes) - 1)]
        count += 1
    return count


class Renderer:
    """Lays out prepared samples for one stage: interleaved answers and their labels."""

    def __init__(self, layout: dict[str, Any], ratio: Sequence[int] | None) -> None:
        self.boa, self.eoa = layout["begin_of_audio"], layout["end_of_audio"]
        self.tail = 1 + len(layout["newline"])  # <|im_end|> "\n" close every turn
        self.ratio = parse_ratio(ratio) if ratio is not None else None
        if self.ratio is not None:
            self._text_sizes = self.ratio[::2]
            self._audio_sizes = [a - 2 for a in self.ratio[1::2]]
            if min(self._audio_sizes) < 1:
                raise InputError(f"ratio {self.ratio}: every audio count must be at least 3 (begin, a code, end)")

    def _split(self, content: np.ndarray) -> tuple[int, int] | None:
        """(text count, audio count) if the answer has text and one audio block to interleave, else None."""
        if self.ratio is None:
            return None
        starts = np.flatnonzero(content == self.boa)
        if len(starts) != 1:
            return None
        n_audio = int(np.flatnonzero(content == self.eoa)[0] - starts[0] - 1)
        n_text = len(content) - n_audio - 2
        return (n_text, n_audio) if n_text > 0 and n_audio > 0 else None

    def length(self, ids: np.ndarray, spans: Sequence[tuple[int, int]]) -> int:
        """Length after layout, without building it: each extra chunk adds one begin/end pair."""
        extra = 0
        for s, e in spans:
            split = self._split(ids[s:e])
            if split:
                n = min(_chunks(split[0], self._text_sizes), _chunks(split[1], self._audio_sizes))
                extra += 2 * (n - 1)
        return len(ids) + extra

    def _content(self, content: np.ndarray) -> np.ndarray:
        if self._split(content) is None:
            return content
        b = int(np.flatnonzero(content == self.boa)[0])
        e = int(np.flatnonzero(content == self.eoa)[0])
        text = np.concatenate([content[:b], content[e + 1 :]]).tolist()
        laid = interleave(text, content[b + 1 : e].tolist(), self.ratio, self.boa, self.eoa)
        return np.asarray(laid, dtype=np.int32)

    def render(self, ids: np.ndarray, spans: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, labels) of one sample for training."""
        tokens, labels, pos = [], [], 0
        for s, e in spans:
            content = self._content(ids[s:e])
            tail = ids[e : e + self.tail]
            tokens += [ids[pos:s], content, tail]
            labels += [np.full(s - pos, IGNORE, dtype=np.int32), content, tail]
            pos = e + self.tail
        tokens.append(ids[pos:])
        labels.append(np.full(len(ids) - pos, IGNORE, dtype=np.int32))
        return np.concatenate(tokens).astype(np.int32), np.concatenate(labels).astype(np.int32)


def plan_packs(lengths: np.ndarray, seq_len: int, window: int = 20000, max_open: int = 512) -> tuple[list[list[int]], list[int]]:
    """Group sample positions into packs of at most `seq_len` tokens; also return the positions that never fit.

    Best-fit decreasing inside each window of `window` consecutive samples: longest first, each
    into the open pack with the least room that still holds it. A pack closes when no sample can
    fit any more, or, after a window, when more than `max_open` are open (fullest closes first).
    Ties break on position, so the plan is a pure function of its input.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    fits = lengths <= seq_len
    smallest = int(lengths[fits].min()) if fits.any() else seq_len + 1
    too_long = [int(i) for i in np.flatnonzero(~fits)]
    packs: list[list[int]] = []
    closed: list[int] = []
    room: list[tuple[int, int]] = []  # (free tokens, pack index), sorted
    for start in range(0, len(lengths), window):
        block = np.arange(start, min(start + window, len(lengths)))
        block = block[fits[block]]
        for i in block[np.lexsort((block, -lengths[block]))]:
            n = int(lengths[i])
            k = bisect.bisect_left(room, (n, -1))
            if k < len(room):
                free, p = room.pop(k)
                packs[p].append(int(i))
            else:
                free, p = seq_len, len(packs)
                packs.append([int(i)])
            free -= n
            if free >= smallest:
                bisect.insort(room, (free, p))
            else:
                closed.append(p)
        while len(room) > max_open:
            closed.append(room.pop(0)[1])
    closed += sorted(p for _, p in room)
    return [packs[p] for p in closed], too_long


@dataclass
class PackReport:
    """What a pack run produced; `padding_fraction` = padding tokens / all tokens in the packs."""

    out: Path
    seq_len: int
    packs: int
    samples: int
    real_tokens: int
    input_tokens: int
    too_long: list[dict[str, Any]]
    per_source: dict[str, int]
    seconds: float = 0.0
    shards: list[dict[str, Any]] = field(default_factory=list)

    @property
    def padding_fraction(self) -> float:
        total = self.packs * self.seq_len
        return (total - self.real_tokens) / total if total else 0.0

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0


def pack(
    recipe: Recipe,
    out: str | Path,
    seq_len: int | None = None,
    seed: int | None = None,
    ratio: Sequence[int] | None | str = "recipe",
    window: int = 20000,
    max_open: int = 512,
    packs_per_shard: int = 1024,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> PackReport:
    """Select, lay out and pack a recipe's samples into `out`; flags given here override the recipe."""
    started = time.perf_counter()
    seq_len = recipe.seq_len if seq_len is None else seq_len
    seed = recipe.seed if seed is None else seed
    ratio = recipe.ratio if isinstance(ratio, str) and ratio == "recipe" else ratio
    if seq_len < 16 or window < 1 or max_open < 0 or packs_per_shard < 1:
        raise InputError("--seq-len must be >= 16; --window and --packs-per-shard must be positive")
    out = Path(out)
    _check_folder(out, overwrite)

    folders = recipe.folders()
    sets = []
    for source, path in folders:
        if not path.is_dir():
            raise InputError(
                f"source {source.name!r}: prepared folder {path} not found; run `vita prepare` for it "
                "or set the source's ratio to 0"
            )
        sets.append(PreparedSet(path))
    layouts = {repr(sorted(s.layout.items())) for s in sets}
    if len(layouts) > 1:
        raise InputError("the prepared folders were made with different tokenizers; prepare them all with the same --model")
    renderer = Renderer(sets[0].layout, ratio)
    pad = int(sets[0].layout["endoftext"])
    _claim_folder(out)  # only now, so a recipe that cannot be packed leaves --out untouched

    folder_of, index_of = select([(s.ratio, s.cap, len(p)) for (s, _), p in zip(folders, sets)], seed)
    refs: list[tuple[PreparedSet, SampleRef]] = [(sets[f], sets[f].samples[i]) for f, i in zip(folder_of, index_of)]
    lengths = np.empty(len(refs), dtype=np.int64)
    for n, (pset, ref) in enumerate(refs):
        lengths[n] = renderer.length(pset.ids(ref), ref.assistant)
        if progress and (n + 1) % 10000 == 0:
            progress("measure", n + 1, len(refs))
    packs, too_long = plan_packs(lengths, seq_len, window, max_open)

    shards = []
    for k, first in enumerate(range(0, len(packs), packs_per_shard)):
        group = packs[first : first + packs_per_shard]
        shards.append(_write_shard(out, k, group, refs, folder_of, renderer, seq_len, pad))
        if progress:
            progress("write", first + len(group), len(packs))

    report = PackReport(
        out=out,
        seq_len=seq_len,
        packs=len(packs),
        samples=sum(len(p) for p in packs),
        real_tokens=int(lengths.sum() - lengths[too_long].sum()),
        input_tokens=int(lengths.sum()),
        too_long=[
            {"source": folders[folder_of[i]][0].name, "id": refs[i][1].id, "tokens": int(lengths[i])} for i in too_long
        ],
        per_source=dict(Counter(folders[f][0].name for f in folder_of)),
        shards=shards,
    )
    write_json(out / "manifest.json", {
        "format": FORMAT,
        "seq_len": seq_len,
        "seed": seed,
        "ratio": list(renderer.ratio) if renderer.ratio else None,
        "pad_id": pad,
        "folders": [{"source": s.name, "path": str(p)} for s, p in folders],
        "shards": shards,
        "packs": report.packs,
        "samples": report.samples,
        "selected_per_source": report.per_source,
        "real_tokens": report.real_tokens,
        "padding_fraction": round(report.padding_fraction, 6),
        "too_long": report.too_long,
    })
    report.seconds = time.perf_counter() - started
    return report


def _write_shard(out: Path, k: int, group, refs, folder_of, renderer: Renderer, seq_len: int, pad: int) -> dict[str, Any]:
    tokens = np.full((len(group), seq_len), pad, dtype=np.int32)
    labels = np.full((len(group), seq_len), IGNORE, dtype=np.int32)
    lens: list[int] = []
    offsets = [0]
    contents = []
    for row, members in enumerate(group):
        pos = 0
        for i in members:
            pset, ref = refs[i]
            t, lab = renderer.render(pset.ids(ref), ref.assistant)
            tokens[row, pos : pos + len(t)] = t
            labels[row, pos : pos + len(t)] = lab
            pos += len(t)
            lens.append(len(t))
        offsets.append(len(lens))
        contents.append([[int(folder_of[i]), refs[i][1].id] for i in members])
    name = f"packs-{k:05d}"
    write_npy(out / f"{name}.tokens.npy", tokens)
    write_npy(out / f"{name}.labels.npy", labels)
    write_npy(out / f"{name}.lens.npy", np.asarray(lens, dtype=np.int32))
    write_npy(out / f"{name}.offsets.npy", np.asarray(offsets, dtype=np.int64))
    write_json(out / f"{name}.json", {"packs": contents}, compact=True)
    return {"name": name, "packs": len(group)}


def _check_folder(out: Path, overwrite: bool) -> None:
    """Refuse an --out that is a file, or a non-empty folder without --overwrite, before any work."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"--out {out} is not empty; use a new folder or pass --overwrite")
        for child in out.iterdir():
            if not (child.is_file() and (child.name.startswith("packs-") or child.name == "manifest.json")):
                raise InputError(f"--out {out} holds {child.name}, which is not a pack output; use a new folder")


def _claim_folder(out: Path) -> None:
    """Create --out, or empty it of the old packs (already checked by `_check_folder`)."""
    if out.is_dir():
        for child in out.iterdir():
            child.unlink()
    out.mkdir(parents=True, exist_ok=True)
