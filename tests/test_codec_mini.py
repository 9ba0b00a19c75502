"""The mini codec: folder format, encode contract, streaming = one-shot, one-line errors, registry, trainer."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from vita_cli.main import app
from vita_core.codec import DECODERS, ENCODERS, SpeechDecoder, SpeechEncoder, StreamingDecoder, load_decoder, load_encoder
from vita_core.codec.mini.codec import MiniCodec, load_mini_codec
from vita_core.codec.mini.model import FSQ, MiniCodecModel
from vita_core.codec.mini.train import TrainConfig, load_codec_recipe, train_codec
from vita_core.errors import CheckpointError, InputError
from vita_core.tiny.mini_codec import TINY, build_mini_codec

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "mini" / "codec.yaml"


def speech(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced-sounding test signal: a wandering harmonic tone with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wav = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.1 + 0.01 * rng.standard_normal(len(t))
    return wav.astype(np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return build_mini_codec(tmp_path_factory.mktemp("mini") / "codec", seed=0)


@pytest.fixture(scope="module")
def codec(folder) -> MiniCodec:
    return load_mini_codec(folder)


def test_folder_round_trip_keeps_every_key_and_the_output(folder, codec, tmp_path):
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format"] == "vita-mini-codec" and meta["version"] == 1
    assert set(load_file(str(folder / "model.safetensors"))) == set(MiniCodecModel(TINY).state_dict())
    codes = codec.encode(speech(1.0), 16000)
    again = load_mini_codec(build_mini_codec(tmp_path / "same", seed=0))
    np.testing.assert_array_equal(again.encode(speech(1.0), 16000), codes)
    np.testing.assert_array_equal(again.decode(codes)[0], codec.decode(codes)[0])
    other = load_mini_codec(build_mini_codec(tmp_path / "other", seed=1))
    assert not np.array_equal(other.decode(codes)[0], codec.decode(codes)[0])


def test_half_precision_folder_decodes_close_to_float32(codec, tmp_path):
    half = load_mini_codec(build_mini_codec(tmp_path / "half", seed=0, half=True))
    assert all(v.dtype == torch.float16 for v in load_file(str(tmp_path / "half" / "model.safetensors")).values())
    codes = codec.encode(speech(1.0), 16000)
    ref = codec.decode(codes)[0]
    assert np.abs(half.decode(codes)[0] - ref).max() < 0.02 * np.abs(ref).max() + 1e-4


def test_encode_gives_in_range_int64_codes_at_the_stated_rate(codec):
    assert codec.codes_per_second == 25.0 and codec.codebook_size == 4 * 4 * 3
    for seconds in (0.5, 1.0, 1.23):
        codes = codec.encode(speech(seconds), 16000)
        assert codes.dtype == np.int64 and codes.ndim == 1
        assert len(codes) == int(np.ceil(seconds * 25 - 1e-9))
        assert codes.min() >= 0 and codes.max() < codec.codebook_size
    assert len(codec.encode(speech(1.0, sr=22050), 22050)) == 25
    assert len(set(codec.encode(speech(2.0), 16000).tolist())) > 1
    batch = codec.encode_batch([speech(0.5), speech(1.0, seed=3)], 16000)
    np.testing.assert_array_equal(batch[1], codec.encode(speech(1.0, seed=3), 16000))


def test_decode_gives_samples_per_code_pcm(codec):
    pcm, sr = codec.decode([0, 5, 47, 12])
    assert sr == 16000 and pcm.dtype == np.float32 and pcm.shape == (4 * 640,)
    assert codec.decode([])[0].shape == (0,)


def test_fsq_lookup_inverts_the_codes():
    fsq = FSQ((8, 6, 5))
    q, codes = fsq(torch.randn(2, 30, 3) * 3)
    assert codes.min() >= 0 and codes.max() < 240
    torch.testing.assert_close(fsq.lookup(codes), q)
    assert len(torch.unique(fsq(torch.randn(1, 4000, 3) * 3)[1])) > 200


@pytest.mark.parametrize("chunk", [1, 2, 7, 31])
def test_streaming_decode_equals_one_shot(codec, chunk):
    codes = codec.encode(speech(2.5, seed=4), 16000)
    ref, _ = codec.decode(codes)
    stream = codec.stream()
    parts = [stream.push(codes[i : i + chunk]) for i in range(0, len(codes), chunk)]
    parts.append(stream.flush())
    out = np.concatenate(parts)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < 1e-5
    assert sum(len(p) for p in parts[:-1]) > 0  # audio came out before the end


def test_streaming_decodes_in_growing_chunks(codec):
    """Code by code, the stream decodes at the first final code, then after 2, 4 and every 8 more."""
    codes = codec.encode(speech(2.5, seed=4), 16000)
    stream = codec.stream()
    sizes = [stream.push(codes[i : i + 1]).size for i in range(len(codes))]
    samples = codec.config.samples_per_code
    decoded_at = [i for i, n in enumerate(sizes) if n]
    assert decoded_at[:5] == [1, 3, 7, 15, 23]  # one code of lookahead: code i is final once i + 1 is in
    assert sizes[3] == 2 * samples and sizes[7] == 4 * samples and sizes[15] == sizes[23] == 8 * samples


def test_streaming_needs_its_left_context(folder):
    """With the window cut below the receptive field the stream drifts from one-shot: the bound is real."""
    codec = load_mini_codec(folder)
    codes = codec.encode(speech(2.5, seed=4), 16000)
    ref, _ = codec.decode(codes)
    stream = codec.stream()
    stream.context = 1
    out = np.concatenate([stream.push(codes[i : i + 2]) for i in range(0, len(codes), 2)] + [stream.flush()])
    assert np.abs(out - ref).max() > 1e-4


def test_out_of_range_codes_are_refused_in_one_line(codec):
    for bad in ([0, 48], [-1]):
        with pytest.raises(InputError, match="outside this codec's range 0..47") as err:
            codec.decode(bad)
        assert "\n" not in str(err.value)
        with pytest.raises(InputError):
            codec.stream().push(bad)


def test_bad_folders_give_one_line_errors(folder, tmp_path):
    cases = {}
    cases["missing"] = tmp_path / "nope"
    cases["empty"] = tmp_path / "empty"
    cases["empty"].mkdir()
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    cases["json"] = bad_json
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"format": "something-else"}))
    cases["format"] = foreign
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((folder / "config.json").read_text())
    cases["weights"] = no_weights
    wrong_keys = tmp_path / "wrong_keys"
    wrong_keys.mkdir()
    (wrong_keys / "config.json").write_text((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    state.pop(sorted(state)[0])
    save_file(state, str(wrong_keys / "model.safetensors"))
    cases["keys"] = wrong_keys
    bad_field = tmp_path / "bad_field"
    bad_field.mkdir()
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["colour"] = "red"
    (bad_field / "config.json").write_text(json.dumps(meta))
    cases["field"] = bad_field
    for name, path in cases.items():
        with pytest.raises(CheckpointError) as err:
            load_decoder(path, "mini")
        assert "\n" not in str(err.value), name


def test_registry_names_mini_for_both_directions(folder):
    assert "mini" in ENCODERS and "mini" in DECODERS
    enc, dec = load_encoder(folder, "mini"), load_decoder(folder, "mini")
    assert isinstance(enc, SpeechEncoder) and isinstance(dec, SpeechDecoder)
    assert isinstance(dec.stream(), StreamingDecoder)
    with pytest.raises(CheckpointError, match="choose one of glm4voice, mini"):
        load_decoder(folder, "minny")


def write_list(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for n in range(3):
        sf.write(folder / f"u{n}.wav", speech(1.5, sr=22050, seed=n), 22050)
        lines.append(f"u{n}.wav\tsentence {n}")
    (folder / "train.tsv").write_text("\n".join(lines) + "\n")
    return folder / "train.tsv"


def test_training_is_seeded_and_resumes_to_the_same_weights(tmp_path):
    data = write_list(tmp_path / "data")
    config = TrainConfig(steps=4, batch=2, crop_codes=4, warmup=2, checkpoint_every=2, half_weights=False)
    losses = []
    straight = train_codec(TINY, config, data, tmp_path / "straight", progress=lambda p: losses.append(p["loss"]))
    assert len(losses) == 4 and all(np.isfinite(losses))
    train_codec(TINY, replace(config, steps=2), data, tmp_path / "resumed")
    resumed = train_codec(TINY, config, data, tmp_path / "resumed")
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    untrained = load_file(str(build_mini_codec(tmp_path / "init", seed=11) / "model.safetensors"))
    assert not all(torch.equal(a[k], untrained[k]) for k in a)
    with pytest.raises(InputError, match="another model config"):
        train_codec(replace(TINY, code_dim=32), config, data, tmp_path / "resumed")


def test_recipe_loads_and_bad_recipes_are_named(tmp_path):
    model, train = load_codec_recipe(RECIPE)
    assert model.codes_per_second == 25.0 and model.codebook_size == 15360 and train.seed == 11
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stpes: 3\n")
    with pytest.raises(InputError, match="unknown 'train' keys"):
        load_codec_recipe(bad)
    bad.write_text("model:\n  levles: [4]\n")
    with pytest.raises(InputError, match="bad 'model' section"):
        load_codec_recipe(bad)


def test_cli_codec_train_errors_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["codec", "train", str(RECIPE), "--data", str(tmp_path / "none.tsv"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "speech list" in result.output and "not found" in result.output


def test_bundled_codec_loads_and_keeps_speech_energy():
    """The trained codec inside the package: 25 codes/s, 15360 codes, and a round trip that is not silence."""
    from vita_core.codec.mini import BUNDLED_CODEC

    codec = load_encoder(BUNDLED_CODEC, "mini")
    assert codec.codes_per_second == 25.0 and codec.codebook_size == 15360
    assert sum(f.stat().st_size for f in BUNDLED_CODEC.iterdir()) < 8_000_000
    wav = speech(1.0, seed=5)
    codes = codec.encode(wav, 16000)
    out, sr = codec.decode(codes)
    assert sr == 16000 and len(codes) == 25 and out.shape == wav.shape
    assert 0.2 < np.sqrt(np.mean(out**2)) / np.sqrt(np.mean(wav**2)) < 5
