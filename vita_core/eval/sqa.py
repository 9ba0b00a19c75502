"""Spoken-QA accuracy: the reference's lenient "contain" rule and a stricter exact-phrase rule.

`contain` reproduces VITA-Audio `evaluation/compute-acc-of-contain.py`:
the prediction is only lower-cased; each answer has ASCII punctuation except `'` replaced by a
space, is lower-cased and stripped; a hit is an answer whose every `split(" ")` piece is a
*substring* of the prediction (so `art` is found in `start`, and an empty piece always matches).
If word2number parses every answer, the digit forms are tried too (one unparsable answer turns
the fallback off for all of them, as in the reference).

`exact` is stricter: prediction and answer both go through Whisper's EnglishTextNormalizer
(lower case, punctuation out, numbers as digits) and the answer's words must appear as a
contiguous run of whole words in the prediction.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from word2number import w2n

from vita_core.eval.normalize import whisper_english_tokens

_ANSWER_PUNCT = re.compile("[" + re.escape(string.punctuation.replace("'", "")) + "]")

Answers = str | list[str]


def _as_list(answers: Answers) -> list[str]:
    return [answers] if isinstance(answers, str) else list(answers)


def _all_pieces_in(prediction: str, answer: str) -> bool:
    return all(piece in prediction for piece in answer.split(" "))


def contain_hit(prediction: str, answers: Answers) -> bool:
    """The reference's rule (see module doc)."""
    prediction = prediction.lower()
    cleaned = [_ANSWER_PUNCT.sub(" ", a).lower().strip() for a in _as_list(answers)]
    try:
        numbers = [str(w2n.word_to_num(a.lower())) for a in cleaned]
    except Exception:  # the reference falls back on any failure of word2number
        numbers = cleaned
    return any(_all_pieces_in(prediction, a) for a in cleaned) or any(_all_pieces_in(prediction, a) for a in numbers)


def exact_hit(prediction: str, answers: Answers) -> bool:
    """Stricter rule: a normalised answer occurs as whole consecutive words of the normalised prediction."""
    words = whisper_english_tokens(prediction)
    for answer in _as_list(answers):
        target = whisper_english_tokens(answer)
        if target and any(words[i : i + len(target)] == target for i in range(len(words) - len(target) + 1)):
            return True
    return False


@dataclass(frozen=True)
class SqaJudgement:
    id: str
    answers: list[str]
    prediction: str | None  # None: the model produced no output for this item
    contain: bool
    exact: bool


@dataclass
class SqaScore:
    """Accuracy of one hypothesis stream (text output or transcript of the speech output)."""

    name: str
    items: list[SqaJudgement]

    @property
    def scored(self) -> list[SqaJudgement]:
        return [j for j in self.items if j.prediction is not None]

    @property
    def missing(self) -> int:
        return len(self.items) - len(self.scored)

    def accuracy(self, rule: str, missing_as_error: bool = False) -> float | None:
        """Fraction of hits under `rule` ("contain" or "exact"); missing items count as wrong only if asked."""
        pool = self.items if missing_as_error else self.scored
        return sum(getattr(j, rule) for j in pool) / len(pool) if pool else None


def judge(name: str, items: list[tuple[str, Answers]], predictions: dict[str, str]) -> SqaScore:
    """Judge each (id, answers) against `predictions[id]`; ids without a prediction are kept as missing."""
    out = []
    for item_id, answers in items:
        pred = predictions.get(item_id)
        hit_c = pred is not None and contain_hit(pred, answers)
        hit_e = pred is not None and exact_hit(pred, answers)
        out.append(SqaJudgement(item_id, _as_list(answers), pred, hit_c, hit_e))
    return SqaScore(name, out)
