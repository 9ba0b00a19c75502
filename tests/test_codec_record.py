"""A checkpoint's codec record (codec.json): tts loads that codec by itself, overrides still win,
broken records are one line, and vita train passes the record on from stage to stage."""

import json
import shutil

import pytest
import soundfile as sf
from typer.testing import CliRunner

from vita_cli.main import app
from vita_core.codec.mini.codec import load_mini_codec
from vita_core.codec.record import RECORD, read_record, write_record
from vita_core.errors import InputError
from vita_core.speech import load_speech_model
from vita_core.tiny.mini_codec import build_mini_codec
from vita_core.tiny.tokenizer import build_tokenizer
from vita_core.tokens import layout_from_tokenizer, load_tokenizer

runner = CliRunner()


@pytest.fixture(scope="module")
def mini_codec(tmp_path_factory):
    return build_mini_codec(tmp_path_factory.mktemp("mini") / "codec", seed=1)


@pytest.fixture(scope="module")
def mini_checkpoint(tmp_path_factory, mini_codec):
    """A random tiny model over a 300-entry text vocabulary and the tiny mini codec's 48 codes,
    recording that codec in its own codec/ folder."""
    import torch

    from vita_core.model.checkpoint import preset_config, random_model, save_model

    root = tmp_path_factory.mktemp("mini_ckpt")
    tok = build_tokenizer(root / "tok", num_codes=48, text_vocab=300)
    config = preset_config("tiny", tokens=layout_from_tokenizer(load_tokenizer(tok)))
    folder = root / "ckpt"
    save_model(random_model(config, seed=0, dtype=torch.float32), folder)
    for f in tok.iterdir():
        shutil.copy(f, folder / f.name)
    write_record(folder, "mini", mini_codec)
    return folder


def tts(args, **kw):
    return runner.invoke(app, ["tts", "Hello there.", "--device", "cpu", "--max-new-tokens", "24", *args], **kw)


def test_tts_speaks_through_the_recorded_mini_codec(mini_checkpoint, clean_speech_env, tmp_path):
    assert json.loads((mini_checkpoint / RECORD).read_text()) == {"family": "mini", "folder": "codec"}
    out = tmp_path / "hi.wav"
    r = tts(["--model", str(mini_checkpoint), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    meta = json.loads(r.stdout)
    info = sf.info(str(out))
    assert meta["num_codes"] > 0 and info.samplerate == 16000 == meta["sample_rate"]
    assert info.frames == meta["num_codes"] * 640  # the mini decoder: 640 samples per code at 25 codes/s


def test_encoder_and_decoder_are_the_checkpoints_codec(mini_checkpoint, clean_speech_env):
    from vita_core.codec.mini.codec import MiniCodec

    speech = load_speech_model(mini_checkpoint, device="cpu", need_encoder=True, need_decoder=True)
    assert isinstance(speech.encoder, MiniCodec) and isinstance(speech.decoder, MiniCodec)
    assert speech.decoder.codebook_size == 48


def test_a_flag_or_variable_still_wins_over_the_record(mini_checkpoint, clean_speech_env, monkeypatch, tmp_path):
    monkeypatch.setenv("VITA_AUDIO_DECODER", str(tmp_path / "elsewhere"))
    r = tts(["--model", str(mini_checkpoint), "--out", str(tmp_path / "x.wav")])
    assert r.exit_code == 1
    assert r.stderr.strip() == (f"error: VITA_AUDIO_DECODER points at {tmp_path / 'elsewhere'}, which is not a "
                                "folder; expected a GLM-4-Voice speech decoder folder (flow + HiFT)")
    other = build_mini_codec(tmp_path / "other", seed=2)
    monkeypatch.delenv("VITA_AUDIO_DECODER")
    speech = load_speech_model(mini_checkpoint, decoder_dir=other, device="cpu", need_decoder=True)
    codes = list(range(48))
    assert (speech.decoder.decode(codes)[0] == load_mini_codec(other).decode(codes)[0]).all()
    assert not (speech.decoder.decode(codes)[0] == load_mini_codec(mini_checkpoint / "codec").decode(codes)[0]).all()


@pytest.mark.parametrize("damage, fragment", [
    ("missing", "names codec folder 'codec', but {ckpt}/codec is not a folder; copy the whole checkpoint"),
    ("wrong", "{ckpt}/codec has no config.json: not a mini codec folder"),
    ("family", "codec.json: 'family' must be one of glm4voice, mini, not 'opus'"),
    ("json", "codec.json is not valid JSON"),
])
def test_broken_record_is_one_line(mini_checkpoint, clean_speech_env, tmp_path, damage, fragment):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(mini_checkpoint, ckpt)
    if damage == "missing":
        shutil.rmtree(ckpt / "codec")
    elif damage == "wrong":
        (ckpt / "codec" / "config.json").unlink()
    elif damage == "family":
        (ckpt / RECORD).write_text('{"family": "opus"}')
    else:
        (ckpt / RECORD).write_text("{")
    r = tts(["--model", str(ckpt), "--out", str(tmp_path / "x.wav")])
    assert r.exit_code == 1
    last = r.stderr.strip().splitlines()[-1]  # after the progress lines
    assert last.startswith("error: ") and fragment.format(ckpt=ckpt) in last, r.stderr
    assert r.stderr.count("error: ") == 1
    assert not (tmp_path / "x.wav").exists()


def test_no_record_is_glm4voice_as_before(tiny_checkpoint_f32, clean_speech_env, tmp_path):
    record = read_record(tiny_checkpoint_f32)
    assert (record.family, record.folder, record.recorded) == ("glm4voice", None, False)
    with pytest.raises(InputError, match="no audio decoder folder given: pass --decoder-dir"):
        load_speech_model(tiny_checkpoint_f32, device="cpu", need_decoder=True)


def test_mini_without_a_folder_means_the_bundled_codec(tmp_path):
    from vita_core.codec.mini import BUNDLED_CODEC

    write_record(tmp_path, "mini", BUNDLED_CODEC)
    assert json.loads((tmp_path / RECORD).read_text()) == {"family": "mini"}
    assert read_record(tmp_path).folder == BUNDLED_CODEC
    assert not (tmp_path / "codec").exists()


def test_train_passes_the_record_from_the_tokenizer_to_each_stage(tmp_path, mini_codec):
    """tokenizer build --codec mini --codec-dir -> stage 1 (--tokenizer) -> stage 2 (from stage 1's model)."""
    from datakit import make_tiny_prepared
    from vita_core.data.pack import pack
    from vita_core.data.recipe import load_recipe
    from vita_core.tiny.corpus import TINY_TEXTS
    from vita_core.train.stages import RECIPES

    corpus = tmp_path / "text.txt"
    corpus.write_text("\n".join(TINY_TEXTS * 5) + "\n")
    tok = tmp_path / "tok"
    r = runner.invoke(app, ["tokenizer", "build", "--text", str(corpus), "--codec", "mini", "--codec-dir",
                            str(mini_codec), "--vocab", "300", "--out", str(tok)])
    assert r.exit_code == 0, r.output
    assert "48 (ids" in r.output and (tok / "codec" / "model.safetensors").is_file()
    root = make_tiny_prepared(tmp_path / "data", load_tokenizer(tok), codebook_size=48)
    pack(load_recipe(RECIPES / "data" / "tiny.yaml", root), root / "packed")
    common = ["--recipe", str(RECIPES / "tiny"), "--data", str(root / "packed"), "--max-steps", "1",
              "--eval-packs", "0"]
    r = runner.invoke(app, ["train", "--stage", "1", "--init", "tiny", "--tokenizer", str(tok),
                            "--output-dir", str(tmp_path / "s1"), *common])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "--stage", "2", "--init", str(tmp_path / "s1" / "model"),
                            "--output-dir", str(tmp_path / "s2"), *common])
    assert r.exit_code == 0, r.output
    for stage in ("s1", "s2"):
        model = tmp_path / stage / "model"
        assert json.loads((model / RECORD).read_text()) == {"family": "mini", "folder": "codec"}
        assert (model / "codec" / "model.safetensors").read_bytes() == (mini_codec / "model.safetensors").read_bytes()


def test_tokenizer_codes_must_agree_with_the_codec(tmp_path, mini_codec):
    corpus = tmp_path / "text.txt"
    corpus.write_text("one two three\n" * 5)
    r = runner.invoke(app, ["tokenizer", "build", "--text", str(corpus), "--codec", "mini", "--codec-dir",
                            str(mini_codec), "--codes", "50", "--vocab", "300", "--out", str(tmp_path / "t")])
    assert r.exit_code == 1
    assert r.output == "error: --codes 50 disagrees with --codec mini, which has 48 codes; drop --codes\n"
    assert not (tmp_path / "t").exists()
