"""Text normalisers of the public scorers, reproduced quirk for quirk.

* Seed-TTS (`run_wer.py:process_one`): delete zhon + ASCII punctuation except ASCII `'`,
  collapse double spaces once, then zh -> one token per character (case kept), en -> lower case.
* WeNet `compute-wer.py --char=1` / `compute-cer.py --char=1` (VITA-Audio's ASR metric).
* Whisper's `EnglishTextNormalizer` (openai-whisper), for a second, labelled English figure.

The punctuation set is zhon 2.x's (pinned in pyproject), which includes the full-width full stop
U+FF0E; zhon 1.1.5 lacks it. A fresh install of the reference scorer today gets zhon 2.x, so we match that.
"""

from __future__ import annotations

import string
import unicodedata
from functools import lru_cache

import jiwer
import zhconv
from zhon.hanzi import punctuation as _ZHON_PUNCTUATION

from vita_core.errors import InputError

LANGS = ("en", "zh")

_SEEDTTS_DELETE = str.maketrans("", "", "".join(sorted(set(_ZHON_PUNCTUATION + string.punctuation) - {"'"})))


def check_lang(lang: str) -> str:
    """Return `lang` if the protocols know it, else raise an InputError naming the choices."""
    if lang not in LANGS:
        raise InputError(f"unknown language {lang!r}: use one of {', '.join(LANGS)}")
    return lang


def seedtts_normalize(text: str, lang: str) -> str:
    """Normalise one side of a pair exactly as Seed-TTS `process_one` does (same for ref and hyp).

    Punctuation is deleted, not replaced by a space (`well-known` -> `wellknown`); curly `’` is
    deleted but ASCII `'` kept; NBSP survives; zh keeps case and spaces every character.
    """
    check_lang(lang)
    text = text.translate(_SEEDTTS_DELETE).replace("  ", " ")
    if lang == "zh":
        return " ".join(text)
    return text.lower()


def seedtts_tokens(normalized: str) -> list[str]:
    """Split a normalised string as jiwer's default WER transform does: `\\s\\s+` -> ' ', strip, split on ' '."""
    return jiwer.wer_default(normalized)[0]


def seedtts_hypothesis(raw_asr_text: str, lang: str) -> str:
    """Post-process an ASR transcript as the protocol does before scoring: zh -> simplified (hypothesis only)."""
    return zhconv.convert(raw_asr_text, "zh-cn") if check_lang(lang) == "zh" else raw_asr_text


# ---- WeNet compute-wer.py / compute-cer.py (--char=1, case-insensitive, tags removed) ----

_WENET_PUNCTS = frozenset("!,?、。！，；？：「」︰『』《》")
_WENET_SPACES = frozenset(" \t\r\n")


def _characterize(text: str) -> list[str]:
    """WeNet's `characterize`: CJK letters one by one, other runs up to a space or non-ASCII char.

    Punctuation from the list is dropped only where a token would start, so `hello,` stays one token.
    """
    tokens: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in _WENET_PUNCTS:
            i += 1
            continue
        category = unicodedata.category(char)
        if category in ("Zs", "Cn") or char in _WENET_SPACES:
            i += 1
            continue
        if category == "Lo":
            tokens.append(char)
            i += 1
            continue
        sep = ">" if char == "<" else " "
        j = i + 1
        while j < len(text):
            c = text[j]
            if ord(c) >= 128 or c in _WENET_SPACES or c == sep:
                break
            j += 1
        if j < len(text) and text[j] == ">":
            j += 1
        tokens.append(text[i:j])
        i = j
    return tokens


def _strip_tags(token: str) -> str:
    """WeNet's `stripoff_tags`: drop every `<...>` span (an unclosed `<` drops the rest)."""
    out = []
    i = 0
    while i < len(token):
        if token[i] == "<":
            while i < len(token) and token[i] != ">":
                i += 1
            i += 1
        else:
            out.append(token[i])
            i += 1
    return "".join(out)


def wenet_tokens(text: str, split_alnum: bool = False) -> list[str]:
    """Tokens as WeNet `compute-wer.py --char=1` sees them (`split_alnum`: `compute-cer.py`, letters one by one).

    Upper-cased, `<tags>` removed, no other English normalisation.
    """
    tokens: list[str] = []
    for token in _characterize(text):
        token = _strip_tags(token.upper())
        if not token:
            continue
        if split_alnum and token.isalnum():
            tokens.extend(token)
        else:
            tokens.append(token)
    return tokens


@lru_cache(maxsize=1)
def _english_normalizer():
    try:
        from whisper.normalizers import EnglishTextNormalizer
    except ImportError as exc:
        raise InputError(
            "openai-whisper is not installed: run `pip install --no-deps openai-whisper` "
            "(its other dependencies come with vita)"
        ) from exc
    return EnglishTextNormalizer()


def whisper_english_tokens(text: str) -> list[str]:
    """Words after Whisper's EnglishTextNormalizer (numbers, spellings, contractions standardised)."""
    return _english_normalizer()(text).split()
