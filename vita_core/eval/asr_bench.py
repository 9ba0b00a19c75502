"""ASR benchmark sets (LibriSpeech folders, Kaldi lists): transcribe with any Transcriber, or take existing
hypotheses, and report corpus WER as WeNet `compute-wer.py --char=1` (VITA-Audio's metric), plus a
Whisper-EnglishTextNormalizer figure for English. Utterances without a hypothesis are counted, never dropped."""

from __future__ import annotations

from vita_core.eval.asr import Progress, Transcriber
from vita_core.eval.datasets import AudioItem
from vita_core.eval.scoring import CorpusScore, Pair, score_pairs
from vita_core.eval.transcribe import transcribe_files
from vita_core.ranks import Ranks


def transcribe_items(
    items: list[AudioItem], transcriber: Transcriber, progress: Progress | None = None, ranks: Ranks | None = None
) -> dict[str, str]:
    """Transcript of every item's audio, by id; an unreadable file raises, a missing one has no transcript.

    With `ranks` each rank transcribes items n % world == rank and every rank gets all transcripts: only
    for a transcriber that takes one utterance at a time, whose output cannot depend on the split.
    """
    ranks = ranks or Ranks()
    mine = {i.id: i.audio for n, i in enumerate(items) if ranks.owns(n)}
    texts: dict[str, str] = {}
    for part in ranks.gather(transcribe_files(transcriber, mine, progress)[0]):
        texts.update(part)
    return texts


def score_asr_set(
    items: list[AudioItem], hypotheses: dict[str, str], lang: str, missing_as_error: bool = False
) -> list[CorpusScore]:
    """WeNet corpus WER (and the Whisper-normalised WER for en) of `hypotheses` against the items' texts."""
    pairs = [Pair(i.id, str(i.text), hypotheses.get(i.id)) for i in items]
    return score_pairs(pairs, "wer", lang, missing_as_error)
