"""Build VITA-Audio tokenizers: a text tokenizer, then the specials and one token per codec code.

The layout rule of the released tokenizers: the text vocabulary first, then Qwen2.5's 22
specials (`<|endoftext|>` ...), then VITA's 20 (21 with Plus's `<|context_of_audio|>`), then
`<|audio_0|>` .. `<|audio_{N-1}|>` as the last ids, so `layout_from_tokenizer` reads every id and
the codebook size back. The tiny test tokenizer (vita_core/tiny/tokenizer.py) and vita-mini's
trained BPE (`build_text_tokenizer`) both go through `add_vita_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from vita_core.errors import InputError
from vita_core.tokens import (
    QWEN_SPECIALS,
    VITA_PLUS_SPECIALS,
    VITA_SPECIALS,
    TokenLayout,
    layout_from_tokenizer,
)

MIN_TEXT_VOCAB = 257  # the 256 byte symbols and at least one merge


def add_vita_tokens(tokenizer: Any, num_codes: int, plus: bool = False) -> TokenLayout:
    """Append the specials and `num_codes` audio tokens to a fast tokenizer, in the released order.

    Returns the layout read back from the result, after checking that every appended token got a
    new id (a text vocabulary that already holds one of them would break the id arithmetic).
    """
    _check_codes(num_codes)
    text_vocab = len(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS})
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    specials = VITA_PLUS_SPECIALS if plus else VITA_SPECIALS
    tokenizer.add_tokens(specials, special_tokens=True)
    tokenizer.add_tokens([f"<|audio_{i}|>" for i in range(num_codes)], special_tokens=False)
    expected = text_vocab + len(QWEN_SPECIALS) + len(specials) + num_codes
    if len(tokenizer) != expected:
        raise InputError(f"the text vocabulary already holds {expected - len(tokenizer)} of the special or audio "
                         "tokens; remove them from the training text")
    return layout_from_tokenizer(tokenizer)


def _check_codes(num_codes: int) -> None:
    if num_codes < 1:
        raise InputError(f"--codes {num_codes}: a codec needs at least one code")


@dataclass(frozen=True)
class TokenizerReport:
    """What `build_text_tokenizer` wrote."""

    folder: Path
    text_vocab: int  # BPE entries (bytes + merges), ids 0..text_vocab-1
    num_codes: int
    vocab_size: int  # every id: text + specials + audio codes
    audio_offset: int
    lines: int  # non-empty training lines read


def _read_lines(paths: Sequence[Path]) -> list[str]:
    lines: list[str] = []
    for path in paths:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"{path}: no such text file; give a UTF-8 text corpus, one sentence a line") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); convert it first") from None
        lines += [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{', '.join(str(p) for p in paths)}: no text to train on")
    return lines


def train_text_bpe(lines: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE (GPT-2 / Qwen style: NFC, byte-level pre-tokenizer and decoder) of `vocab_size`
    entries trained on `lines`. The `tokenizers` trainer is deterministic for the same input."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if vocab_size < MIN_TEXT_VOCAB:
        raise InputError(f"--vocab {vocab_size}: a byte-level BPE needs at least {MIN_TEXT_VOCAB} entries "
                         "(256 bytes and one merge)")
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(lines, trainer=trainer, length=len(lines))
    return bpe


def codec_codes(family: str, codec_dir: Path | None) -> int:
    """Codebook size of a codec folder (default: the family's bundled one), for a tokenizer built for it."""
    from vita_core.codec import load_encoder
    from vita_core.codec.record import bundled_folder

    folder = codec_dir if codec_dir is not None else bundled_folder(family)
    if folder is None:
        raise InputError(f"--codec {family} has no bundled folder; pass --codec-dir DIR")
    return int(load_encoder(folder, family).codebook_size)


def build_text_tokenizer(text: Path | Sequence[Path], out: Path, num_codes: int, vocab_size: int = 2048,
                         plus: bool = False, codec: str | None = None,
                         codec_dir: Path | None = None) -> TokenizerReport:
    """Train a small BPE on an English corpus and save it with the VITA layout (tokenizer.json +
    tokenizer_config.json), ready for `load_tokenizer` + `layout_from_tokenizer`. With `codec`, the
    folder also records that codec (codec.json, plus `codec_dir` copied in unless it is the bundled
    one), so models trained with this tokenizer load their codec by themselves.

    `vocab_size` counts the text entries only; the corpus may yield fewer merges (then the text
    vocabulary is smaller). Written to a temporary folder and renamed, so `out` is never half-built.
    """
    import shutil

    from transformers import PreTrainedTokenizerFast

    paths = [Path(text)] if isinstance(text, (str, Path)) else [Path(p) for p in text]
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not empty; choose another --out or remove it")
    _check_codes(num_codes)
    lines = _read_lines(paths)
    bpe = train_text_bpe(lines, vocab_size)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe)
    layout = add_vita_tokens(tok, num_codes, plus)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tok.save_pretrained(str(staging))
        if codec is not None:
            from vita_core.codec.record import write_record

            write_record(staging, codec, codec_dir)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return TokenizerReport(folder=out, text_vocab=layout.endoftext, num_codes=layout.num_codes,
                           vocab_size=layout.vocab_size, audio_offset=layout.audio_offset, lines=len(lines))
