"""Build VITA-Audio tokenizers: a text tokenizer, then the specials and one token per codec code.

The layout rule of the released tokenizers: the text vocabulary first, then Qwen2.5's 22
specials (`<|endoftext|>` ...), then VITA's 20 (21 with Plus's `<|context_of_audio|>`), then
`<|audio_0|>` .. `<|audio_{N-1}|>` as the last ids, so `layout_from_tokenizer` reads every id and
the codebook size back. The tiny test tokenizer (vita_core/tiny/tokenizer.py) goes through
`add_vita_tokens`.
"""

from __future__ import annotations

from typing import Any

from vita_core.errors import InputError
from vita_core.tokens import (
    QWEN_SPECIALS,
    VITA_PLUS_SPECIALS,
    VITA_SPECIALS,
    TokenLayout,
    layout_from_tokenizer,
)


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
