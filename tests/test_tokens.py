"""Token layout: the ids of the released checkpoints, computed from the tokenizer."""

import re

import pytest

from vita_core.errors import CheckpointError, InputError
from vita_core.tokens import AudioCodes, ChatFormat, Message, TokenLayout, layout_from_tokenizer


def test_boost_balance_layout(tokenizer):
    lay = layout_from_tokenizer(tokenizer)
    assert (lay.endoftext, lay.im_start, lay.im_end) == (151643, 151644, 151645)
    assert (lay.begin_of_audio, lay.end_of_audio, lay.audio_placeholder) == (151674, 151675, 151684)
    assert lay.audio_offset == 151685 and lay.audio_end == 151685 + 16384
    assert lay.context_of_audio is None and not lay.is_plus
    assert lay.code_to_id(0) == 151685 and lay.id_to_code(151685 + 16383) == 16383


def test_plus_layout_is_shifted_by_one(plus_tokenizer):
    lay = layout_from_tokenizer(plus_tokenizer)
    assert lay.context_of_audio == 151676
    assert lay.audio_placeholder == 151685 and lay.audio_offset == 151686


def test_code_range_and_config_check(tokenizer):
    lay = layout_from_tokenizer(tokenizer)
    with pytest.raises(InputError, match="outside"):
        lay.code_to_id(16384)
    lay.check_config(168072)
    with pytest.raises(CheckpointError, match="vocab_size 152064"):
        lay.check_config(152064)


def test_chat_template_with_generation_prompt(tokenizer):
    lay = layout_from_tokenizer(tokenizer)
    chat = ChatFormat(tokenizer, lay)
    ids = chat.encode([Message("user", ["Convert the speech to text.\n", AudioCodes([0, 7])])])
    text = tokenizer.decode(ids)
    assert text == (
        "<|im_start|>user\nConvert the speech to text.\n<|begin_of_audio|><|audio_0|><|audio_7|>"
        "<|end_of_audio|><|im_end|>\n<|im_start|>assistant\n"
    )
    assert ids[-1 - len(chat.text_ids("assistant\n")) :] == [lay.im_start, *chat.text_ids("assistant\n")]
    boa = ids.index(lay.begin_of_audio)
    assert ids[boa : boa + 4] == [lay.begin_of_audio, lay.audio_offset, lay.audio_offset + 7, lay.end_of_audio]
    assert chat.decode_text(ids) == "user\nConvert the speech to text.\n\nassistant\n"


def test_a_tokenizer_without_audio_tokens_is_refused(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "<|endoftext|>": 1}, unk_token="<|endoftext|>")))
    plain.unk_token = "<|endoftext|>"
    with pytest.raises(CheckpointError, match=re.escape("has no <|im_start|> token")):
        layout_from_tokenizer(plain)


SMALL = dict(endoftext=0, im_start=1, im_end=2, begin_of_audio=3, end_of_audio=4, audio_placeholder=5,
             audio_offset=300, vocab_size=812)


def test_layout_from_a_plain_dict_for_a_small_vocab():
    lay = TokenLayout.from_dict(SMALL)
    assert lay.num_codes == 512 and lay.audio_end == 812 and lay.context_of_audio is None
    assert lay.code_to_id(511) == 811 and not lay.is_plus
    assert TokenLayout.from_dict({**SMALL, "num_codes": 100}).audio_end == 400


def test_released_layout_from_dict_equals_the_tokenizers(tokenizer):
    lay = layout_from_tokenizer(tokenizer)
    fields = {k: v for k, v in lay.__dict__.items() if k != "num_codes"}
    assert TokenLayout.from_dict(fields) == lay


@pytest.mark.parametrize("change,message", [
    ({"vocab_size": None}, "vocab_size = None must be a non-negative integer"),
    ({"num_codes": 600}, "do not fit in vocab_size 812"),
    ({"im_end": 400}, "im_end = 400 must be below vocab_size 812 and outside the audio codes"),
    ({"im_end": 1}, "special ids must differ"),
    ({"codes": 5}, "unknown codes"),
])
def test_layout_dict_errors_name_the_field(change, message):
    fields = {**SMALL, **change}
    with pytest.raises(InputError, match=re.escape(message)):
        TokenLayout.from_dict(fields)
    with pytest.raises(InputError, match="missing im_start"):
        TokenLayout.from_dict({k: v for k, v in SMALL.items() if k != "im_start"})


def test_layout_counts_the_codes_of_another_codec(small_tokenizer):
    lay = layout_from_tokenizer(small_tokenizer)
    assert (lay.endoftext, lay.im_start, lay.begin_of_audio, lay.audio_placeholder) == (300, 301, 331, 341)
    assert lay.audio_offset == 342 and lay.num_codes == 1000 and lay.audio_end == lay.vocab_size == 1342
    assert lay.code_to_id(999) == 1341
    with pytest.raises(InputError, match=re.escape("audio code 1000 is outside 0..999")):
        lay.code_to_id(1000)
    chat = ChatFormat(small_tokenizer, lay)
    ids = chat.encode([Message("assistant", ["hi", AudioCodes([0, 999])])], add_generation_prompt=False)
    assert small_tokenizer.decode(ids).endswith("hi<|begin_of_audio|><|audio_0|><|audio_999|><|end_of_audio|><|im_end|>\n")
    lay.check_config(1344)
    with pytest.raises(CheckpointError, match="last audio code is id 1341"):
        lay.check_config(1341)


def test_an_audio_code_out_of_order_is_refused(tmp_path):
    from vita_core.tiny.tokenizer import build_tokenizer
    from vita_core.tokens import load_tokenizer

    tok = load_tokenizer(build_tokenizer(tmp_path / "t", num_codes=10, text_vocab=300))
    assert layout_from_tokenizer(tok).num_codes == 10
    tok.add_tokens(["<|filler|>", "<|audio_10|>"])  # code 10 exists, but not right after code 9
    with pytest.raises(CheckpointError, match=re.escape("audio codes are not contiguous from id 342")):
        layout_from_tokenizer(tok)
