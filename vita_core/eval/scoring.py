"""Error rates over (id, reference, hypothesis) triples.

Two aggregations, both kept and labelled, because published numbers use different ones:
* `mean`: the mean of per-utterance rates (Seed-TTS `average_wer.py`);
* `pooled`: total errors / total reference tokens (WeNet `compute-wer.py`, corpus WER).
All values are fractions (0.02 = 2 %); a per-utterance rate can exceed 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import jiwer
from rapidfuzz.distance import Levenshtein

from vita_core.errors import InputError
from vita_core.eval.normalize import (
    check_lang,
    seedtts_hypothesis,
    seedtts_normalize,
    seedtts_tokens,
    wenet_tokens,
    whisper_english_tokens,
)

PROTOCOLS = ("seed-tts", "wer", "cer")


@dataclass(frozen=True)
class Pair:
    """One reference and its hypothesis; `hypothesis` None means there was nothing to transcribe,
    and `status` says why: "missing" (no output file) or "empty" (an output with no audio)."""

    id: str
    reference: str
    hypothesis: str | None
    status: str = "ok"


@dataclass(frozen=True)
class UtteranceScore:
    id: str
    wer: float | None
    substitutions: int
    deletions: int
    insertions: int
    ref_len: int
    reference: str
    hypothesis: str
    status: str = "ok"  # ok | missing | empty; a missing/empty one has wer None unless scored as an error


@dataclass
class CorpusScore:
    """Per-utterance scores plus both aggregates over the utterances that were scored."""

    name: str
    aggregate: str  # "mean" (Seed-TTS) or "pooled" (corpus WER): which figure the protocol publishes
    utterances: list[UtteranceScore] = field(default_factory=list)

    @property
    def scored(self) -> list[UtteranceScore]:
        return [u for u in self.utterances if u.wer is not None]

    @property
    def missing(self) -> int:
        return sum(u.status == "missing" for u in self.utterances)

    @property
    def empty(self) -> int:
        return sum(u.status == "empty" for u in self.utterances)

    @property
    def mean(self) -> float | None:
        scored = self.scored
        return sum(u.wer for u in scored) / len(scored) if scored else None

    @property
    def pooled(self) -> float | None:
        scored = self.scored
        total = sum(u.ref_len for u in scored)
        errors = sum(u.substitutions + u.deletions + u.insertions for u in scored)
        return errors / total if total else None

    @property
    def value(self) -> float | None:
        """The figure the protocol publishes."""
        return self.mean if self.aggregate == "mean" else self.pooled

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "aggregate": self.aggregate,
            "value": self.value,
            "mean": self.mean,
            "pooled": self.pooled,
            "n": len(self.utterances),
            "scored": len(self.scored),
            "missing": self.missing,
            "empty": self.empty,
            "utterances": [asdict(u) for u in self.utterances],
        }


def _count(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    """Minimum-edit substitutions, deletions, insertions between two token lists."""
    ops = Levenshtein.editops(ref, hyp)
    subs = sum(op.tag == "replace" for op in ops)
    dels = sum(op.tag == "delete" for op in ops)
    return subs, dels, len(ops) - subs - dels


def _score_tokens(pair: Pair, tokenize: Callable[[str], list[str]], missing_as_error: bool) -> UtteranceScore:
    """Score one pair on token lists; an empty reference is allowed (it adds insertions only, as in WeNet)."""
    ref = tokenize(pair.reference)
    if pair.hypothesis is None and not missing_as_error:
        return UtteranceScore(pair.id, None, 0, 0, 0, len(ref), pair.reference, "", _status(pair))
    hyp = tokenize(pair.hypothesis or "")
    s, d, i = _count(ref, hyp)
    wer = (s + d + i) / len(ref) if ref else 0.0  # WeNet prints 0 for an empty reference
    return UtteranceScore(pair.id, wer, s, d, i, len(ref), pair.reference, pair.hypothesis or "", _status(pair))


def _status(pair: Pair) -> str:
    """ "ok" when there is a hypothesis, else why not ("missing" unless the pair says "empty")."""
    if pair.hypothesis is not None:
        return "ok"
    return "missing" if pair.status == "ok" else pair.status


def _score_seedtts_pair(pair: Pair, lang: str, missing_as_error: bool) -> UtteranceScore:
    """Seed-TTS `process_one` on jiwer 4's `process_words` (same transform as jiwer<4's compute_measures)."""
    truth = seedtts_normalize(pair.reference, lang)
    if not seedtts_tokens(truth):
        raise InputError(
            f"reference of {pair.id!r} is empty after Seed-TTS normalisation ({pair.reference!r}): "
            "the reference scorer crashes on it; fix or remove that line"
        )
    n_ref = len(seedtts_tokens(truth))
    if pair.hypothesis is None and not missing_as_error:
        return UtteranceScore(pair.id, None, 0, 0, 0, n_ref, pair.reference, "", _status(pair))
    hypothesis = seedtts_hypothesis(pair.hypothesis or "", lang)
    out = jiwer.process_words(truth, seedtts_normalize(hypothesis, lang))
    return UtteranceScore(
        pair.id,
        out.wer,
        out.substitutions,
        out.deletions,
        out.insertions,
        n_ref,
        pair.reference,
        hypothesis,
        _status(pair),
    )


def score_seedtts(pairs: Iterable[Pair], lang: str, missing_as_error: bool = False) -> CorpusScore:
    """Seed-TTS WER (en) / CER (zh): per-utterance rates, headline = their mean.

    zh hypotheses are converted to simplified Chinese first (the protocol does it after ASR; it is
    idempotent, so transcripts that were already converted score the same).
    """
    check_lang(lang)
    name = "seed-tts CER" if lang == "zh" else "seed-tts WER"
    return CorpusScore(name, "mean", [_score_seedtts_pair(p, lang, missing_as_error) for p in pairs])


def score_wenet(pairs: Iterable[Pair], split_alnum: bool = False, missing_as_error: bool = False) -> CorpusScore:
    """Corpus WER as WeNet `compute-wer.py --char=1` (or `compute-cer.py` with `split_alnum`); headline = pooled.

    The total error count equals WeNet's (both are minimum edit distances); the split into
    substitutions/deletions/insertions can differ where several alignments tie.
    """
    name = "CER (wenet compute-cer)" if split_alnum else "WER (wenet compute-wer)"
    return CorpusScore(
        name, "pooled", [_score_tokens(p, lambda t: wenet_tokens(t, split_alnum), missing_as_error) for p in pairs]
    )


def score_whisper_english(pairs: Iterable[Pair], missing_as_error: bool = False) -> CorpusScore:
    """Corpus WER after Whisper's EnglishTextNormalizer on both sides; headline = pooled."""
    return CorpusScore(
        "WER (whisper EnglishTextNormalizer)",
        "pooled",
        [_score_tokens(p, whisper_english_tokens, missing_as_error) for p in pairs],
    )


def score_pairs(pairs: list[Pair], protocol: str, lang: str, missing_as_error: bool = False) -> list[CorpusScore]:
    """All labelled figures a protocol reports: seed-tts -> one; wer/cer -> WeNet, plus Whisper-normalised for en."""
    check_lang(lang)
    if protocol == "seed-tts":
        return [score_seedtts(pairs, lang, missing_as_error)]
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    scores = [score_wenet(pairs, protocol == "cer", missing_as_error)]
    if lang == "en":
        scores.append(score_whisper_english(pairs, missing_as_error))
    return scores
