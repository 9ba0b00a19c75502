"""Transcribe a set of output files with one loaded model, reading audio a chunk at a time."""

from __future__ import annotations

from pathlib import Path

from vita_core.eval.asr import Progress, Transcriber
from vita_core.eval.wavs import read_16k

CHUNK = 64


def transcribe_files(
    transcriber: Transcriber, paths: dict[str, Path], progress: Progress | None = None, chunk: int = CHUNK
) -> tuple[dict[str, str], dict[str, str]]:
    """Transcripts by id, and the status of ids without one: "missing" (no file) or "empty" (no samples).

    Only `chunk` files are in memory at once, so a full test set does not have to fit.
    """
    status = {i: "missing" for i, p in paths.items() if not Path(p).is_file()}
    todo = [i for i in paths if i not in status]
    texts: dict[str, str] = {}
    for start in range(0, len(todo), chunk):
        audio = {}
        for item_id in todo[start : start + chunk]:
            wav = read_16k(paths[item_id])
            if wav.size:
                audio[item_id] = wav
            else:
                status[item_id] = "empty"
        texts.update(zip(audio, transcriber.transcribe(list(audio.values()))))
        if progress:
            progress(min(start + chunk, len(todo)), len(todo))
    return texts, status
