"""Read the corpus layouts people have into `Record`s (or `Skip`s for rows that cannot be read).

Formats: the reference's jsonl (`messages` + `audios`), LibriSpeech folders (`*.trans.txt`),
LibriTTS folders (`*.normalized.txt` next to each wav), Kaldi folders (`wav.scp` + `text`),
Common Voice tsv (`path` and `sentence` columns, audio under `clips/`), and plain
`path<TAB>text` lists. Paired formats become one ASR and/or TTS sample per utterance.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator, Sequence, Union

from vita_core.data.tasks import EMPTY_TEXT, INVALID, ROLE_ALIASES, TASKS, Record, Skip, pair_record
from vita_core.errors import InputError
from vita_core.tokens import AUDIO_PLACEHOLDER

FORMATS = ("auto", "jsonl", "librispeech", "libritts", "kaldi", "commonvoice", "list")

Item = Union[Record, Skip]


def detect_format(path: Path) -> str:
    """Guess the layout of an input from its name and contents."""
    if path.is_dir():
        if (path / "wav.scp").is_file():
            return "kaldi"
        if next(path.rglob("*.trans.txt"), None) is not None:
            return "librispeech"
        if next(path.rglob("*.normalized.txt"), None) is not None:
            return "libritts"
        raise InputError(
            f"{path} is a folder but not a LibriSpeech, LibriTTS or Kaldi corpus "
            "(no *.trans.txt, *.normalized.txt or wav.scp); give --format or point at the right folder"
        )
    if path.suffix in (".jsonl", ".json"):
        return "jsonl"
    if path.suffix == ".tsv":
        with path.open(encoding="utf-8") as f:
            header = f.readline().rstrip("\n").split("\t")
        if "path" in header and "sentence" in header:
            return "commonvoice"
    return "list"


def read_input(path: str | Path, fmt: str = "auto", tasks: Sequence[str] = ("asr",), audio_root: Path | None = None) -> Iterator[Item]:
    """Records of one input in a stable order; `tasks` applies to paired (audio, text) formats."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise InputError(f"unknown task {bad or tasks}; use asr and/or tts")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "jsonl":
        yield from read_jsonl(path, audio_root)
        return
    pairs = {
        "librispeech": _librispeech,
        "libritts": _libritts,
        "kaldi": _kaldi,
        "commonvoice": _commonvoice,
        "list": _plain_list,
    }[fmt](path)
    for utt_id, audio, text in pairs:
        text = " ".join(text.split())
        for task in tasks:
            if not text:
                yield Skip(f"{task}/{utt_id}", EMPTY_TEXT, f"{audio}: the transcript is empty")
            else:
                yield pair_record(utt_id, audio, text, task)


def read_jsonl(path: Path, audio_root: Path | None = None) -> Iterator[Item]:
    """Rows of the reference format; relative audio paths are taken from `audio_root` (default: the file's folder)."""
    root = audio_root or path.parent
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row_id = f"{path.stem}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield Skip(row_id, INVALID, f"{path}:{n}: not JSON ({exc.msg})")
                continue
            yield _row_record(row, row_id, root, f"{path}:{n}")


def _row_record(row: object, row_id: str, root: Path, where: str) -> Item:
    if not isinstance(row, dict):
        return Skip(row_id, INVALID, f"{where}: a row must be a JSON object")
    row_id = str(row.get("id", row_id))
    raw = row.get("messages") or row.get("conversations")
    if not isinstance(raw, list) or not raw:
        return Skip(row_id, INVALID, f"{where}: no 'messages' list")
    messages = []
    for m in raw:
        if not isinstance(m, dict) or m.get("role") not in ROLE_ALIASES or not isinstance(m.get("content"), str):
            return Skip(row_id, INVALID, f"{where}: each message needs a role (user, assistant, system) and text content")
        messages.append({"role": ROLE_ALIASES[m["role"]], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in messages):
        return Skip(row_id, INVALID, f"{where}: no assistant message to learn from")
    audios = row.get("audios") or []
    if not isinstance(audios, list) or not all(isinstance(a, str) for a in audios):
        return Skip(row_id, INVALID, f"{where}: 'audios' must be a list of paths")
    placeholders = sum(m["content"].count(AUDIO_PLACEHOLDER) for m in messages)
    if placeholders != len(audios):
        return Skip(row_id, INVALID, f"{where}: {placeholders} {AUDIO_PLACEHOLDER} placeholders but {len(audios)} audios")
    return Record(row_id, messages, [root / a for a in audios])


def _librispeech(folder: Path) -> Iterator[tuple[str, Path, str]]:
    for trans in sorted(folder.rglob("*.trans.txt")):
        with trans.open(encoding="utf-8") as f:
            for line in f:
                utt_id, _, text = line.rstrip("\n").partition(" ")
                if utt_id:
                    yield utt_id, trans.parent / f"{utt_id}.flac", text


def _libritts(folder: Path) -> Iterator[tuple[str, Path, str]]:
    for norm in sorted(folder.rglob("*.normalized.txt")):
        utt_id = norm.name[: -len(".normalized.txt")]
        yield utt_id, norm.parent / f"{utt_id}.wav", norm.read_text(encoding="utf-8")


def _kaldi(folder: Path) -> Iterator[tuple[str, Path, str]]:
    text_file = folder / "text"
    if not text_file.is_file():
        raise InputError(f"{folder} has wav.scp but no 'text' file with transcripts")
    texts = dict(_two_columns(text_file, " "))
    for utt_id, location in _two_columns(folder / "wav.scp", " "):
        if location.endswith("|"):
            raise InputError(
                f"{folder / 'wav.scp'}: utterance {utt_id} is a command pipe; write the audio to files "
                "(e.g. with Kaldi's wav-copy) and list their paths"
            )
        path = Path(location)
        yield utt_id, path if path.is_absolute() else folder / path, texts.get(utt_id, "")


def _commonvoice(tsv: Path) -> Iterator[tuple[str, Path, str]]:
    with tsv.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            name = row.get("path") or ""
            yield Path(name).stem, tsv.parent / "clips" / name, row.get("sentence") or ""


def _plain_list(path: Path) -> Iterator[tuple[str, Path, str]]:
    for n, (location, text) in enumerate(_two_columns(path, "\t"), 1):
        audio = Path(location)
        yield f"{path.stem}:{n}", audio if audio.is_absolute() else path.parent / audio, text


def _two_columns(path: Path, sep: str) -> Iterator[tuple[str, str]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, found, value = line.partition(sep)
            if not found and sep == "\t":
                raise InputError(f"{path}:{n}: expected 'audio path<TAB>text'")
            yield key.strip(), value
