"""The GLM-4-Voice decoder: released folder format, exact lengths, streaming against one-shot."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from vita_core.codec import load_decoder
from vita_core.codec.glm4voice.decoder_config import read_decoder_config, write_decoder_config
from vita_core.codec.glm4voice.flow import FlowConfig, FlowDecoder
from vita_core.codec.glm4voice.flow_encoder import block_causal_mask
from vita_core.codec.glm4voice.decoder import (
    DecodeOptions,
    GLM4VoiceDecoder,
    VocoderStream,
    crossfade_weights,
    load_glm4voice_decoder,
)
from vita_core.codec.glm4voice.hift import HiFTVocoder
from vita_core.tiny.glm4voice_decoder import RELEASED_HIFT
from vita_core.errors import CheckpointError, InputError

CODES = np.random.default_rng(0).integers(0, 16384, 130).tolist()


@pytest.fixture(scope="module")
def decoder(decoder_dir: Path) -> GLM4VoiceDecoder:
    return load_glm4voice_decoder(decoder_dir)


def test_released_config_round_trips(tmp_path: Path) -> None:
    write_decoder_config(tmp_path / "config.yaml", FlowConfig(), RELEASED_HIFT, 22050)
    text = (tmp_path / "config.yaml").read_text()
    assert "!new:cosyvoice.flow.flow.MaskedDiffWithXvec" in text and "!ref <spk_embed_dim>" in text
    flow, hift, rate = read_decoder_config(tmp_path / "config.yaml")
    assert flow == FlowConfig() and hift == RELEASED_HIFT and rate == 22050
    assert flow.frames_per_second == 22050 / 256 and flow.cfg_rate == 0.7 and flow.cosine_schedule


def test_flow_has_the_released_names_and_sizes() -> None:
    with torch.device("meta"):
        state = FlowDecoder(FlowConfig()).state_dict()
    # key names and shapes written out from the reference's MaskedDiffWithXvec / ConditionalDecoder
    expected = {
        "input_embedding.weight": (16384, 512),
        "spk_embed_affine_layer.weight": (80, 192),
        "encoder.embed.out.0.weight": (512, 512),
        "encoder.embed.out.1.bias": (512,),
        "encoder.encoders.5.self_attn.pos_bias_u": (8, 64),
        "encoder.encoders.5.self_attn.linear_pos.weight": (512, 512),
        "encoder.encoders.0.feed_forward.w_1.weight": (2048, 512),
        "encoder.encoders.0.norm_mha.weight": (512,),
        "encoder.after_norm.weight": (512,),
        "encoder_proj.weight": (80, 512),
        "length_regulator.model.9.weight": (80, 80, 3),
        "length_regulator.model.10.weight": (80,),
        "length_regulator.model.12.weight": (80, 80, 1),
        "decoder.estimator.time_mlp.linear_1.weight": (1024, 320),
        "decoder.estimator.down_blocks.0.0.block1.block.0.weight": (256, 320, 3),
        "decoder.estimator.down_blocks.0.0.mlp.1.weight": (256, 1024),
        "decoder.estimator.down_blocks.0.0.res_conv.weight": (256, 320, 1),
        "decoder.estimator.down_blocks.0.1.3.attn1.to_q.weight": (512, 256),
        "decoder.estimator.down_blocks.0.1.3.attn1.to_out.0.bias": (256,),
        "decoder.estimator.down_blocks.0.1.0.ff.net.0.proj.weight": (1024, 256),
        "decoder.estimator.down_blocks.0.1.0.ff.net.2.weight": (256, 1024),
        "decoder.estimator.down_blocks.0.2.conv.weight": (256, 256, 3),
        "decoder.estimator.down_blocks.1.2.weight": (256, 256, 3),
        "decoder.estimator.mid_blocks.11.1.3.norm3.bias": (256,),
        "decoder.estimator.up_blocks.0.0.block1.block.0.weight": (256, 512, 3),
        "decoder.estimator.up_blocks.0.2.conv.weight": (256, 256, 4),
        "decoder.estimator.up_blocks.1.2.weight": (256, 256, 3),
        "decoder.estimator.final_block.block.1.weight": (256,),
        "decoder.estimator.final_proj.weight": (80, 256, 1),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert not any("attn1.to_q.bias" in k or "norm2" in k or "pos_enc" in k for k in state)
    assert len(state) == 1185
    assert sum(v.numel() for v in state.values()) == 111_166_208


def test_block_causal_mask() -> None:
    mask = block_causal_mask(12, 5).int()
    assert mask[0].tolist() == [1] * 5 + [0] * 7  # first block sees itself whole
    assert mask[6].tolist() == [1] * 10 + [0] * 2  # second block sees the first and itself
    assert mask[11].tolist() == [1] * 12


def test_folder_loads_exactly(decoder_dir: Path, decoder: GLM4VoiceDecoder) -> None:
    saved = torch.load(decoder_dir / "flow.pt", weights_only=True)
    assert set(saved) == set(decoder.flow.state_dict())
    assert all(torch.equal(saved[k], v) for k, v in decoder.flow.state_dict().items())
    saved = torch.load(decoder_dir / "hift.pt", weights_only=True)
    assert set(saved) == set(HiFTVocoder(decoder.hift.config).state_dict())  # loaded, then weight norm folded
    assert "ups.0.weight_g" in saved and "m_source.l_linear.weight" in saved
    assert isinstance(load_decoder(decoder_dir), GLM4VoiceDecoder)


def _copy(decoder_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(decoder_dir, tmp_path / "dec"))


def test_bad_folders_give_clear_errors(decoder_dir: Path, tmp_path: Path) -> None:
    bad = _copy(decoder_dir, tmp_path)
    (bad / "hift.pt").unlink()
    with pytest.raises(CheckpointError, match="lacks hift.pt"):
        load_glm4voice_decoder(bad)
    shutil.copy(decoder_dir / "hift.pt", bad / "hift.pt")
    state = torch.load(bad / "flow.pt", weights_only=True)
    state["encoder_proj.weight"] = state["encoder_proj.weight"][:, :-1]
    state.pop("encoder.after_norm.bias")
    torch.save(state, bad / "flow.pt")
    with pytest.raises(CheckpointError, match=r"missing \['encoder.after_norm.bias'\].*wrong shape \['encoder_proj.weight'\]"):
        load_glm4voice_decoder(bad)
    (bad / "flow.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read .*flow.pt"):
        load_glm4voice_decoder(bad)
    shutil.copy(decoder_dir / "flow.pt", bad / "flow.pt")
    text = (bad / "config.yaml").read_text()
    (bad / "config.yaml").write_text(text.replace("block_rel_selfattn", "rel_selfattn"))
    with pytest.raises(CheckpointError, match="selfattention_layer_type.*'block_rel_selfattn'"):
        load_glm4voice_decoder(bad)
    (bad / "config.yaml").write_text(text.replace("cosyvoice.flow.decoder.ConditionalDecoder", "my.Decoder"))
    with pytest.raises(CheckpointError, match="estimator.*my.Decoder"):
        load_glm4voice_decoder(bad)


def test_decode_length_rate_and_range(decoder: GLM4VoiceDecoder) -> None:
    pcm, rate = decoder.decode(CODES[:25])
    assert rate == 22050
    assert decoder.frames_for(25) == 172  # int(25 / 12.5 * 22050 / 256)
    assert pcm.dtype == np.float32 and len(pcm) == 172 * 256
    assert np.isfinite(pcm).all() and np.abs(pcm).max() <= 0.99 and pcm.std() > 0
    again, _ = decoder.decode(CODES[:25])
    assert np.array_equal(pcm, again)  # seeded noise: decoding is deterministic
    assert len(decoder.decode([])[0]) == 0


def test_bad_codes_and_options(decoder: GLM4VoiceDecoder) -> None:
    with pytest.raises(InputError, match=r"speech codes must lie in \[0, 16384\)"):
        decoder.decode([1, 16384])
    with pytest.raises(InputError, match="must lie"):
        decoder.stream().push([-1])
    with pytest.raises(InputError, match="chunk_codes=0 is out of range"):
        decoder.stream(chunk_codes=0)


def _stream(decoder: GLM4VoiceDecoder, codes: list[int], **options: int) -> tuple[np.ndarray, list[int], object]:
    s = decoder.stream(**options)
    parts = [s.push([c]) for c in codes] + [s.flush()]
    return np.concatenate(parts), [len(p) for p in parts if len(p)], s


def test_one_chunk_stream_equals_decode_exactly(decoder: GLM4VoiceDecoder) -> None:
    pcm, _ = decoder.decode(CODES[:30])
    streamed, sizes, _ = _stream(decoder, CODES[:30], first_chunk_codes=100, first_chunk_steps=10)
    assert sizes == [len(pcm)]
    assert np.array_equal(streamed, pcm)


def test_stream_length_and_chunking(decoder: GLM4VoiceDecoder) -> None:
    streamed, sizes, s = _stream(decoder, CODES)
    assert len(streamed) == decoder.samples_for(len(CODES))
    # first PCM after the first 8 codes, then one piece per 20 codes, the rest at flush
    assert len(sizes) == 1 + (len(CODES) - 8) // 20 + 1
    assert np.isfinite(streamed).all() and np.abs(streamed).max() <= 0.99
    # bounded work: every full chunk runs the flow over its 20 new codes plus at most 10 before
    assert s.window_codes == [8, 28] + [30] * (len(s.window_codes) - 3) + [10 + (len(CODES) - 8) % 20]


def test_streamed_mel_stays_close_to_one_shot(decoder_dir: Path) -> None:
    """Streaming cannot see future frames, so it is not exact; it must stay well inside the
    decoder's own sampling spread (two one-shot decodes with different noise seeds)."""
    dec = load_glm4voice_decoder(decoder_dir, options=DecodeOptions(first_chunk_steps=10))
    collected: list[torch.Tensor] = []

    class Capture:
        def push(self, mel: torch.Tensor, final: bool) -> np.ndarray:
            collected.append(mel)
            return np.zeros(0, dtype=np.float32)

    s = dec.stream()
    s.vocoder = Capture()
    for c in CODES:
        s.push([c])
    s.flush()
    streamed = torch.cat(collected, dim=-1)
    one_shot = dec.mel(CODES)
    assert streamed.shape == one_shot.shape
    other_seed = load_glm4voice_decoder(decoder_dir, options=DecodeOptions(seed=7)).mel(CODES)
    spread = (other_seed - one_shot).abs().mean()
    deviation = (streamed - one_shot).abs().mean()
    assert deviation < 0.35 * spread


def test_vocoding_in_pieces_equals_vocoding_at_once(decoder: GLM4VoiceDecoder) -> None:
    """Seams: the excitation continues across pieces, the tail of each piece is held back and
    replaced by its next version (one-frame raised-cosine fade), so the joined PCM equals the
    one-shot PCM of the same mel everywhere, seams included (measured: max error about 1e-4 for
    an output RMS of 0.07; without the hold, about 0.3)."""
    mel = decoder.mel(CODES[:60], steps=2)
    whole, _ = decoder.vocode(mel)
    whole = whole.numpy()
    voc = VocoderStream(decoder, decoder.options)
    cuts = [0, 100, 137, 250, mel.shape[-1]]
    joined = np.concatenate([voc.push(mel[:, :, a:b], final=b == mel.shape[-1]) for a, b in zip(cuts, cuts[1:])])
    assert len(joined) == len(whole)
    assert np.abs(joined - whole).max() < 1e-3
    fade_in, fade_out = crossfade_weights(256)
    assert np.allclose(fade_in + fade_out, 1) and fade_in[0] < 0.01 and fade_out[-1] < 0.01


def test_options_validate() -> None:
    with pytest.raises(InputError, match="vocoder_context_frames=1 is out of range"):
        DecodeOptions(vocoder_context_frames=1, vocoder_hold_frames=2)
    assert replace(DecodeOptions(), steps=4).steps == 4
