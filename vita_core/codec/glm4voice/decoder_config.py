"""Read the released glm-4-voice-decoder `config.yaml` without executing it.

The file is HyperPyYAML: `!new:cosyvoice.flow.flow.MaskedDiffWithXvec` builds objects,
`!ref <spk_embed_dim>` points at a top-level value and `!apply:torch.manual_seed` calls
functions. We load it with a safe YAML loader that turns every tagged node into plain data
(`{"_class": "...", ...kwargs}`), resolve `!ref`, check that each component is the class the
released decoder uses, and keep only the sizes vita needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vita_core.codec.glm4voice.flow import FlowConfig
from vita_core.codec.glm4voice.flow_encoder import EncoderConfig
from vita_core.codec.glm4voice.flow_estimator import EstimatorConfig
from vita_core.errors import CheckpointError

EXPECTED = {
    "flow": "cosyvoice.flow.flow.MaskedDiffWithXvec",
    "encoder": "cosyvoice.transformer.encoder.BlockConformerEncoder",
    "length_regulator": "cosyvoice.flow.length_regulator.InterpolateRegulator",
    "decoder": "cosyvoice.flow.flow_matching.ConditionalCFM",
    "estimator": "cosyvoice.flow.decoder.ConditionalDecoder",
    "hift": "cosyvoice.hifigan.generator.HiFTGenerator",
}


class _Ref(str):
    """A `!ref <name>` placeholder, resolved after loading."""


class _Loader(yaml.SafeLoader):
    pass


def _tagged(loader: _Loader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = {"_args": loader.construct_sequence(node, deep=True)}
    else:
        value = {"_args": loader.construct_scalar(node)}
    return {"_class": suffix, **value}


_Loader.add_multi_constructor("!new:", _tagged)
_Loader.add_multi_constructor("!name:", _tagged)
_Loader.add_multi_constructor("!apply:", _tagged)
_Loader.add_constructor("!ref", lambda loader, node: _Ref(loader.construct_scalar(node)))


def _resolve(value: Any, top: dict) -> Any:
    if isinstance(value, _Ref):
        name = value.strip().strip("<>")
        if name not in top:
            raise CheckpointError(f"config.yaml refers to <{name}>, which it does not define")
        return _resolve(top[name], top)
    if isinstance(value, dict):
        return {k: _resolve(v, top) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, top) for v in value]
    return value


def _component(parent: dict, key: str, where: str) -> dict:
    node = parent.get(key)
    if not isinstance(node, dict) or node.get("_class") != EXPECTED[key]:
        found = node.get("_class") if isinstance(node, dict) else node
        raise CheckpointError(
            f"{where}: `{key}` is {found!r}, but vita implements the released GLM-4-Voice decoder "
            f"({EXPECTED[key]}); use the glm-4-voice-decoder folder's own config.yaml"
        )
    return node


def _need(node: dict, key: str, where: str, expected: Any = None) -> Any:
    if key not in node:
        raise CheckpointError(f"{where}: field `{key}` is missing; use the released glm-4-voice-decoder config.yaml")
    value = node[key]
    if expected is not None and value != expected:
        raise CheckpointError(
            f"{where}: `{key}` is {value!r}; vita implements the released GLM-4-Voice decoder, which uses {expected!r}"
        )
    return value


def read_decoder_config(path: Path) -> tuple[FlowConfig, dict, int]:
    """config.yaml -> (flow sizes, the hift mapping, sample rate)."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CheckpointError(f"cannot read decoder config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"decoder config {path} is not a YAML mapping; use the released config.yaml")
    top = _resolve(raw, raw)
    where = str(path)
    flow = _component(top, "flow", where)
    enc = _component(flow, "encoder", where)
    reg = _component(flow, "length_regulator", where)
    cfm = _component(flow, "decoder", where)
    est = _component(cfm, "estimator", where)
    hift = _component(top, "hift", where)
    for key, value in (("input_layer", "linear"), ("pos_enc_layer_type", "rel_pos_espnet"),
                       ("selfattention_layer_type", "block_rel_selfattn"), ("use_cnn_module", False),
                       ("macaron_style", False), ("normalize_before", True)):
        _need(enc, key, where, value)
    _need(est, "act_fn", where, "gelu")
    params = _need(cfm, "cfm_params", where)
    params = params.get("content", params)
    _need(params, "solver", where, "euler")
    sample_rate = int(_need(top, "sample_rate", where))
    hop = int(_need(hift, "istft_params", where)["hop_len"])
    for rate in _need(hift, "upsample_rates", where):
        hop *= int(rate)
    encoder = EncoderConfig(
        input_size=int(_need(enc, "input_size", where)), output_size=int(_need(enc, "output_size", where)),
        attention_heads=int(_need(enc, "attention_heads", where)), linear_units=int(_need(enc, "linear_units", where)),
        num_blocks=int(_need(enc, "num_blocks", where)), block_size=int(_need(enc, "block_size", where)),
    )
    estimator = EstimatorConfig(
        in_channels=int(_need(est, "in_channels", where)), out_channels=int(_need(est, "out_channels", where)),
        channels=tuple(int(c) for c in _need(est, "channels", where)),
        attention_head_dim=int(_need(est, "attention_head_dim", where)), n_blocks=int(_need(est, "n_blocks", where)),
        num_mid_blocks=int(_need(est, "num_mid_blocks", where)), num_heads=int(_need(est, "num_heads", where)),
    )
    cfg = FlowConfig(
        vocab_size=int(_need(flow, "vocab_size", where)), input_size=int(_need(flow, "input_size", where)),
        output_size=int(_need(flow, "output_size", where)), spk_embed_dim=int(_need(flow, "spk_embed_dim", where)),
        input_frame_rate=float(_need(flow, "input_frame_rate", where)), frames_per_second=sample_rate / hop,
        regulator_layers=len(_need(reg, "sampling_ratios", where)), cfg_rate=float(params.get("inference_cfg_rate", 0.0)),
        cosine_schedule=params.get("t_scheduler") == "cosine", encoder=encoder, estimator=estimator,
    )
    if estimator.in_channels != 4 * cfg.output_size or int(_need(reg, "channels", where)) != cfg.output_size:
        raise CheckpointError(f"{where}: estimator/regulator channels do not match the {cfg.output_size} mel bins")
    hift_kwargs = {k: v for k, v in hift.items() if k != "_class"}
    f0 = hift_kwargs.get("f0_predictor")
    if isinstance(f0, dict):
        hift_kwargs["f0_predictor"] = {k: v for k, v in f0.items() if k != "_class"}
    return cfg, hift_kwargs, sample_rate


def write_decoder_config(path: Path, cfg: FlowConfig, hift: dict, sample_rate: int) -> None:
    """Write a config.yaml in the released HyperPyYAML form (used to build test folders)."""
    e, s = cfg.encoder, cfg.estimator
    f0 = hift.get("f0_predictor", {})
    hift_lines = "\n".join(f"    {k}: {_yaml_value(v)}" for k, v in hift.items() if k != "f0_predictor")
    f0_lines = "\n".join(f"        {k}: {_yaml_value(v)}" for k, v in f0.items())
    text = f"""# glm-4-voice-decoder layout (written by vita)
__set_seed1: !apply:torch.manual_seed [1986]
sample_rate: {sample_rate}
spk_embed_dim: {cfg.spk_embed_dim}

flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    input_size: {cfg.input_size}
    output_size: {cfg.output_size}
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: {cfg.vocab_size}
    input_frame_rate: {cfg.input_frame_rate}
    only_mask_loss: True
    encoder: !new:cosyvoice.transformer.encoder.BlockConformerEncoder
        output_size: {e.output_size}
        attention_heads: {e.attention_heads}
        linear_units: {e.linear_units}
        num_blocks: {e.num_blocks}
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'block_rel_selfattn'
        block_size: {e.block_size}
        input_size: {e.input_size}
        use_cnn_module: False
        macaron_style: False
    length_regulator: !new:cosyvoice.flow.length_regulator.InterpolateRegulator
        channels: {cfg.output_size}
        sampling_ratios: {[1] * cfg.regulator_layers}
    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: {cfg.output_size}
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: '{"cosine" if cfg.cosine_schedule else "linear"}'
                training_cfg_rate: 0.2
                inference_cfg_rate: {cfg.cfg_rate}
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.ConditionalDecoder
            in_channels: {s.in_channels}
            out_channels: {s.out_channels}
            channels: {list(s.channels)}
            dropout: 0
            attention_head_dim: {s.attention_head_dim}
            n_blocks: {s.n_blocks}
            num_mid_blocks: {s.num_mid_blocks}
            num_heads: {s.num_heads}
            act_fn: 'gelu'

hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
{hift_lines}
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
{f0_lines}
"""
    path.write_text(text, encoding="utf-8")


def _yaml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)
