"""Spoken-QA runs: answers come from an injected callable (resumable, saved per item) or from files the
user already has; the speech answers are transcribed with any Transcriber; both streams are judged.

Items without an answer are counted, not dropped (the reference drops those without audio)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from vita_core.eval.asr import Progress, Transcriber
from vita_core.eval.datasets import AudioItem, read_hypotheses
from vita_core.eval.sqa import SqaScore, judge
from vita_core.eval.transcribe import transcribe_files
from vita_core.eval.wavs import is_complete_wav, write_text, write_wav
from vita_core.ranks import Ranks


@dataclass(frozen=True)
class SpokenAnswer:
    text: str
    wav: np.ndarray | None
    sample_rate: int


Answer = Callable[[AudioItem], SpokenAnswer]
"""answer(question) -> the model's text output and its speech output (None: no audio) for its audio."""


def answer_all(items: list[AudioItem], answer: Answer, out_dir: Path, progress: Progress | None = None,
               ranks: Ranks | None = None) -> None:
    """Save `<out_dir>/text/<id>.txt` and `<out_dir>/speech/<id>.wav` for items not answered yet (resumable).

    A reply without audio gets a 0-sample wav, so it is counted as "empty" rather than forgotten.
    With `ranks`, item n is rank n % world's, and every rank returns once all are saved.
    """
    ranks = ranks or Ranks()
    out_dir = Path(out_dir)
    todo = [
        i
        for n, i in enumerate(items)
        if ranks.owns(n)
        and not ((out_dir / "text" / f"{i.id}.txt").is_file() and is_complete_wav(out_dir / "speech" / f"{i.id}.wav"))
    ]
    for n, item in enumerate(todo, 1):
        reply = answer(item)
        wav = reply.wav if reply.wav is not None else np.zeros(0, dtype=np.float32)
        write_wav(out_dir / "speech" / f"{item.id}.wav", wav, reply.sample_rate)
        write_text(out_dir / "text" / f"{item.id}.txt", reply.text)  # last: marks the item finished
        if progress:
            progress(n, len(todo))
    ranks.barrier()


def load_text_answers(path: Path) -> dict[str, str]:
    """Text answers from an `id text` file or a folder of `<id>.txt` (as `answer_all` writes)."""
    path = Path(path)
    if path.is_dir():
        return {p.stem: p.read_text(encoding="utf-8").strip() for p in sorted(path.glob("*.txt"))}
    return read_hypotheses(path)


def transcribe_speech(
    items: list[AudioItem], speech_dir: Path, transcriber: Transcriber, progress: Progress | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """Transcripts of `<speech_dir>/<id>.wav` by id, and the status ("missing"/"empty") of those without one."""
    return transcribe_files(transcriber, {i.id: Path(speech_dir) / f"{i.id}.wav" for i in items}, progress)


def judge_streams(items: list[AudioItem], text: dict[str, str] | None, speech: dict[str, str] | None) -> list[SqaScore]:
    """S->T (text output) and S->S (transcript of the speech output) accuracies, for the streams given."""
    qa = [(i.id, i.text) for i in items]
    streams = [("S->T text", text), ("S->S transcript", speech)]
    return [judge(name, qa, preds) for name, preds in streams if preds is not None]
