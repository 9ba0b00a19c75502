"""Build small stand-ins for the released files: a tokenizer with the exact VITA-Audio id layout.

Tests and `vita bench` use these so the real loading code runs without downloading anything.
"""

from __future__ import annotations

from pathlib import Path

from vita_core.tokens import NUM_AUDIO_CODES, QWEN_BASE_VOCAB
from vita_core.tokens_build import add_vita_tokens


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def build_tokenizer(folder: str | Path, plus: bool = False, num_codes: int = NUM_AUDIO_CODES,
                    text_vocab: int = QWEN_BASE_VOCAB) -> Path:
    """Save a byte-level BPE tokenizer whose special and audio ids equal the released ones.

    Base vocabulary: the 256 byte symbols, a few merges, then filler entries up to Qwen2.5's
    151643, so `<|endoftext|>` is 151643, `<|begin_of_audio|>` 151674 and `<|audio_0|>` 151685
    (151686 for the Plus layout), exactly as in the checkpoints. `num_codes` and `text_vocab`
    change the codebook and text sizes, for tests of models on another codec.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    merges = []
    for a, b in [("t", "h"), ("e", "r"), ("i", "n"), ("Ġ", "t"), ("a", "n"), ("o", "n")]:
        merges.append((a, b))
        vocab[a + b] = len(vocab)
    while len(vocab) < text_vocab:
        vocab[f"<unused_{len(vocab)}>"] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe)
    add_vita_tokens(tok, num_codes, plus)
    tok.save_pretrained(str(folder))
    return folder
