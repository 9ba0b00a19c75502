"""GLM-4-Voice tokenizer: released-format loading, code rate, windows, batching, masks and errors."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from vita_core.audio import load_audio, resample
from vita_core.codec import SpeechEncoder, load_decoder, load_encoder
from vita_core.codec.glm4voice.tokenizer import UNUSED_KEYS, load_glm4voice_tokenizer
from vita_core.tiny.glm4voice_tokenizer import RELEASED_CONFIG, build_tiny_glm4voice_tokenizer
from vita_core.codec.glm4voice.whisper_vq import WhisperVQConfig, WhisperVQEncoder, attention_bias
from vita_core.errors import AudioError, CheckpointError

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_glm4voice_tokenizer(tmp_path_factory.mktemp("glm4voice_tokenizer"))


@pytest.fixture(scope="module")
def tok(tiny_dir):
    return load_encoder(tiny_dir)


def noise(seconds: float, seed: int, sr: int = 16000) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(round(seconds * sr)))).astype(np.float32)


def test_folder_loads_with_exactly_the_released_keys(tiny_dir, tok):
    file_keys = set(load_file(str(tiny_dir / "model.safetensors")))
    model_keys = set(tok.model.state_dict())
    assert UNUSED_KEYS <= file_keys and file_keys - UNUSED_KEYS == model_keys
    assert "layers.1.self_attn.k_proj.weight" in model_keys and "layers.1.self_attn.k_proj.bias" not in model_keys
    assert isinstance(tok, SpeechEncoder)
    assert (tok.sample_rate, tok.codes_per_second, tok.codebook_size) == (16000, 12.5, 16384)


def test_tiny_folder_is_deterministic_per_seed(tiny_dir, tmp_path):
    same = build_tiny_glm4voice_tokenizer(tmp_path / "same", seed=0)
    other = build_tiny_glm4voice_tokenizer(tmp_path / "other", seed=1)
    data = (tiny_dir / "model.safetensors").read_bytes()
    assert (same / "model.safetensors").read_bytes() == data != (other / "model.safetensors").read_bytes()
    assert json.loads((same / "config.json").read_text())["quantize_vocab_size"] == 16384


def test_real_dimensions_match_the_released_tensor_shapes():
    with torch.device("meta"):
        model = WhisperVQEncoder(WhisperVQConfig(**RELEASED_CONFIG))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["conv1.weight"] == (1280, 128, 3) and shapes["conv2.weight"] == (1280, 1280, 3)
    assert shapes["embed_positions.weight"] == (1500, 1280) and shapes["codebook.weight"] == (16384, 1280)
    assert shapes["layers.15.fc1.weight"] == (5120, 1280) and "layers.16.fc1.weight" not in shapes
    assert len(shapes) == 6 + 16 * 15 and model.frames_per_code == 8


@pytest.mark.parametrize("samples", [1, 1279, 1280, 1281, 16001, 32000])
def test_code_count_is_one_per_1280_samples_rounded_up(tok, samples):
    codes = tok.encode(noise(samples / 16000, seed=samples), 16000)
    assert codes.dtype == np.int64 and len(codes) == math.ceil(samples / 1280) == tok.num_codes(samples)
    assert codes.min() >= 0 and codes.max() < 16384


def test_two_seconds_give_25_codes_that_follow_the_audio(tok):
    a, b = tok.encode(noise(2.0, 1), 16000), tok.encode(noise(2.0, 2), 16000)
    assert len(a) == len(b) == 25
    assert (a != b).any() and len(set(a.tolist())) > 3


def test_long_audio_is_cut_into_30_second_windows(tok):
    wav = noise(31.0, 3)
    codes = tok.encode(wav, 16000)
    assert len(codes) == 375 + 13 == tok.num_codes(len(wav))
    head, tail = tok.encode(wav[: 30 * 16000], 16000), tok.encode(wav[30 * 16000 :], 16000)
    np.testing.assert_array_equal(codes, np.concatenate([head, tail]))


def test_batch_equals_one_by_one(tok):
    wavs = [noise(s, i) for i, s in enumerate([2.0, 0.37, 31.5, 5.0, 0.0625])]
    tok.batch_size = 3
    batched = tok.encode_batch(wavs, 16000)
    for wav, codes in zip(wavs, batched):
        np.testing.assert_array_equal(codes, tok.encode(wav, 16000))


def test_other_rates_are_resampled_to_16k(tok):
    wav8k = noise(1.5, 4, sr=8000)
    np.testing.assert_array_equal(tok.encode(wav8k, 8000), tok.encode(resample(wav8k, 8000, 16000), 16000))


def test_attention_is_block_causal(tok):
    # 4 s = 200 frames at 50 Hz = one block = 50 pooled frames. Audio after the first block never
    # reaches it, while audio late in a block reaches frames early in the same block.
    def hidden(wav):
        mels, mask = tok._features(wav)
        with torch.no_grad():
            return tok.model.hidden_states(mels[None], mask[None])[0][0]

    first, late = noise(4.0, 5), noise(4.0, 6)
    a = hidden(np.concatenate([first, late]))
    b = hidden(np.concatenate([first, noise(4.0, 7)]))
    assert torch.equal(a[:50], b[:50]) and not torch.allclose(a[50:], b[50:])
    changed = first.copy()
    changed[60000:64000] = noise(0.25, 8)
    c = hidden(np.concatenate([changed, late]))
    assert (c[:40] - a[:40]).abs().amax(dim=1).min() > 1e-4


def test_attention_bias_matches_the_rule():
    valid = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    bias = attention_bias(valid, block_size=3, causal=False, dtype=torch.float32)
    for b in range(2):
        for q in range(7):
            for k in range(7):
                allowed = bool(valid[b, k]) and (k <= q or q // 3 == k // 3)
                assert (bias[b, 0, q, k] == 0) == allowed
    causal = attention_bias(valid, block_size=3, causal=True, dtype=torch.float32)
    assert (causal[1, 0] == 0).equal(torch.ones(7, 7).tril().bool())


def test_matches_transformers_whisper_encoder(tmp_path):
    """Non-causal variant: front end + layers equal HF's WhisperEncoder on the same weights;
    pooling and nearest-codebook lookup are then recomputed by brute force."""
    folder = build_tiny_glm4voice_tokenizer(
        tmp_path, seed=1, encoder_causal_convolution=False, quantize_causal_block_size=None
    )
    ours = load_glm4voice_tokenizer(folder)
    cfg = json.loads((folder / "config.json").read_text())
    layers = cfg["quantize_position"]
    hf = WhisperEncoder(WhisperConfig(**{**cfg, "encoder_layers": layers + 1, "num_hidden_layers": layers + 1}))
    state = {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if k not in UNUSED_KEYS}
    missing, unexpected = hf.load_state_dict({k: v for k, v in state.items() if k != "codebook.weight"}, strict=False)
    assert unexpected == [] and all(k.startswith(("layers.2.", "layer_norm.")) for k in missing)
    wav = noise(30.0, 9)
    mels, _ = ours._features(wav)
    with torch.no_grad():
        hidden = hf(mels[None], output_hidden_states=True).hidden_states[layers]
    pooled = hidden.reshape(1, -1, 4, hidden.shape[-1]).mean(2)[0]
    expected = torch.cdist(pooled, state["codebook.weight"]).argmin(1).numpy()
    np.testing.assert_array_equal(ours.encode(wav, 16000), expected)


def _rewrite(src: Path, dst: Path, edit) -> Path:
    dst.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    state = load_file(str(src / "model.safetensors"))
    edit(state)
    save_file(state, str(dst / "model.safetensors"))
    return dst


def test_checkpoint_mismatches_are_named(tiny_dir, tmp_path):
    no_codebook = _rewrite(tiny_dir, tmp_path / "a", lambda s: s.pop("codebook.weight"))
    with pytest.raises(CheckpointError, match=r"missing \['codebook.weight'\]"):
        load_glm4voice_tokenizer(no_codebook)
    extra = _rewrite(tiny_dir, tmp_path / "b", lambda s: s.update({"layer_norm.weight": torch.ones(64)}))
    with pytest.raises(CheckpointError, match=r"unexpected \['layer_norm.weight'\]"):
        load_glm4voice_tokenizer(extra)
    wrong = _rewrite(tiny_dir, tmp_path / "c", lambda s: s.update({"codebook.weight": torch.zeros(16384, 32)}))
    with pytest.raises(CheckpointError, match="shapes do not match"):
        load_glm4voice_tokenizer(wrong)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="lacks model.safetensors, preprocessor_config.json"):
        load_encoder(tmp_path / "d")


def test_truncated_weights_file_is_one_checkpoint_error(tiny_dir, tmp_path):
    cut = _rewrite(tiny_dir, tmp_path / "cut", lambda s: None)
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])  # a download cut halfway
    with pytest.raises(CheckpointError) as err:
        load_encoder(cut)
    assert str(err.value).startswith(f"cannot read {cut / 'model.safetensors'}: ")
    assert str(err.value).endswith("; the file is corrupt or truncated, download it again")


def test_registry_errors():
    with pytest.raises(CheckpointError, match="unknown encoder codec 'snac'"):
        load_encoder("/nonexistent", name="snac")
    with pytest.raises(CheckpointError, match="encoder folder not found"):
        load_encoder("/nonexistent/glm-4-voice-tokenizer")
    with pytest.raises(CheckpointError, match="decoder folder not found"):
        load_decoder("/nonexistent/glm-4-voice-decoder")


@pytest.mark.parametrize(
    "wav, sr, message",
    [
        (np.zeros(0, np.float32), 16000, "no samples"),
        (np.array([0.0, np.nan], np.float32), 16000, "NaN"),
        (np.zeros((2, 100), np.float32), 16000, "1-D"),
        (np.zeros(100, np.float32), 0, "sample rate"),
    ],
)
def test_bad_audio_is_rejected(tok, wav, sr, message):
    with pytest.raises(AudioError, match=message):
        tok.encode(wav, sr)


def test_empty_batch_is_rejected(tok):
    with pytest.raises(AudioError, match="no audio"):
        tok.encode_batch([], 16000)


@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="Debian package pocketsphinx-testdata not installed")
def test_real_speech_file(tok):
    path = sorted(LIBRIVOX.glob("*.wav"))[0]
    wav, sr = load_audio(path, 16000)
    codes = tok.encode(wav, sr)
    assert len(codes) == math.ceil(len(wav) / 1280) and len(set(codes.tolist())) > 10
