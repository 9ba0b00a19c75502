"""HiFT vocoder: released key layout, load/save, exact output contract, streaming seams, reference parity."""

import dataclasses
import math
import warnings

import pytest
import torch
from torch import nn

from vita_core.codec.glm4voice.hift import (
    F0PredictorConfig,
    HiFTConfig,
    HiFTVocoder,
    build_random_hift,
    fold_weight_norm,
    load_hift,
    load_hift_state_dict,
)
from vita_core.codec.glm4voice.hift_source import HarmonicSource
from vita_core.errors import CheckpointError, InputError

RELEASED = {
    "in_channels": 80, "base_channels": 512, "nb_harmonics": 8, "sampling_rate": 22050,
    "nsf_alpha": 0.1, "nsf_sigma": 0.003, "nsf_voiced_threshold": 10,
    "upsample_rates": [8, 8], "upsample_kernel_sizes": [16, 16],
    "istft_params": {"n_fft": 16, "hop_len": 4},
    "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "source_resblock_kernel_sizes": [7, 11], "source_resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
    "lrelu_slope": 0.1, "audio_limit": 0.99,
    "f0_predictor": {"num_class": 1, "in_channels": 80, "cond_channels": 512},
}
TINY = dataclasses.replace(HiFTConfig(), base_channels=32, f0_predictor=F0PredictorConfig(cond_channels=32))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_mel(frames: int, batch: int = 1, seed: int = 3) -> torch.Tensor:
    return torch.randn(batch, 80, frames, generator=seeded(seed))


@pytest.fixture(scope="module")
def tiny() -> HiFTVocoder:
    return build_random_hift(TINY, seed=1)


def test_config_from_released_mapping():
    config = HiFTConfig.from_dict(RELEASED)
    assert config == HiFTConfig()
    assert config.samples_per_frame == 256 and config.istft_params.n_fft == 16
    assert config.resblock_dilation_sizes == ((1, 3, 5),) * 3


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(extra_field=1), "hift.extra_field"),
    (lambda d: d.pop("lrelu_slope"), "hift.lrelu_slope"),
    (lambda d: d["f0_predictor"].update(hidden=3), "hift.f0_predictor.hidden"),
    (lambda d: d["istft_params"].pop("hop_len"), "hift.istft_params.hop_len"),
    (lambda d: d.update(upsample_rates=[8, "8"]), "hift.upsample_rates"),
    (lambda d: d.update(base_channels=True), "hift.base_channels"),
    (lambda d: d.update(source_resblock_kernel_sizes=[7]), "hift.source_resblock_kernel_sizes"),
])
def test_config_rejects_bad_fields_by_name(edit, field):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in RELEASED.items()}
    edit(data)
    with pytest.raises(CheckpointError, match=f"`{field}"):
        HiFTConfig.from_dict(data)


def test_released_config_state_dict_names_and_shapes():
    state = HiFTVocoder(HiFTConfig()).state_dict()
    assert len(state) == 227
    by_hand = {
        "m_source.l_linear.weight": (1, 9),
        "conv_pre.weight_g": (512, 1, 1),
        "conv_pre.weight_v": (512, 80, 7),
        "ups.0.weight_g": (512, 1, 1),
        "ups.0.weight_v": (512, 256, 16),
        "ups.1.weight_v": (256, 128, 16),
        "source_downs.0.weight": (256, 18, 16),
        "source_downs.1.weight": (128, 18, 1),
        "source_resblocks.0.convs1.2.weight_v": (256, 256, 7),
        "source_resblocks.1.activations2.0.alpha": (128,),
        "resblocks.5.convs2.1.weight_v": (128, 128, 11),
        "resblocks.0.convs1.0.weight_g": (256, 1, 1),
        "conv_post.weight_v": (18, 128, 7),
        "conv_post.bias": (18,),
        "f0_predictor.condnet.8.weight_v": (512, 512, 3),
        "f0_predictor.classifier.weight": (1, 512),
    }
    assert {k: tuple(state[k].shape) for k in by_hand} == by_hand
    assert list(state)[:5] == ["m_source.l_linear.weight", "m_source.l_linear.bias", "conv_pre.bias",
                               "conv_pre.weight_g", "conv_pre.weight_v"]
    assert not [k for k in state if "parametrizations" in k or "stft_window" in k]
    assert sum(k.endswith(".alpha") for k in state) == 8 * 6


def test_save_load_round_trip(tiny, tmp_path):
    path = tmp_path / "hift.pt"
    torch.save(tiny.state_dict(), path)
    loaded = load_hift(path, TINY, fold=False)
    result = HiFTVocoder(TINY).load_state_dict(torch.load(path, weights_only=True))
    assert result.missing_keys == [] and result.unexpected_keys == []
    saved = loaded.state_dict()
    assert list(saved) == list(tiny.state_dict())
    assert all(torch.equal(saved[k], v) for k, v in tiny.state_dict().items())
    mel = random_mel(6)
    assert torch.equal(loaded.inference(mel, generator=seeded(0))[0], tiny.inference(mel, generator=seeded(0))[0])


def test_load_rejects_mismatched_weights_by_key(tiny, tmp_path):
    state = tiny.state_dict()
    renamed = dict(state)
    renamed["conv_pre.weight"] = renamed.pop("conv_pre.weight_v")
    with pytest.raises(CheckpointError, match="missing key `conv_pre.weight_v`"):
        load_hift_state_dict(HiFTVocoder(TINY), renamed)
    extra = dict(state, **{"ups.9.bias": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="unexpected key `ups.9.bias`"):
        load_hift_state_dict(HiFTVocoder(TINY), extra)
    path = tmp_path / "hift.pt"
    torch.save(state, path)
    wider = dataclasses.replace(TINY, base_channels=64)
    with pytest.raises(CheckpointError, match=r"`conv_pre.bias` has shape \(32,\).*\(64,\)"):
        load_hift(path, wider)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read .*junk.pt"):
        load_hift(tmp_path / "junk.pt", TINY)
    with pytest.raises(CheckpointError, match="absent.pt not found"):
        load_hift(tmp_path / "absent.pt", TINY)


def test_output_shape_rate_and_content(tiny):
    pcm, source = tiny.inference(random_mel(7, batch=2), generator=seeded(0))
    assert tiny.sample_rate == 22050
    assert pcm.shape == (2, 7 * 256) and source.shape == (2, 1, 7 * 256)
    assert torch.isfinite(pcm).all() and pcm.std() > 0.01
    assert pcm.abs().max() <= 0.99


def test_output_is_clamped_to_audio_limit(tiny):
    loud = build_random_hift(dataclasses.replace(TINY, audio_limit=0.25), seed=1)
    with torch.no_grad():
        loud.conv_post.parametrizations.weight.original0.mul_(4.0)
    pcm, _ = loud.inference(random_mel(6), generator=seeded(0))
    assert pcm.abs().max().item() == pytest.approx(0.25)
    assert (pcm.abs() == 0.25).sum() > 10


def test_random_weights_mix_voiced_and_unvoiced_frames(tiny):
    f0 = tiny.f0_predictor(random_mel(40)).detach()
    voiced = (f0 > TINY.nsf_voiced_threshold).float().mean().item()
    assert 0.5 < voiced < 0.98


def test_same_seed_same_output_other_seed_differs(tiny):
    mel = random_mel(5)
    first, source = tiny.inference(mel, generator=seeded(4))
    again, source_again = tiny.inference(mel, generator=seeded(4))
    other, _ = tiny.inference(mel, generator=seeded(5))
    assert torch.equal(first, again) and torch.equal(source, source_again)
    assert not torch.allclose(first, other, atol=1e-3)


def test_fold_weight_norm_keeps_outputs_bit_exact():
    model = build_random_hift(TINY, seed=2)
    mel = random_mel(5)
    before = model.inference(mel, generator=seeded(0))[0]
    fold_weight_norm(model)
    assert not any(k.endswith(("weight_g", "weight_v")) for k in model.state_dict())
    assert torch.equal(model.inference(mel, generator=seeded(0))[0], before)


def test_cache_source_overwrites_start_of_source(tiny):
    mel = random_mel(6)
    cache = torch.full((1, 1, 300), 0.5)
    pcm, source = tiny.inference(mel, cache_source=cache, generator=seeded(0))
    plain_pcm, plain_source = tiny.inference(mel, generator=seeded(0))
    assert torch.equal(source[:, :, :300], cache)
    assert torch.equal(source[:, :, 300:], plain_source[:, :, 300:])
    assert not torch.allclose(pcm[:, :256], plain_pcm[:, :256], atol=1e-4)
    with pytest.raises(InputError, match="cache_source of shape"):
        tiny.inference(mel, cache_source=torch.zeros(1, 1, 6 * 256 + 1))


def test_rejects_mel_of_wrong_shape(tiny):
    with pytest.raises(InputError, match=r"\[batch, 80, frames >= 1\]"):
        tiny.inference(torch.zeros(1, 79, 4))
    with pytest.raises(InputError, match=r"got \(1, 80, 0\)"):
        tiny.inference(torch.zeros(1, 80, 0))


def test_harmonic_source_math():
    source = HarmonicSource(22050, harmonics=2, sine_amp=0.1, noise_std=0.0, voiced_threshold=10)
    f0 = torch.full((1, 1, 512), 220.0)
    f0[..., 256:] = 0.0
    sines = source.sines(f0, seeded(0))
    expected = 0.1 * torch.sin(2 * math.pi * (torch.cumsum(f0[0, 0] / 22050, 0) % 1))
    assert torch.allclose(sines[0, 0, :256], expected[:256], atol=1e-6)
    assert sines[0, 1:, :256].abs().max() <= 0.1 and sines[0, 1, :256].std() > 0.05
    unvoiced_std = sines[0, :, 256:].std().item()
    assert unvoiced_std == pytest.approx(0.1 / 3, rel=0.15)


def test_chunked_vocoding_matches_one_shot_away_from_the_seam():
    """The reference's streaming: vocode the first chunk, keep all but its last frame, then vocode the
    rest with that frame prepended and the first chunk's last 256 source samples as cache.

    The excitation restarts its phase and redraws noise every call, so this compares the network
    path with the source branch silenced: outside 12 frames either side of the seam (the receptive
    field) chunked and one-shot PCM agree to 1e-6; near the seam they differ."""
    model = build_random_hift(TINY, seed=1)
    with torch.no_grad():
        for down in model.source_downs:
            down.weight.zero_()
            down.bias.zero_()
    frames, split, margin = 48, 24, 12
    mel = random_mel(frames)
    whole, _ = model.inference(mel, generator=seeded(0))
    first, first_source = model.inference(mel[:, :, :split], generator=seeded(0))
    second, second_source = model.inference(mel[:, :, split - 1:], cache_source=first_source[:, :, -256:],
                                            generator=seeded(1))
    chunked = torch.cat([first[:, :-256], second], dim=1)
    assert chunked.shape == whole.shape
    assert torch.equal(second_source[:, :, :256], first_source[:, :, -256:])
    far = torch.ones(frames * 256, dtype=torch.bool)
    far[(split - margin) * 256:(split + margin) * 256] = False
    assert (chunked - whole)[0, far].abs().max() < 1e-6
    assert (chunked - whole)[0, ~far].abs().max() > 1e-2


def test_matches_reference_hift_generator_bit_exact():
    """Same random weights in CosyVoice's HiFTGenerator (test-only: pip install --no-deps cosyvoice-package)."""
    reference_module = pytest.importorskip("cosyvoice.hifigan.generator")
    f0_module = pytest.importorskip("cosyvoice.hifigan.f0_predictor")
    model = build_random_hift(TINY, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reference = reference_module.HiFTGenerator(
            base_channels=32, f0_predictor=f0_module.ConvRNNF0Predictor(cond_channels=32)).eval()
    reference_state = reference.state_dict()
    assert list(model.state_dict()) == list(reference_state)
    reference.load_state_dict(model.state_dict())
    mel = random_mel(9, batch=2, seed=11)
    torch.manual_seed(5)
    ref_pcm, ref_source = reference.inference(mel)
    pcm, source = model.inference(mel, generator=seeded(5))
    assert torch.equal(pcm, ref_pcm) and torch.equal(source, ref_source)
    cache = ref_source[:, :, -256:]
    torch.manual_seed(6)
    ref_pcm, ref_source = reference.inference(mel, cache_source=cache)
    pcm, source = fold_weight_norm(model).inference(mel, cache_source=cache, generator=seeded(6))
    assert torch.equal(pcm, ref_pcm) and torch.equal(source, ref_source)


def test_float64_model_matches_float32_and_returns_float32_pcm(tiny):
    mel = random_mel(6)
    pcm32, source32 = tiny.inference(mel, generator=seeded(0))
    wide = build_random_hift(TINY, seed=1).double()
    pcm64, source64 = wide.inference(mel.double(), generator=seeded(0))
    assert pcm64.dtype == torch.float32 and source64.dtype == torch.float64
    assert torch.allclose(pcm64, pcm32, atol=1e-4) and torch.allclose(source64.float(), source32, atol=1e-4)


def test_released_names_also_inside_a_parent_module(tiny):
    parent = nn.ModuleDict({"hift": tiny})
    state = parent.state_dict()
    assert "hift.conv_pre.weight_g" in state and not any("parametrizations" in k for k in state)
    copy = nn.ModuleDict({"hift": HiFTVocoder(TINY)})
    result = copy.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(copy["hift"].ups[1].weight, tiny.ups[1].weight)
