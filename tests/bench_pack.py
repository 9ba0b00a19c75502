"""Pack throughput and padding on a synthetic prepared corpus with a realistic length mix (not a pytest test).

    python tests/bench_pack.py --samples 120000 --seq-len 8192 --workdir /tmp/vita-bench

Mix (token counts at 12.5 audio codes/s): 40% ASR (2-20 s of speech, ~3 text tokens/s),
30% TTS (same, text repeated in the answer), 10% speech QA (3-10 s question, 30-150 token and
10-40 s spoken answer), 20% text-only (log-normal, median 400 tokens, some beyond 8192).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vita_core.data.pack import pack  # noqa: E402
from vita_core.data.prepare import layout_json  # noqa: E402
from vita_core.data.prepared import FORMAT, MANIFEST, write_json, write_shard  # noqa: E402
from vita_core.data.recipe import parse_recipe  # noqa: E402
from vita_core.tiny.tokenizer import build_tokenizer  # noqa: E402
from vita_core.tokens import ChatFormat, layout_from_tokenizer, load_tokenizer  # noqa: E402


def synthetic_sample(rng: np.random.Generator, chat: ChatFormat) -> tuple[list[int], list[list[int]], str]:
    lay = chat.layout

    def text(n: int) -> list[int]:
        return rng.integers(100, 150000, int(n)).tolist()

    def audio(seconds: float) -> list[int]:
        return [lay.begin_of_audio, *(lay.audio_offset + rng.integers(0, 16384, max(1, int(seconds * 12.5)))).tolist(), lay.end_of_audio]

    kind = rng.choice(["asr", "tts", "sqa", "text"], p=[0.4, 0.3, 0.1, 0.2])
    seconds = rng.uniform(2, 20)
    words = text(seconds * 3)
    if kind == "asr":
        user, answer = text(8) + audio(seconds), words
    elif kind == "tts":
        user, answer = text(8) + words, words + audio(seconds)
    elif kind == "sqa":
        user, answer = audio(rng.uniform(3, 10)), text(rng.integers(30, 150)) + audio(rng.uniform(10, 40))
    else:
        user, answer = text(rng.integers(10, 200)), text(min(20000, rng.lognormal(np.log(400), 1.0)))
    ids = chat.header_ids("user") + user + [lay.im_end, *chat.text_ids("\n")] + chat.header_ids("assistant")
    start = len(ids)
    ids += answer
    span = [start, len(ids)]
    ids += [lay.im_end, *chat.text_ids("\n")]
    return ids, [span], str(kind)


def make_corpus(folder: Path, n: int, chat: ChatFormat, shard_size: int = 20000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    shards = -(-n // shard_size)
    for k in range(shards):
        ids, samples = [], []
        for i in range(k * shard_size, min(n, (k + 1) * shard_size)):
            sample_ids, spans, kind = synthetic_sample(rng, chat)
            ids.append(sample_ids)
            samples.append({"id": f"syn/{i}", "kind": kind, "assistant": spans})
        write_shard(folder, k, ids, samples, [])
    write_json(folder / MANIFEST, {"format": FORMAT, "layout": layout_json(chat), "shards": shards, "complete": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=120000)
    parser.add_argument("--seq-len", type=int, default=8192)
    parser.add_argument("--ratio", default="1 10 4 10")
    parser.add_argument("--window", type=int, default=20000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vita-bench"))
    args = parser.parse_args()

    tokenizer = load_tokenizer(build_tokenizer(args.workdir / "tokenizer"))
    chat = ChatFormat(tokenizer, layout_from_tokenizer(tokenizer))
    corpus = args.workdir / f"prepared-{args.samples}"
    if not (corpus / MANIFEST).is_file():
        started = time.perf_counter()
        make_corpus(corpus, args.samples, chat)
        print(f"synthetic corpus: {args.samples} samples in {time.perf_counter() - started:.1f} s")
    recipe = parse_recipe({"seq_len": args.seq_len, "ratio": [int(x) for x in args.ratio.split()], "sources": {"syn": {"paths": [str(corpus)]}}}, args.workdir)
    report = pack(recipe, args.workdir / f"packed-{args.seq_len}", window=args.window, overwrite=True)
    print(
        f"seq_len {report.seq_len}, ratio {args.ratio}, window {args.window}: {report.samples} samples -> {report.packs} packs, "
        f"{len(report.too_long)} too long; padding {report.padding_fraction:.3%}; "
        f"{report.samples_per_second:,.0f} samples/s ({report.seconds:.1f} s, {report.real_tokens / report.seconds / 1e6:.1f} M tokens/s)"
    )


if __name__ == "__main__":
    main()
