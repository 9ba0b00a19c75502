"""Seed-TTS WER/CER over folders of generated wavs, one folder per mode, with nothing silently dropped.

Unlike the reference (which skips utterances without a wav), every meta line is kept: a missing
or empty wav is counted and shown, and with `missing_as_error` it is scored as an empty
hypothesis (WER 1.0). Synthesis is injected, so the runner works for any TTS and resumes; under
torchrun each rank synthesizes its share of the lines into the shared folders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from vita_core.errors import InputError
from vita_core.eval.asr import Transcriber
from vita_core.eval.datasets import MetaItem
from vita_core.eval.scoring import CorpusScore, Pair, score_seedtts
from vita_core.eval.transcribe import transcribe_files
from vita_core.eval.wavs import is_complete_wav, write_wav
from vita_core.ranks import Ranks

Synthesize = Callable[[list[MetaItem], str], list[tuple[np.ndarray, int]]]
"""synthesize(lines, mode) -> one (waveform, sample_rate) per line, in order, for its text (and voice prompt);
an empty waveform means no audio. Several lines at once let a model batch them."""

StageProgress = Callable[[str, int, int], None]
"""progress(stage label, done, total)."""

BASELINE = "vanilla"


def synthesize_missing(
    items: list[MetaItem],
    out_root: Path,
    modes: list[str],
    synthesize: Synthesize,
    progress: StageProgress | None = None,
    ranks: Ranks | None = None,
    batch_size: int = 1,
) -> dict[str, Path]:
    """Write `<out_root>/<mode>/<id>.wav` for every item and mode without a complete wav yet (resumable).

    The missing lines of a mode go to `synthesize` `batch_size` at a time, and each batch's wavs are
    written as soon as it returns, so a killed run loses at most one batch. Each wav is written
    atomically; a truncated or unreadable one left by something else is redone. An empty result is
    saved as a 0-sample wav, so it is not redone and is counted as "empty". With `ranks`, line n is
    rank n % world's in every mode, and every rank returns once all are written.
    """
    if batch_size < 1:
        raise InputError(f"--synth-batch {batch_size} must be at least 1")
    ranks = ranks or Ranks()
    folders = {}
    for mode in modes:
        folder = Path(out_root) / mode
        todo = [i for n, i in enumerate(items) if ranks.owns(n) and not is_complete_wav(folder / f"{i.id}.wav")]
        written = 0
        for first in range(0, len(todo), batch_size):
            batch = todo[first : first + batch_size]
            outputs = synthesize(batch, mode)
            if len(outputs) != len(batch):
                raise ValueError(f"synthesize returned {len(outputs)} outputs for {len(batch)} lines")
            for item, (wav, sr) in zip(batch, outputs):
                write_wav(folder / f"{item.id}.wav", wav, sr)
                written += 1
                if progress:
                    progress(f"synthesize {mode}", written, len(todo))
        folders[mode] = folder
    ranks.barrier()
    return folders


def transcribe_folder(
    items: list[MetaItem], wav_dir: Path, transcriber: Transcriber, progress: Callable[[int, int], None] | None = None
) -> list[Pair]:
    """One Pair per item: the transcript of `<wav_dir>/<id>.wav`, or status missing/empty without one."""
    wav_dir = Path(wav_dir)
    if not wav_dir.is_dir():
        raise InputError(f"{wav_dir}: wav folder not found")
    texts, status = transcribe_files(transcriber, {i.id: wav_dir / f"{i.id}.wav" for i in items}, progress)
    return [Pair(i.id, i.text, texts.get(i.id), status.get(i.id, "ok")) for i in items]


@dataclass
class ModeResult:
    mode: str
    wav_dir: Path
    score: CorpusScore


@dataclass
class SeedTtsReport:
    lang: str
    asr: str
    missing_as_error: bool
    results: list[ModeResult]

    @property
    def baseline(self) -> ModeResult:
        """The mode the others are compared with: 'vanilla' if present, else the first one."""
        return next((r for r in self.results if r.mode == BASELINE), self.results[0])

    def delta(self, result: ModeResult) -> float | None:
        """Difference of `result`'s headline from the baseline's (fraction; positive = worse)."""
        a, b = result.score.value, self.baseline.score.value
        return None if a is None or b is None else a - b

    def to_dict(self) -> dict:
        return {
            "protocol": "seed-tts",
            "metric": "CER" if self.lang == "zh" else "WER",
            "aggregate": "mean of per-utterance rates",
            "lang": self.lang,
            "asr": self.asr,
            "missing_as_error": self.missing_as_error,
            "baseline": self.baseline.mode,
            "modes": [
                {"mode": r.mode, "wav_dir": str(r.wav_dir), "delta_vs_baseline": self.delta(r), **r.score.to_dict()}
                for r in self.results
            ],
        }


def run_seed_tts(
    items: list[MetaItem],
    wav_dirs: dict[str, Path],
    transcriber: Transcriber,
    lang: str,
    missing_as_error: bool = False,
    progress: StageProgress | None = None,
) -> SeedTtsReport:
    """Transcribe every mode's folder with one loaded ASR model and score it by the Seed-TTS protocol."""
    if not wav_dirs:
        raise InputError("no wav folders given: pass at least one MODE=DIR")
    for mode in wav_dirs:
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", mode) or mode == "summary":
            raise InputError(f"mode name {mode!r}: use letters, digits, '_', '.', '+' or '-' (and not 'summary')")
    results = []
    for mode, folder in wav_dirs.items():
        step = (lambda d, t, m=mode: progress(f"asr {m}", d, t)) if progress else None
        pairs = transcribe_folder(items, folder, transcriber, step)
        results.append(ModeResult(mode, Path(folder), score_seedtts(pairs, lang, missing_as_error)))
    return SeedTtsReport(lang, transcriber.name, missing_as_error, results)
