"""Readers for the list formats the evaluations take: Seed-TTS meta.lst, pair TSVs, hypothesis files,
LibriSpeech folders, Kaldi data folders and spoken-QA jsonl. Each raises InputError naming the line to fix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vita_core.errors import InputError
from vita_core.eval.scoring import Pair


@dataclass(frozen=True)
class MetaItem:
    """One Seed-TTS test line: synthesise `text` in the voice of `prompt_wav`, saved as `<id>.wav`."""

    id: str
    text: str
    prompt_text: str
    prompt_wav: Path | None


@dataclass(frozen=True)
class AudioItem:
    """One utterance of an ASR set (or one spoken question): audio file and reference text(s)."""

    id: str
    audio: Path
    text: str | list[str]


def _lines(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason}); re-save it as UTF-8") from exc


def read_seedtts_meta(path: Path) -> list[MetaItem]:
    """Parse `utt|prompt_text|prompt_wav|text[|gt_wav]` lines (also the 2- and 3-field forms the scorer accepts).

    As in `get_wav_res_ref_text.py` the whole line is stripped, 3-field ids lose a `.wav` suffix and a
    relative prompt path is taken from the meta file's folder.
    """
    path = Path(path)
    items = []
    for n, line in enumerate(_lines(path), 1):
        fields = line.strip().split("|")
        if fields == [""]:
            continue
        prompt_text, prompt_wav = "", None
        if len(fields) in (4, 5):
            utt, prompt_text, prompt_wav, text = fields[:4]
        elif len(fields) == 2:
            utt, text = fields
        elif len(fields) == 3:
            utt, text, prompt_wav = fields
            utt = utt[:-4] if utt.endswith(".wav") else utt
        else:
            raise InputError(
                f"{path}:{n}: expected 2 to 5 '|'-separated fields (utt|prompt_text|prompt_wav|text), got {len(fields)}"
            )
        wav = (
            None
            if prompt_wav is None
            else (path.parent / prompt_wav if not Path(prompt_wav).is_absolute() else Path(prompt_wav))
        )
        items.append(MetaItem(utt, text, prompt_text, wav))
    if not items:
        raise InputError(f"{path}: no test lines")
    _check_unique([i.id for i in items], path)
    return items


def _check_unique(ids: list[str], path: Path) -> None:
    seen: set[str] = set()
    for item_id in ids:
        if item_id in seen:
            raise InputError(f"{path}: id {item_id!r} appears twice; ids must be unique")
        seen.add(item_id)


PAIRS_HEADER = ({"id", "utt", "utt_id", "uttid", "key", "name"}, {"reference", "ref", "text", "truth"},
                {"hypothesis", "hyp", "prediction", "pred", "asr"})


def is_pairs_header(fields: list[str]) -> bool:
    """Whether a first row names the columns (id, reference, hypothesis) rather than holding an utterance."""
    return len(fields) == 3 and all(f.strip().lower() in names for f, names in zip(fields, PAIRS_HEADER))


def read_pairs_tsv(path: Path) -> list[Pair]:
    """`id<TAB>reference<TAB>hypothesis` per line (an empty hypothesis is allowed: `id<TAB>ref<TAB>`);
    a first line naming the columns (`id<TAB>reference<TAB>hypothesis`, `utt<TAB>ref<TAB>hyp`, ...) is skipped."""
    pairs = []
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if not pairs and is_pairs_header(fields):
            continue
        if len(fields) != 3:
            raise InputError(
                f"{path}:{n}: expected 3 tab-separated fields id, reference, hypothesis; got {len(fields)}"
            )
        pairs.append(Pair(*fields))
    if not pairs:
        raise InputError(f"{path}: no pairs")
    _check_unique([p.id for p in pairs], Path(path))
    return pairs


def read_hypotheses(path: Path) -> dict[str, str]:
    """Kaldi/WeNet `id text` lines (or `id<TAB>text`); a line holding only an id is an empty hypothesis."""
    hyps: dict[str, str] = {}
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        sep = "\t" if "\t" in line else " "
        item_id, _, text = line.partition(sep)
        if item_id in hyps:
            raise InputError(f"{path}:{n}: id {item_id!r} appears twice")
        hyps[item_id] = text.strip()
    return hyps


def read_librispeech(root: Path) -> list[AudioItem]:
    """Every `*.trans.txt` under `root` (`ID TEXT` lines) with its `ID.flac` (or `.wav`) beside it."""
    root = Path(root)
    trans = sorted(root.rglob("*.trans.txt"))
    if not trans:
        raise InputError(f"{root}: no *.trans.txt files and no wav.scp; give a LibriSpeech-style folder or a "
                         "Kaldi folder (wav.scp: `id path` lines, text: `id transcript` lines)")
    items = []
    for t in trans:
        for n, line in enumerate(_lines(t), 1):
            if not line.strip():
                continue
            item_id, _, text = line.partition(" ")
            audio = next(
                (t.parent / f"{item_id}{ext}" for ext in (".flac", ".wav") if (t.parent / f"{item_id}{ext}").is_file()),
                None,
            )
            if audio is None:
                raise InputError(f"{t}:{n}: no {item_id}.flac or {item_id}.wav next to it")
            items.append(AudioItem(item_id, audio, text.strip()))
    _check_unique([i.id for i in items], root)
    return items


def read_kaldi(folder: Path) -> list[AudioItem]:
    """A Kaldi data folder: `wav.scp` (`id path`, relative paths from the folder) and `text` (`id text`)."""
    folder = Path(folder)
    texts = read_hypotheses(folder / "text")
    items = []
    for n, line in enumerate(_lines(folder / "wav.scp"), 1):
        if not line.strip():
            continue
        item_id, _, location = line.strip().partition(" ")
        location = location.strip()
        if location.endswith("|"):
            raise InputError(
                f"{folder / 'wav.scp'}:{n}: piped commands are not supported; write the audio to files first"
            )
        if item_id not in texts:
            raise InputError(f"{folder / 'text'}: no reference for {item_id!r} listed in wav.scp")
        audio = Path(location) if Path(location).is_absolute() else folder / location
        items.append(AudioItem(item_id, audio, texts[item_id]))
    if not items:
        raise InputError(f"{folder / 'wav.scp'}: no entries")
    return items


def read_asr_set(path: Path) -> list[AudioItem]:
    """A Kaldi folder if it holds `wav.scp`, else a LibriSpeech-style tree."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(
            f"{path}: not a folder (give a LibriSpeech-style folder or a Kaldi folder with wav.scp and text)"
        )
    return read_kaldi(path) if (path / "wav.scp").is_file() else read_librispeech(path)


def read_sqa_jsonl(path: Path) -> list[AudioItem]:
    """Spoken-QA rows: VITA-Audio's `{"messages": [..., {"role": "assistant", "content": answers}], "audios": [wav]}`
    (id = the audio file's stem, as upstream names outputs) or `{"id", "audio", "answers"}`."""
    path = Path(path)
    items = []
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if "messages" in row:
                audio, answers = row["audios"][0], row["messages"][-1]["content"]
            else:
                audio, answers = row["audio"], row["answers"]
            item_id = row.get("id") or Path(audio).stem
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise InputError(
                f"{path}:{n}: expected {{'messages': [...], 'audios': [path]}} or {{'id', 'audio', 'answers'}} ({exc})"
            ) from exc
        if not (isinstance(answers, str) or (isinstance(answers, list) and all(isinstance(a, str) for a in answers))):
            raise InputError(f"{path}:{n}: answers must be a string or a list of strings")
        audio_path = Path(audio) if Path(audio).is_absolute() else path.parent / audio
        items.append(AudioItem(str(item_id), audio_path, answers))
    if not items:
        raise InputError(f"{path}: no questions")
    _check_unique([i.id for i in items], path)
    return items
