"""`vita tokenizer build`: a deterministic small BPE with the VITA layout, and a preset model sized by it."""

import json
import re

import pytest
from typer.testing import CliRunner

from vita_cli.main import app
from vita_core.errors import InputError
from vita_core.tokens import ChatFormat, Message, AudioCodes, layout_from_tokenizer, load_tokenizer
from vita_core.tokens_build import build_text_tokenizer

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex "
         "every jolly bishop near the old river and then another story begins").split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A few hundred seeded English-like lines (no Debian text package needed)."""
    import random

    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "." for _ in range(400)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    return path


def test_built_tokenizer_has_the_vita_layout_and_is_deterministic(tmp_path, corpus):
    report = build_text_tokenizer(corpus, tmp_path / "a", num_codes=1000, vocab_size=300)
    again = build_text_tokenizer([corpus], tmp_path / "b", num_codes=1000, vocab_size=300)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (report.text_vocab, report.num_codes, report.lines) == (300, 1000, 400) and report == again.__class__(
        **{**again.__dict__, "folder": report.folder})
    tok = load_tokenizer(tmp_path / "a")
    lay = layout_from_tokenizer(tok)
    # text 0..299, Qwen's 22 specials, VITA's 20, then the codes as the last ids
    assert (lay.endoftext, lay.im_start, lay.im_end, lay.begin_of_audio, lay.audio_placeholder) == (300, 301, 302, 331, 341)
    assert lay.audio_offset == report.audio_offset == 342 and lay.num_codes == 1000
    assert lay.vocab_size == report.vocab_size == len(tok) == 1342 and lay.context_of_audio is None
    text = "The lazy dog jumps over seven wizards."
    ids = tok.encode(text, add_special_tokens=False)
    assert max(ids) < 300 and tok.decode(ids) == text
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(tmp_path / "a" / "tokenizer.json")).encode(text).ids == ids
    assert len(ids) < len(text) and any(i >= 256 for i in ids)  # merges (ids past the 256 bytes) were learnt
    chat = ChatFormat(tok, lay)
    prompt = chat.encode([Message("user", "Convert the text to speech.\n" + text)])
    assert chat.decode_text(prompt + [lay.begin_of_audio, *lay.codes_to_ids([0, 999])]).endswith(text + "\nassistant\n")


def test_plus_layout_and_larger_codebook(tmp_path, corpus):
    build_text_tokenizer(corpus, tmp_path / "p", num_codes=15360, vocab_size=512, plus=True)
    lay = layout_from_tokenizer(load_tokenizer(tmp_path / "p"))
    text = lay.endoftext
    assert lay.context_of_audio == text + 22 + 11 and lay.audio_offset == text + 22 + 21
    assert lay.num_codes == 15360 and lay.audio_end == lay.vocab_size


@pytest.mark.parametrize("args,message", [
    (dict(num_codes=0), "--codes 0: a codec needs at least one code"),
    (dict(vocab_size=100), "--vocab 100: a byte-level BPE needs at least 257 entries"),
    (dict(text="missing.txt"), "missing.txt: no such text file"),
    (dict(text="empty.txt"), "empty.txt: no text to train on"),
    (dict(text="latin1.txt"), "latin1.txt: not UTF-8 text"),
])
def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, corpus, args, message):
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    kw = {"text": corpus, "num_codes": 10, "vocab_size": 300, **args}
    if isinstance(kw["text"], str):
        kw["text"] = tmp_path / kw["text"]
    with pytest.raises(InputError, match=re.escape(message)):
        build_text_tokenizer(out=tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_a_text_vocabulary_holding_an_audio_token_is_refused():
    """Appending must give every special and code a new id, or the id arithmetic breaks."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from vita_core.tokens_build import add_vita_tokens

    vocab = {"a": 0, "b": 1, "<|audio_3|>": 2}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="a")))
    with pytest.raises(InputError, match="the text vocabulary already holds 1 of the special or audio tokens"):
        add_vita_tokens(tok, num_codes=10)


def test_cli_builds_and_refuses_a_used_folder(tmp_path, corpus):
    runner = CliRunner()
    out = tmp_path / "tok"
    args = ["tokenizer", "build", "--text", str(corpus), "--codes", "1000", "--vocab", "300", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1000 (ids 342..1341)" in result.output and "1342" in result.output
    assert json.loads((out / "tokenizer_config.json").read_text())["eos_token"] == "<|im_end|>"
    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert again.output == f"error: {out} already exists and is not empty; choose another --out or remove it\n"


def test_init_mini_with_a_built_tokenizer_trains_a_model_that_fits_it(tmp_path, corpus):
    """`vita train --stage 1 --init mini --tokenizer DIR`: a random mini model with the tokenizer's vocabulary,
    trained one step on data prepared with the same tokenizer, saved in the released format."""
    from datakit import make_tiny_prepared
    from vita_core.data.pack import pack
    from vita_core.data.recipe import load_recipe
    from vita_core.model.checkpoint import load_model, read_config
    from vita_core.train.stages import RECIPES

    tok_dir = tmp_path / "tok"
    build_text_tokenizer(corpus, tok_dir, num_codes=1000, vocab_size=300)
    root = make_tiny_prepared(tmp_path / "data", load_tokenizer(tok_dir), codebook_size=1000)
    pack(load_recipe(RECIPES / "data" / "tiny.yaml", root), root / "packed")
    result = CliRunner().invoke(app, [
        "train", "--stage", "1", "--recipe", str(RECIPES / "tiny"), "--init", "mini", "--tokenizer", str(tok_dir),
        "--data", str(root / "packed"), "--output-dir", str(tmp_path / "s1"), "--max-steps", "1", "--eval-packs", "0"])
    assert result.exit_code == 0, result.output
    config = read_config(tmp_path / "s1" / "model")
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]) == (1344, 256, 6)
    model = load_model(tmp_path / "s1" / "model")
    lay = layout_from_tokenizer(load_tokenizer(tmp_path / "s1" / "model"))
    assert lay.num_codes == 1000
    lay.check_config(model.config.vocab_size)


def test_another_process_builds_the_same_bytes(tmp_path, corpus):
    """Rust-side hashing differs per process; the trained merges and ids must not."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    build_text_tokenizer(corpus, tmp_path / "here", num_codes=50, vocab_size=320)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-m", "vita_cli", "tokenizer", "build", "--text", str(corpus), "--codes", "50",
                    "--vocab", "320", "--out", str(tmp_path / "there")], check=True, capture_output=True, env=env)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "there" / name).read_bytes()
