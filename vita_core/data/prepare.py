"""`prepare`: corpora -> validated samples with audio codes, in shards of token ids (see prepared.py).

Work goes shard by shard over the input records in a fixed order. For each shard the audio is
hashed, looked up in the code cache, and the misses are decoded on worker threads and encoded in
batches on the calling thread; then each record becomes ChatML token ids. A shard is written
atomically when done, so an interrupted run resumes at the first unfinished shard, and audio
encoded before the interruption comes back from the cache. Every record that is not written is
reported with its reason.

Under torchrun each rank takes shard k with k % world == rank (see vita_core/ranks.py); the code
cache and the output folder are shared, rank 0 claims the folder first and writes the report and
the final manifest after all shards are done. A shard's bytes depend only on its records and the
cache, so any number of ranks gives the shards (and report) of one process, and a run resumes
with any number of ranks.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from vita_core.codec.base import SpeechEncoder
from vita_core.data import audio_io
from vita_core.data.cache import CodeCache, CorruptEntry, file_digest
from vita_core.data.importers import Item, read_input
from vita_core.data.prepared import FORMAT, MANIFEST, REPORT, read_shard_meta, shard_name, write_json, write_shard
from vita_core.data.tasks import (
    EMPTY_TEXT,
    INVALID,
    MISSING,
    REASONS,
    TOO_LONG,
    TTS_PROMPT,
    UNREADABLE,
    Record,
    Skip,
    apply_tts_rule,
    kind_of,
)
from vita_core.errors import InputError
from vita_core.ranks import Ranks
from vita_core.tokens import AUDIO_PLACEHOLDER, AudioCodes, ChatFormat, TokenLayout, layout_from_tokenizer

Progress = Callable[[str, int, int], None]


@dataclass
class PrepareReport:
    """What a prepare run produced: samples written per kind, and every skipped sample with its reason."""

    out: Path
    written: int
    tokens: int
    kinds: dict[str, int]
    skipped: list[Skip]
    encoded: int = 0  # audio files encoded in this run (cache misses)
    cached: int = 0  # audio files found in the cache in this run
    by_reason: dict[str, int] = field(default_factory=dict)
    repaired: list[dict[str, str]] = field(default_factory=list)  # corrupt cache entries, re-encoded

    def to_json(self) -> dict[str, Any]:
        report = {
            "written": self.written,
            "tokens": self.tokens,
            "kinds": self.kinds,
            "skipped_by_reason": self.by_reason,
            "skipped": [s.to_json() for s in self.skipped],
        }
        if self.repaired:  # only then, so a clean run's report stays the same bytes
            report["cache_repaired"] = self.repaired
        return report


@dataclass
class _Audio:
    """Outcome for one audio file: codes, or a skip reason."""

    codes: np.ndarray | None = None
    reason: str = ""
    detail: str = ""


def gather(inputs: Sequence[tuple[str | Path, str]], tasks: Sequence[str] = ("asr",), audio_root: Path | None = None) -> list[Item]:
    """All records of all inputs, in input order; `inputs` are (path, format) pairs."""
    items: list[Item] = []
    for path, fmt in inputs:
        items.extend(read_input(path, fmt, tasks, audio_root))
    if not items:
        raise InputError(f"found no samples in {', '.join(str(p) for p, _ in inputs)}; check the paths and --format")
    ids = Counter(i.id for i in items)
    dup = [k for k, n in ids.items() if n > 1]
    if dup:
        raise InputError(
            f"sample id {dup[0]!r} occurs {ids[dup[0]]} times; ids must be unique within one prepare run "
            "(prepare inputs that share file names into separate --out folders)"
        )
    return items


def layout_json(chat: ChatFormat) -> dict[str, Any]:
    lay = chat.layout
    return {
        "begin_of_audio": lay.begin_of_audio,
        "end_of_audio": lay.end_of_audio,
        "endoftext": lay.endoftext,
        "im_start": lay.im_start,
        "im_end": lay.im_end,
        "newline": chat.text_ids("\n"),
        "audio_offset": lay.audio_offset,
        "num_codes": lay.num_codes,
        "vocab_size": lay.vocab_size,
    }


def _fingerprint(items: Iterable[Item], settings: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for item in items:
        row = item.to_json() if isinstance(item, Skip) else [item.id, item.messages, [str(a) for a in item.audios]]
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def prepare(
    items: Sequence[Item],
    out: str | Path,
    tokenizer: Any,
    encoder: SpeechEncoder,
    codec_name: str,
    cache_dir: str | Path,
    max_seconds: float = 60.0,
    max_tokens: int = 8192,
    shard_size: int = 10000,
    batch_size: int = 16,
    workers: int = 4,
    overwrite: bool = False,
    progress: Progress | None = None,
    ranks: Ranks | None = None,
) -> PrepareReport:
    """Encode and tokenize `items` into a prepared folder; resumes a run with the same inputs and settings.

    With `ranks` (from `vita_core.ranks.process_group`) every rank calls this with the same arguments,
    encodes its share of the shards, and returns the same report; `encoded`/`cached` count all ranks.
    """
    ranks = ranks or Ranks()
    if shard_size < 1 or batch_size < 1 or workers < 1 or max_tokens < 1 or max_seconds <= 0:
        raise InputError("--shard-size, --batch-size, --workers, --max-tokens and --max-seconds must be positive")
    out = Path(out)
    chat = ChatFormat(tokenizer, layout_from_tokenizer(tokenizer))
    if int(encoder.codebook_size) != chat.layout.num_codes:
        raise InputError(f"the {codec_name} speech tokenizer has {encoder.codebook_size} codes but the tokenizer has "
                         f"{chat.layout.num_codes} audio tokens; use the tokenizer built for this codec")
    cache = CodeCache(cache_dir, codec_name)
    if out.resolve() == cache.folder.parent.resolve():
        raise InputError("--cache-dir and --out must be different folders")
    num_shards = max(1, -(-len(items) // shard_size))
    manifest = {
        "format": FORMAT,
        "codec": codec_name,
        "codes_per_second": float(encoder.codes_per_second),
        "layout": layout_json(chat),
        "max_seconds": max_seconds,
        "max_tokens": max_tokens,
        "shard_size": shard_size,
        "shards": num_shards,
    }
    manifest["fingerprint"] = _fingerprint(items, manifest)

    def claim() -> None:
        _claim_folder(out, manifest["fingerprint"], overwrite)
        write_json(out / MANIFEST, {**manifest, "complete": False})

    ranks.on_main(claim)  # the other ranks wait for it, and stop with rank 0's error if it refuses
    ranks.check_shared([out / MANIFEST], "--out")

    report = PrepareReport(out, 0, 0, {}, [])
    shards = [items[k * shard_size : (k + 1) * shard_size] for k in range(num_shards)]
    mine = [k for k in range(num_shards) if ranks.owns(k)]
    audio_total = sum(len({a for i in shards[k] if isinstance(i, Record) for a in i.audios}) for k in mine)
    items_total = sum(len(shards[k]) for k in mine)
    counts = {"audio": 0, "samples": 0}

    def tick(stage: str, n: int = 1) -> None:
        counts[stage] += n
        if progress:
            progress(stage, counts[stage], audio_total if stage == "audio" else items_total)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for index in mine:
            shard = shards[index]
            if read_shard_meta(out, index) is None:
                _prepare_shard(out, index, shard, chat, encoder, cache, pool, max_seconds, max_tokens, batch_size, report, tick)
            else:
                tick("audio", len({a for i in shard if isinstance(i, Record) for a in i.audios}))
            tick("samples", len(shard))
    ranks.barrier()
    counted = ranks.gather((report.encoded, report.cached))
    report.encoded, report.cached = sum(e for e, _ in counted), sum(c for _, c in counted)

    kinds: Counter[str] = Counter()
    for index in range(num_shards):
        meta = read_shard_meta(out, index)
        if meta is None:  # every rank finished its shards, yet this one is not here
            raise InputError(f"{out}: {shard_name(index)} of rank {index % ranks.world} is missing; --out must "
                             "be one folder that every process (and node) sees")
        kinds.update(s["kind"] for s in meta["samples"])
        report.tokens += sum(s["length"] for s in meta["samples"])
        report.skipped += [Skip(**s) for s in meta["skipped"]]
    report.kinds = dict(sorted(kinds.items()))
    report.written = sum(kinds.values())
    report.by_reason = {r: n for r in REASONS if (n := sum(s.reason == r for s in report.skipped))}

    def finish() -> None:
        write_json(out / REPORT, report.to_json())
        write_json(out / MANIFEST, {**manifest, "complete": True, "samples": report.written, "tokens": report.tokens})

    ranks.on_main(finish)  # every rank returns once the folder is complete
    return report


def _claim_folder(out: Path, fingerprint: str, overwrite: bool) -> None:
    """Reuse a folder from an interrupted run with the same inputs; refuse to mix different runs."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        manifest = out / MANIFEST
        same = manifest.is_file() and json.loads(manifest.read_text(encoding="utf-8")).get("fingerprint") == fingerprint
        if not same:
            if not overwrite:
                raise InputError(
                    f"--out {out} already holds other data (different inputs or settings); "
                    "use a new folder or pass --overwrite to replace it"
                )
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _prepare_shard(out, index, shard, chat, encoder, cache, pool, max_seconds, max_tokens, batch_size, report, tick) -> None:
    skipped: list[dict] = []
    records: list[tuple[Record, list[dict[str, str]]]] = []
    for item in shard:
        if isinstance(item, Skip):
            skipped.append(item.to_json())
            continue
        messages = apply_tts_rule(item.messages)
        problem = _check_text(messages)
        if problem:
            skipped.append(Skip(item.id, *problem).to_json())
        else:
            records.append((item, messages))
    paths = sorted({a for r, _ in records for a in r.audios})
    audio = _encode_audio(paths, encoder, cache, pool, max_seconds, batch_size, report, tick)

    ids_list, samples = [], []
    for record, messages in records:
        bad = next((audio[a] for a in record.audios if audio[a].codes is None), None)
        if bad is not None:
            skipped.append(Skip(record.id, bad.reason, bad.detail).to_json())
            continue
        ids, spans = render(chat, messages, [audio[a].codes for a in record.audios])
        if len(ids) > max_tokens:
            skipped.append(Skip(record.id, TOO_LONG, f"{len(ids)} tokens, more than --max-tokens {max_tokens}").to_json())
            continue
        ids_list.append(ids)
        samples.append({"id": record.id, "kind": kind_of(record.messages), "assistant": spans})
    order = {item.id: n for n, item in enumerate(shard)}
    skipped.sort(key=lambda s: order[s["id"]])
    write_shard(out, index, ids_list, samples, skipped)


def _check_text(messages: list[dict[str, str]]) -> tuple[str, str] | None:
    for m in messages:
        content = m["content"]
        if m["role"] != "system" and not content.replace(AUDIO_PLACEHOLDER, "").strip() and AUDIO_PLACEHOLDER not in content:
            return EMPTY_TEXT, f"a {m['role']} message has no text and no audio"
        if m["role"] == "user" and TTS_PROMPT.strip() in content and not content.replace(TTS_PROMPT, "").strip():
            return EMPTY_TEXT, "a text-to-speech request has no text after the prompt"
        if m["role"] == "assistant" and content.count(AUDIO_PLACEHOLDER) > 1:
            return INVALID, "an answer holds several audio spans; the interleaved layout allows one per answer"
    return None


def _encode_audio(paths, encoder, cache, pool, max_seconds, batch_size, report, tick) -> dict[Path, _Audio]:
    """Codes for every path: from the cache, or decoded on the pool and encoded in batches."""
    result: dict[Path, _Audio] = {}
    digests: dict[Path, str] = {}
    for path, found in zip(paths, pool.map(_probe, paths)):
        if isinstance(found, _Audio):
            result[path] = found
            tick("audio")
            continue
        digests[path] = found
        try:
            codes = cache.get(found)
        except CorruptEntry as bad:
            report.repaired.append({"audio": str(path), "entry": str(bad.path), "reason": bad.reason})
            codes = None
        if codes is not None:
            result[path] = _Audio(codes)
            report.cached += 1
            tick("audio")
    first_of: dict[str, Path] = {}  # files with equal content are decoded and encoded once
    for p in paths:
        if p not in result:
            first_of.setdefault(digests[p], p)
    misses = list(first_of.values())

    def decode(path: Path) -> np.ndarray | _Audio:
        try:
            seconds = audio_io.duration_seconds(path)
            if seconds > max_seconds:
                return _Audio(None, TOO_LONG, f"{path}: {seconds:.1f} s of audio, more than --max-seconds {max_seconds:g}")
            wav = audio_io.read_mono(path, encoder.sample_rate)
        except Exception as exc:  # soundfile raises several types for corrupt or unknown files
            return _Audio(None, UNREADABLE, f"{path}: cannot decode ({type(exc).__name__}: {exc})")
        if not len(wav):
            return _Audio(None, UNREADABLE, f"{path}: the file holds no samples")
        return wav

    batch: list[tuple[Path, np.ndarray]] = []

    def flush() -> None:
        codes_list = encoder.encode_batch([w for _, w in batch], encoder.sample_rate)
        for (path, _), codes in zip(batch, codes_list):
            codes = np.asarray(codes, dtype=np.int64)
            if not len(codes):
                result[path] = _Audio(None, UNREADABLE, f"{path}: too short for the codec (no codes)")
            else:
                cache.put(digests[path], codes)
                result[path] = _Audio(codes)
            report.encoded += 1
        tick("audio", len(batch))
        batch.clear()

    pending: deque = deque()
    todo = iter(misses)
    while True:
        while len(pending) < 2 * batch_size and (path := next(todo, None)) is not None:
            pending.append((path, pool.submit(decode, path)))
        if not pending:
            break
        path, future = pending.popleft()
        wav = future.result()
        if isinstance(wav, _Audio):
            result[path] = wav
            tick("audio")
        else:
            batch.append((path, wav))
            if len(batch) == batch_size:
                flush()
    if batch:
        flush()
    for p in paths:
        if p not in result:
            first = result[first_of[digests[p]]]
            if first.codes is not None:
                result[p] = first
                report.cached += 1
            else:
                result[p] = _Audio(None, first.reason, first.detail.replace(str(first_of[digests[p]]), str(p), 1))
            tick("audio")
    return result


def _probe(path: Path) -> str | _Audio:
    """The file's content digest, or why it cannot be used."""
    if not path.is_file():
        return _Audio(None, MISSING, f"{path}: no such file")
    try:
        return file_digest(path)
    except OSError as exc:
        return _Audio(None, UNREADABLE, f"{path}: cannot read ({exc.strerror})")


def render(chat: ChatFormat, messages: list[dict[str, str]], codes: list[np.ndarray]) -> tuple[list[int], list[list[int]]]:
    """ChatML token ids of a sample, placeholders filled in order; and [start, end) of each answer's content."""
    ids: list[int] = []
    spans: list[list[int]] = []
    audio = iter(codes)
    lay: TokenLayout = chat.layout
    for m in messages:
        ids += chat.header_ids(m["role"])
        start = len(ids)
        pieces = m["content"].split(AUDIO_PLACEHOLDER)
        for n, piece in enumerate(pieces):
            if piece:
                ids += chat.text_ids(piece)
            if n < len(pieces) - 1:
                ids += chat.part_ids(AudioCodes(next(audio)))
        if m["role"] == "assistant":
            spans.append([start, len(ids)])
        ids += [lay.im_end, *chat.text_ids("\n")]
    return ids, spans
