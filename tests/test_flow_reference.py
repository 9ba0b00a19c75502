"""Our flow decoder against CosyVoice's own modules, on the same random weights.

Runs where the reference is installed (README's set-up installs `cosyvoice-package` and
`matcha-tts` without their training dependencies). The block-causal attention of the
GLM-4-Voice encoder exists only in GLM-4-Voice's repository, which is not on a package
registry; CosyVoice's ConformerEncoder is the same network with full attention, so the encoder
is compared with one block spanning the whole input, and the block mask is tested by hand in
test_codec_decoder.py, as is the nearest-neighbour stretch (the package's regulator is linear).
"""

from __future__ import annotations

import math

import pytest
import torch

from vita_core.codec.glm4voice.flow import FlowConfig, FlowDecoder, flow_noise
from vita_core.codec.glm4voice.flow_encoder import EncoderConfig
from vita_core.tiny.glm4voice_decoder import TINY_FLOW

ref_encoder = pytest.importorskip("cosyvoice.transformer.encoder")
ref_decoder = pytest.importorskip("cosyvoice.flow.decoder")
ref_regulator = pytest.importorskip("cosyvoice.flow.length_regulator")

FULL = FlowConfig(**{**TINY_FLOW.__dict__, "encoder": EncoderConfig(**{**TINY_FLOW.encoder.__dict__, "block_size": 1000})})


@pytest.fixture(scope="module")
def ours() -> FlowDecoder:
    torch.manual_seed(3)
    flow = FlowDecoder(FULL).double().eval()
    with torch.no_grad():  # non-trivial norms and position biases, so every parameter matters
        for name, p in flow.named_parameters():
            if "norm" in name or "pos_bias" in name or name.endswith("block.1.weight"):
                p.add_(0.3 * torch.randn_like(p))
    return flow


def _reference(ours: FlowDecoder) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    e, s = FULL.encoder, FULL.estimator
    enc = ref_encoder.ConformerEncoder(
        input_size=e.input_size, output_size=e.output_size, attention_heads=e.attention_heads,
        linear_units=e.linear_units, num_blocks=e.num_blocks, dropout_rate=0.0, positional_dropout_rate=0.0,
        attention_dropout_rate=0.0, normalize_before=True, input_layer="linear", pos_enc_layer_type="rel_pos_espnet",
        selfattention_layer_type="rel_selfattn", use_cnn_module=False, macaron_style=False)
    est = ref_decoder.ConditionalDecoder(
        in_channels=s.in_channels, out_channels=s.out_channels, channels=list(s.channels), dropout=0.0,
        attention_head_dim=s.attention_head_dim, n_blocks=s.n_blocks, num_mid_blocks=s.num_mid_blocks,
        num_heads=s.num_heads, act_fn="gelu")
    reg = ref_regulator.InterpolateRegulator(channels=FULL.output_size, sampling_ratios=[1] * FULL.regulator_layers)
    enc, est, reg = enc.double().eval(), est.double().eval(), reg.double().eval()
    # strict loads: the reference modules take our parameter names unchanged
    enc.load_state_dict({k[len("encoder."):]: v for k, v in ours.state_dict().items() if k.startswith("encoder.")})
    est.load_state_dict({k[len("decoder.estimator."):]: v for k, v in ours.state_dict().items() if k.startswith("decoder.estimator.")})
    reg.load_state_dict({k[len("length_regulator."):]: v for k, v in ours.state_dict().items() if k.startswith("length_regulator.")})
    return enc, est, reg


def test_encoder_regulator_and_estimator_match_cosyvoice(ours: FlowDecoder) -> None:
    enc, est, reg = _reference(ours)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 23, FULL.input_size, generator=g, dtype=torch.float64)
    want, _ = enc(x, torch.tensor([23]))
    torch.testing.assert_close(ours.encoder(x), want, rtol=1e-9, atol=1e-9)

    # the package's regulator stretches linearly where GLM-4-Voice's stretches by nearest
    # neighbour (tested by hand in test_codec_decoder.py), so compare at equal lengths
    h = torch.randn(1, 23, FULL.output_size, generator=g, dtype=torch.float64)
    want, _ = reg(h, torch.tensor([23]))
    torch.testing.assert_close(ours.length_regulator(h.transpose(1, 2), 23), want.transpose(1, 2), rtol=1e-9, atol=1e-9)

    frames = 37  # odd, so the U-Net's down/up path has to trim
    x, mu, cond = (torch.randn(2, 80, frames, generator=g, dtype=torch.float64) for _ in range(3))
    spk = torch.randn(2, 80, generator=g, dtype=torch.float64)
    t = torch.tensor([0.3, 0.3], dtype=torch.float64)
    want = est(x, torch.ones(2, 1, frames, dtype=torch.float64), mu, t, spk, cond)
    torch.testing.assert_close(ours.decoder.estimator(x, mu, t, spk, cond), want, rtol=1e-9, atol=1e-9)


def test_mel_matches_the_reference_pipeline(ours: FlowDecoder) -> None:
    """Embedding -> encoder -> projection -> regulator -> Euler with CFG and a cosine schedule,
    written out step by step over the reference modules."""
    enc, est, reg = _reference(ours)
    codes = torch.randint(0, FULL.vocab_size, (17,), generator=torch.Generator().manual_seed(1))
    frames, steps, rate = FULL.frames_for(17), 4, FULL.cfg_rate
    prompt = torch.randn(1, 80, 30, dtype=torch.float64)
    got = ours.mel(codes, frames, steps, prompt=prompt)
    with torch.no_grad():
        h, _ = enc(ours.input_embedding(codes)[None], torch.tensor([17]))
        mu = reg.model(torch.nn.functional.interpolate(ours.encoder_proj(h).transpose(1, 2), size=frames, mode="nearest"))
        spk = ours.spk_embed_affine_layer(torch.nn.functional.normalize(torch.zeros(1, 192, dtype=torch.float64), dim=1))
        cond = torch.zeros(1, 80, frames, dtype=torch.float64)
        cond[:, :, :30] = prompt
        x = flow_noise(0, frames, 80, 42, torch.device("cpu"), torch.float64)
        t_span = 1 - torch.cos(torch.linspace(0, 1, steps + 1, dtype=torch.float64) * 0.5 * math.pi)
        mask = torch.ones(1, 1, frames, dtype=torch.float64)
        for k in range(steps):
            t, dt = t_span[k], t_span[k + 1] - t_span[k]
            v = est(x, mask, mu, t, spk, cond)
            v_free = est(x, mask, torch.zeros_like(mu), t, torch.zeros_like(spk), torch.zeros_like(cond))
            x = x + dt * ((1 + rate) * v - rate * v_free)
    torch.testing.assert_close(got, x, rtol=1e-7, atol=1e-7)
