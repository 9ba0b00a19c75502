"""Plus-variant input: SenseVoiceSmall through funasr from a local folder, and the projector."""

import numpy as np
import pytest
import torch

pytest.importorskip("funasr")

from vita_core.audio import resample  # noqa: E402
from vita_core.codec.sensevoice.encoder import (  # noqa: E402
    NO_DITHER,
    PLUS_PROJECTOR_PREFIX,
    ResamplerProjector,
    load_sensevoice,
)
from vita_core.tiny.sensevoice import build_tiny_sensevoice  # noqa: E402
from vita_core.errors import AudioError, CheckpointError  # noqa: E402


@pytest.fixture(scope="module")
def sv_dir(tmp_path_factory):
    return build_tiny_sensevoice(tmp_path_factory.mktemp("sensevoice"))


@pytest.fixture(scope="module")
def sv(sv_dir):
    return load_sensevoice(sv_dir)


def noise(seconds: float, seed: int, sr: int = 16000) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def test_folder_loads_key_for_key(sv_dir, sv):
    state = torch.load(sv_dir / "model.pt", weights_only=True)
    assert set(state) == set(sv.model.state_dict())
    assert sv.model.encoder.output_size() == 512 and sv.model.embed.weight.shape == (16, 560)


def test_features_are_frames_plus_four_by_512(sv):
    wav = noise(1.0, 0)
    fbank = sv.fbank(wav, 16000)
    # 25 ms windows every 10 ms -> 98 frames, stacked 7 at a time every 6 -> 17 LFR frames of 560
    assert fbank.shape == (17, 560)
    out = sv.encode(wav, 16000)
    assert out.shape == (17 + 4, 512) and out.dtype == torch.float32 and torch.isfinite(out).all()
    np.testing.assert_array_equal(sv.encode(wav, 16000).numpy(), out.numpy())


def test_queries_are_the_reference_language_event_emotion_textnorm(sv):
    """Same as funasr's own SenseVoiceSmall.encode with language auto and text norm 'woitn' (25017)."""
    wav = noise(0.7, 1)
    fbank = sv.fbank(wav, 16000)
    text = torch.tensor([[0, 0, 0, 25017]])
    with torch.no_grad():
        ref, ref_len = sv.model.encode(fbank[None].clone(), torch.tensor([len(fbank)]), text)
    assert ref_len.tolist() == [len(fbank) + 4]
    torch.testing.assert_close(sv.encode(wav, 16000), ref[0], rtol=0, atol=0)


def test_matches_funasr_automodel_end_to_end(sv_dir, sv):
    """funasr's complete inference path from raw samples (its fbank, queries, encoder), captured
    at the encoder output, equals ours exactly."""
    from funasr import AutoModel

    auto = AutoModel(model=str(sv_dir), device="cpu", disable_update=True, disable_pbar=True,
                     ncpu=torch.get_num_threads(), frontend_conf=NO_DITHER)
    captured = []
    auto.model.encoder.register_forward_hook(lambda m, i, o: captured.append(o[0].detach().clone()))
    wav = noise(1.3, 2)
    auto.generate(input=wav, language="auto", use_itn=False)
    torch.testing.assert_close(sv.encode(wav, 16000), captured[0][0], rtol=0, atol=0)


def test_batch_matches_one_by_one(sv):
    wavs = [noise(s, i) for i, s in enumerate([1.0, 0.3, 2.2])]
    for wav, out in zip(wavs, sv.encode_batch(wavs, 16000)):
        torch.testing.assert_close(out, sv.encode(wav, 16000), rtol=1e-4, atol=1e-4)


def test_other_rates_are_resampled(sv):
    wav = noise(1.0, 3, sr=22050)
    torch.testing.assert_close(sv.encode(wav, 22050), sv.encode(resample(wav, 22050, 16000), 16000))


def test_bad_audio_and_folders(sv, sv_dir, tmp_path):
    with pytest.raises(AudioError, match="no samples"):
        sv.encode(np.zeros(0, np.float32), 16000)
    with pytest.raises(CheckpointError, match="not found"):
        load_sensevoice(tmp_path / "missing")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.yaml").write_text((sv_dir / "config.yaml").read_text())
    with pytest.raises(CheckpointError, match="lacks model.pt"):
        load_sensevoice(tmp_path / "partial")


def test_weights_must_match_key_for_key(sv):
    state = sv.model.state_dict()
    state.pop("ctc.ctc_lo.weight")
    state["encoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing \['ctc.ctc_lo.weight'\], unexpected \['encoder.extra.weight'\]"):
        sv.load_weights(state)


def test_projector_has_reference_names_and_math():
    torch.manual_seed(0)
    proj = ResamplerProjector(512, 96)
    assert {k: tuple(v.shape) for k, v in proj.state_dict().items()} == {
        "pre_proj_layernorm.weight": (512,),
        "pre_proj_layernorm.bias": (512,),
        "mlp.0.weight": (96, 512),
        "mlp.2.weight": (96, 96),
    }
    plus = {PLUS_PROJECTOR_PREFIX + k: torch.randn_like(v) for k, v in proj.state_dict().items()}
    proj.load_state_dict({k[len(PLUS_PROJECTOR_PREFIX):]: v for k, v in plus.items()}, strict=True)
    x = torch.randn(2, 7, 512)
    ln = torch.nn.functional.layer_norm(x, (512,), plus["model.audio_projection.pre_proj_layernorm.weight"],
                                        plus["model.audio_projection.pre_proj_layernorm.bias"])
    h = torch.nn.functional.gelu(ln @ plus["model.audio_projection.mlp.0.weight"].T)
    torch.testing.assert_close(proj(x), h @ plus["model.audio_projection.mlp.2.weight"].T)
