"""Build a stage's model from the previous checkpoint, decide what trains, and at which rate.

Growing from N to M MCTP modules follows the reference (finetune_sts, block "init mtp layers"):
the decoder layer of new module k (`model.layers.{L+k}`) is a copy of `model.layers.{L+k-1}`,
so module 0 starts from the last LLM layer and module k>0 from module k-1; `mtp_projs.k` and
both norms k are copies of k-1, except for k = 0: projection normal(0, initializer_range),
norms ones.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from vita_core.errors import CheckpointError, InputError
from vita_core.model.checkpoint import (
    PRESETS, hf_config, is_plus, load_model, preset_config, read_config, with_mtp_fields,
)
from vita_core.model.modeling import VitaAudioForCausalLM
from vita_core.tokens import TokenLayout
from vita_core.train.stages import StageSpec


def mtp_parameter_names(model: VitaAudioForCausalLM) -> set[str]:
    """Names of the MCTP parameters: mtp_* and the decoder layers L..L+N-1."""
    first = model.num_backbone_layers
    layer = re.compile(r"^model\.layers\.(\d+)\.")
    names = set()
    for name, _ in model.named_parameters():
        m = layer.match(name)
        if name.startswith("mtp_") or (m and int(m.group(1)) >= first):
            names.add(name)
    return names


def grow_state_dict(state: dict[str, torch.Tensor], backbone_layers: int, old_mtp: int, new_mtp: int,
                    hidden: int, init_std: float, seed: int) -> dict[str, torch.Tensor]:
    """Add MCTP modules old_mtp..new_mtp-1 to a state dict by the reference's copy rules."""
    state = dict(state)
    gen = torch.Generator().manual_seed(seed)
    for k in range(old_mtp, new_mtp):
        src_layer, dst_layer = f"model.layers.{backbone_layers + k - 1}.", f"model.layers.{backbone_layers + k}."
        for name in [n for n in state if n.startswith(src_layer)]:
            state[dst_layer + name[len(src_layer):]] = state[name].clone()
        for part in ("mtp_projs", "mtp_embed_norms", "mtp_hidden_norms"):
            if k > 0:
                state[f"{part}.{k}.weight"] = state[f"{part}.{k - 1}.weight"].clone()
        if k == 0:
            dtype = state["model.norm.weight"].dtype
            proj = torch.empty(hidden, 2 * hidden, dtype=torch.float32).normal_(0.0, init_std, generator=gen)
            state["mtp_projs.0.weight"] = proj.to(dtype)
            state["mtp_embed_norms.0.weight"] = torch.ones(hidden, dtype=dtype)
            state["mtp_hidden_norms.0.weight"] = torch.ones(hidden, dtype=dtype)
    return state


def init_model(init: str | Path, spec: StageSpec, attn_implementation: str = "sdpa",
               seed: int | None = None, vocab_size: int | None = None,
               tokens: TokenLayout | None = None) -> VitaAudioForCausalLM:
    """The stage's starting model (fp32, CPU): a checkpoint folder grown to spec.num_mtp modules,
    or a size preset name (random init, for trying the recipe from scratch; with `tokens`, the
    layout of the tokenizer it is for, its vocabulary is that tokenizer's). A vocabulary smaller
    than `vocab_size` (the tokenizer's length; Qwen2.5's 152064 before the audio tokens) grows to
    it, rounded up to a multiple of 8, with Hugging Face's mean resizing, as the reference does."""
    seed = spec.seed if seed is None else seed
    if not Path(init).is_dir():
        if str(init).lower() not in PRESETS:
            raise InputError(f"--init {init} is neither a checkpoint folder nor a preset ({', '.join(PRESETS)})")
        config = preset_config(str(init), num_mtp=0, tokens=tokens)
        torch.manual_seed(seed)
        model = VitaAudioForCausalLM(hf_config(config, attn_implementation))
        model.upstream_config = config
        state, old_mtp = model.state_dict(), 0
    else:
        config = read_config(init)
        if is_plus(config):
            raise CheckpointError(f"{init} is a VITA-Audio-Plus checkpoint (SenseVoice audio input); vita train "
                                  "runs the GLM-4-Voice-token recipe: start from Qwen2.5, a stage checkpoint, "
                                  "VITA-Audio-Boost or -Balance")
        old_mtp = int(config.get("num_nextn_predict_layers", 0) or 0)
        model = load_model(init, dtype=torch.float32, attn_implementation=attn_implementation)
        state = model.state_dict()
    if vocab_size is not None and vocab_size > model.config.vocab_size:
        model.resize_token_embeddings(vocab_size, pad_to_multiple_of=8)
        model.upstream_config = {**model.upstream_config, "vocab_size": model.config.vocab_size}
        state = model.state_dict()
    if old_mtp > spec.num_mtp:
        raise CheckpointError(
            f"{init} has {old_mtp} MCTP modules but stage {spec.stage} trains {spec.num_mtp}; "
            f"start stage {spec.stage} from the previous stage's checkpoint"
        )
    if old_mtp == spec.num_mtp:
        return model.float().train()
    backbone = model.num_backbone_layers
    grown = grow_state_dict(state, backbone, old_mtp, spec.num_mtp, model.config.hidden_size,
                            model.config.initializer_range, seed)
    new_config = with_mtp_fields(dict(model.upstream_config), spec.num_mtp)
    new_config["num_hidden_layers"] = backbone + spec.num_mtp
    new_config["max_window_layers"] = backbone
    new_config["mtp_loss_weight"] = spec.mtp_loss_weight
    cfg = hf_config(new_config, attn_implementation)
    with torch.device("meta"):
        bigger = VitaAudioForCausalLM(cfg)
    if cfg.tie_word_embeddings:
        grown.pop("lm_head.weight", None)
    bigger.load_state_dict(grown, strict=not cfg.tie_word_embeddings, assign=True)
    if cfg.tie_word_embeddings:
        bigger.lm_head.weight = bigger.model.embed_tokens.weight
    bigger.model.rotary_emb = type(bigger.model.rotary_emb)(config=cfg)
    bigger.upstream_config = new_config
    return bigger.float().train()


def set_trainable(model: VitaAudioForCausalLM, spec: StageSpec) -> None:
    """Stage 1 and 4: everything; stages 2-3: exactly the MCTP parameters."""
    mtp = mtp_parameter_names(model)
    for name, param in model.named_parameters():
        param.requires_grad_(spec.trainable == "all" or name in mtp)


def param_groups(model: VitaAudioForCausalLM, spec: StageSpec) -> list[dict[str, Any]]:
    """AdamW groups: (backbone | MCTP) x (decay | no decay). MCTP runs at lr * mtp_lr_mult; biases
    and norm weights (1-D tensors) never decay, as Hugging Face's optimizer set-up does."""
    mtp = mtp_parameter_names(model)
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        groups.setdefault((name in mtp, param.ndim >= 2), []).append(param)
    out = []
    for (is_mtp, decays), params in sorted(groups.items()):
        out.append({
            "params": params,
            "name": f"{'mtp' if is_mtp else 'backbone'}{'' if decays else '_no_decay'}",
            "lr": spec.lr * (spec.mtp_lr_mult if is_mtp else 1.0),
            "weight_decay": spec.weight_decay if decays else 0.0,
        })
    return out


def lr_ratio(step: int, total: int, spec: StageSpec) -> float:
    """DeepSpeed WarmupCosineLR (warmup_min_ratio 0): warm-up over ratio*total steps on a log or
    linear curve, then cosine from the peak down to min_lr_ratio of it at `total`."""
    warmup = int(spec.warmup_ratio * total)
    if step < warmup and warmup > 1:
        if spec.warmup_shape == "log":
            return math.log(step + 1) / math.log(warmup)
        return step / warmup
    done = min(step - warmup + 1, total - warmup) if total > warmup else 1
    cosine = (1 + math.cos(math.pi * done / max(total - warmup, 1))) / 2
    return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * cosine
