"""Token-id layout of VITA-Audio checkpoints: the one place that knows token ids.

Ids are read from the tokenizer by name and checked against the model config once, at load.
Audio codes map to ids by arithmetic (`audio_offset + code`); they never travel as strings.
The number of codes is the tokenizer's too (the contiguous run of `<|audio_i|>` from
`<|audio_0|>`): 16384 in the released checkpoints (GLM-4-Voice's codebook), another number
for a model trained on another codec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

from vita_core.errors import CheckpointError, InputError

NUM_AUDIO_CODES = 16384  # GLM-4-Voice's codebook: the released checkpoints' audio tokens

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
BEGIN_OF_AUDIO = "<|begin_of_audio|>"
END_OF_AUDIO = "<|end_of_audio|>"
AUDIO_PLACEHOLDER = "<|audio|>"
CONTEXT_OF_AUDIO = "<|context_of_audio|>"
FIRST_AUDIO_CODE = "<|audio_0|>"

# Specials VITA-Audio adds after Qwen2.5's own, in this order (vita_audio/tokenizer_glm4voice.py).
VITA_SPECIALS = [
    "<|begin_of_image|>", "<|end_of_image|>", "<|context_of_image|>",
    "<|begin_of_video|>", "<|end_of_video|>", "<|context_of_video|>",
    "<|begin_of_patch|>", "<|end_of_patch|>", "<|context_of_patch|>",
    BEGIN_OF_AUDIO, END_OF_AUDIO,
    "<|begin_of_quad|>", "<|end_of_quad|>", "<|begin_of_ref|>", "<|end_of_ref|>",
    "<|begin_of_box|>", "<|end_of_box|>",
    "<|image|>", "<|video|>", AUDIO_PLACEHOLDER,
]
# The Plus (SenseVoice) variant inserts <|context_of_audio|> right after <|end_of_audio|>.
VITA_PLUS_SPECIALS = VITA_SPECIALS[:11] + [CONTEXT_OF_AUDIO] + VITA_SPECIALS[11:]

# Qwen2.5's own specials, ids 151643..151664.
QWEN_SPECIALS = [
    ENDOFTEXT, IM_START, IM_END,
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
]
QWEN_BASE_VOCAB = 151643


@dataclass(frozen=True)
class AudioCodes:
    """A span of speech codes (the codec's) inside a message; rendered as BOA + codes + EOA."""

    codes: tuple[int, ...]

    def __init__(self, codes: Sequence[int]) -> None:
        object.__setattr__(self, "codes", tuple(int(c) for c in codes))

    @property
    def length(self) -> int:
        """Positions the span fills between its begin and end tokens (as `AudioContext.length`)."""
        return len(self.codes)


@dataclass(frozen=True)
class AudioContext:
    """Continuous audio features (Plus variant) filling `length` <|context_of_audio|> slots.

    `features` (the [length, H] projected SenseVoice output) travels with the part so that the
    prompt's input embeddings can be filled in; comparisons ignore it.
    """

    length: int
    features: Any = field(default=None, compare=False, repr=False)


Part = Union[str, AudioCodes, AudioContext]


@dataclass(frozen=True)
class Message:
    """One chat turn; content is text or a list of text and audio parts."""

    role: str
    content: Union[str, Sequence[Part]]

    def parts(self) -> list[Part]:
        return [self.content] if isinstance(self.content, str) else list(self.content)


@dataclass(frozen=True)
class TokenLayout:
    """Ids the engine, data pipeline and evaluators need, computed from one tokenizer.

    Usually read off a tokenizer (`layout_from_tokenizer`); `from_dict` builds one for a
    checkpoint that carries none (benchmarks, tests, a codec with another codebook size).
    """

    endoftext: int  # <|endoftext|>: a stop id and the pad id
    im_start: int  # <|im_start|>: opens a chat turn
    im_end: int  # <|im_end|>: closes a turn; the usual stop id
    begin_of_audio: int  # <|begin_of_audio|>: opens an audio block
    end_of_audio: int  # <|end_of_audio|>: closes it
    audio_placeholder: int  # <|audio|>
    audio_offset: int  # id of <|audio_0|>: code c is id audio_offset + c
    context_of_audio: int | None  # <|context_of_audio|> of Plus tokenizers (feature slots), else None
    vocab_size: int  # ids the tokenizer defines (len(tokenizer)), not the model's padded vocab_size
    num_codes: int = NUM_AUDIO_CODES  # the codec's codebook size (GLM-4-Voice: 16384)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> "TokenLayout":
        """A layout from plain ids, checked: every special below vocab_size and outside the codes.

        `num_codes` may be left out when the codes are the last ids (the released layout rule):
        it is then `vocab_size - audio_offset`. `context_of_audio` may be left out (not Plus).
        """
        names = [f for f in cls.__dataclass_fields__ if f not in ("num_codes", "context_of_audio")]
        missing = [n for n in names if n not in fields]
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if missing or unknown:
            raise InputError(f"token layout: missing {', '.join(missing) or 'nothing'}; "
                             f"unknown {', '.join(unknown) or 'nothing'}; fields are {', '.join(cls.__dataclass_fields__)}")
        values = {n: fields[n] for n in cls.__dataclass_fields__ if n in fields}
        values.setdefault("context_of_audio", None)
        for n, v in values.items():
            if (v is not None or n != "context_of_audio") and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise InputError(f"token layout: {n} = {v!r} must be a non-negative integer id or count")
        values.setdefault("num_codes", values["vocab_size"] - values["audio_offset"])
        layout = cls(**values)
        if layout.num_codes < 1 or layout.audio_end > layout.vocab_size:
            raise InputError(f"token layout: codes {layout.audio_offset}..{layout.audio_end - 1} do not fit "
                             f"in vocab_size {layout.vocab_size}; give num_codes or a larger vocab_size")
        specials = {n: v for n, v in values.items() if n not in ("audio_offset", "vocab_size", "num_codes") and v is not None}
        for n, v in specials.items():
            if v >= layout.vocab_size or layout.is_audio_code(v):
                raise InputError(f"token layout: {n} = {v} must be below vocab_size {layout.vocab_size} "
                                 f"and outside the audio codes {layout.audio_offset}..{layout.audio_end - 1}")
        if len(set(specials.values())) != len(specials):
            raise InputError(f"token layout: special ids must differ, got {specials}")
        return layout

    @property
    def is_plus(self) -> bool:
        return self.context_of_audio is not None

    @property
    def audio_end(self) -> int:
        """One past the last audio-code id."""
        return self.audio_offset + self.num_codes

    @property
    def stop_ids(self) -> tuple[int, int]:
        return (self.im_end, self.endoftext)

    def code_to_id(self, code: int) -> int:
        if not 0 <= code < self.num_codes:
            raise InputError(f"audio code {code} is outside 0..{self.num_codes - 1}")
        return self.audio_offset + code

    def id_to_code(self, token_id: int) -> int:
        if not self.is_audio_code(token_id):
            raise ValueError(f"token id {token_id} is not an audio code")
        return token_id - self.audio_offset

    def is_audio_code(self, token_id: int) -> bool:
        return self.audio_offset <= token_id < self.audio_end

    def codes_to_ids(self, codes: Sequence[int]) -> list[int]:
        return [self.code_to_id(int(c)) for c in codes]

    def check_config(self, vocab_size: int, where: str = "config.json") -> None:
        """Fail at load if the model's vocabulary cannot hold every id of this tokenizer."""
        if vocab_size < self.audio_end:
            raise CheckpointError(
                f"{where} has vocab_size {vocab_size} but the tokenizer's last audio code is id "
                f"{self.audio_end - 1}; the tokenizer and the weights come from different checkpoints"
            )


def _id(tokenizer: Any, token: str) -> int | None:
    tid = tokenizer.convert_tokens_to_ids(token)
    # an unknown token maps to the unk id, which in Qwen's tokenizer is <|endoftext|> itself
    if tid is None or tokenizer.convert_ids_to_tokens(int(tid)) != token:
        return None
    return int(tid)


def count_audio_codes(tokenizer: Any, offset: int) -> int:
    """How many `<|audio_i|>` follow `<|audio_0|>` at `offset` with consecutive ids (the codebook size).

    One batched id -> token lookup over the ids from `offset` on, so counting 16384 codes stays cheap.
    """
    tokens = tokenizer.convert_ids_to_tokens(list(range(offset, len(tokenizer))))
    for index, token in enumerate(tokens):
        if token != f"<|audio_{index}|>":
            return index
    return len(tokens)


def layout_from_tokenizer(tokenizer: Any) -> TokenLayout:
    """Read the layout off a loaded tokenizer; fail clearly if it is not a VITA-Audio one.

    The codebook size is the run of consecutive `<|audio_i|>` ids from `<|audio_0|>`; a code token
    past that run (an id out of order) means the tokenizer is not built by the layout rule.
    """
    ids = {}
    for name in (ENDOFTEXT, IM_START, IM_END, BEGIN_OF_AUDIO, END_OF_AUDIO, AUDIO_PLACEHOLDER, FIRST_AUDIO_CODE):
        tid = _id(tokenizer, name)
        if tid is None:
            raise CheckpointError(
                f"the tokenizer has no {name} token; point --model at a VITA-Audio checkpoint folder "
                "(its tokenizer adds the audio tokens)"
            )
        ids[name] = tid
    offset = ids[FIRST_AUDIO_CODE]
    num_codes = count_audio_codes(tokenizer, offset)
    if _id(tokenizer, f"<|audio_{num_codes}|>") is not None:
        raise CheckpointError(
            f"the tokenizer's audio codes are not contiguous from id {offset}; it is not a VITA-Audio tokenizer"
        )
    return TokenLayout(
        endoftext=ids[ENDOFTEXT],
        im_start=ids[IM_START],
        im_end=ids[IM_END],
        begin_of_audio=ids[BEGIN_OF_AUDIO],
        end_of_audio=ids[END_OF_AUDIO],
        audio_placeholder=ids[AUDIO_PLACEHOLDER],
        audio_offset=offset,
        context_of_audio=_id(tokenizer, CONTEXT_OF_AUDIO),
        vocab_size=len(tokenizer),
        num_codes=num_codes,
    )


def load_tokenizer(folder: str | Path) -> Any:
    """Load the tokenizer shipped in a checkpoint folder (tokenizer.json + tokenizer_config.json).

    A Qwen2 config is passed so transformers does not read the folder's config.json, whose
    model_type (`qwen2_mtp`) it does not know and warns about on every load.
    """
    from transformers import AutoTokenizer, Qwen2Config

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file() and not (folder / "vocab.json").is_file():
        raise CheckpointError(
            f"{folder} has no tokenizer (tokenizer.json or vocab.json); point --model at a VITA-Audio checkpoint folder"
        )
    return AutoTokenizer.from_pretrained(str(folder), config=Qwen2Config())


class ChatFormat:
    """ChatML rendering straight to ids: text through the tokenizer, specials and codes by id."""

    def __init__(self, tokenizer: Any, layout: TokenLayout) -> None:
        self.tokenizer = tokenizer
        self.layout = layout
        self._newline = self.text_ids("\n")

    def text_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def part_ids(self, part: Part) -> list[int]:
        lay = self.layout
        if isinstance(part, str):
            return self.text_ids(part)
        if isinstance(part, AudioCodes):
            return [lay.begin_of_audio, *lay.codes_to_ids(part.codes), lay.end_of_audio]
        if isinstance(part, AudioContext):
            if lay.context_of_audio is None:
                raise InputError("continuous audio input needs a Plus (SenseVoice) checkpoint")
            return [lay.begin_of_audio, *([lay.context_of_audio] * part.length), lay.end_of_audio]
        raise TypeError(f"unsupported message part {type(part).__name__}")

    def header_ids(self, role: str) -> list[int]:
        return [self.layout.im_start, *self.text_ids(role), *self._newline]

    def message_ids(self, message: Message) -> list[int]:
        ids = self.header_ids(message.role)
        for part in message.parts():
            ids += self.part_ids(part)
        return ids + [self.layout.im_end, *self._newline]

    def encode(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """ChatML without a default system message, as the reference's inference template."""
        if not messages:
            raise InputError("a prompt needs at least one message")
        ids: list[int] = []
        for message in messages:
            ids += self.message_ids(message)
        if add_generation_prompt:
            ids += self.header_ids("assistant")
        return ids

    def decode_text(self, ids: Sequence[int]) -> str:
        """Text of a generated sequence: audio codes and special tokens dropped."""
        text_ids = [i for i in ids if i < self.layout.audio_offset]
        return self.tokenizer.decode(text_ids, skip_special_tokens=True)
