"""Load and save checkpoints in the upstream VITA-Audio format.

A folder holds `config.json` (Qwen2 fields, `num_hidden_layers = L + N`,
`num_nextn_predict_layers = N`, `model_type` "qwen2_mtp", or plain "qwen2" for a stage-1
checkpoint with N = 0), safetensors weights (one file or shards + index) and, usually,
the tokenizer and `generation_config.json`. Keys must match exactly: nothing missing, nothing
unexpected (a tied lm_head is the one documented exception).

VITA-Audio-Plus folders (`model_type` "qwen2_mtp_sensevoice") also hold the SenseVoice encoder and
its projector under `model.audio_model.` / `model.audio_projection.`; `load_model` loads the LLM
part and `vita_core.codec.sensevoice.plus_audio` the audio part, each key for key.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from transformers import Qwen2Config

from vita_core.errors import CheckpointError, InputError
from vita_core.files import disk_full, file_mode, is_disk_full, staging_folder, swap_folder
from vita_core.model.modeling import VitaAudioForCausalLM
from vita_core.tokens import TokenLayout

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "models"
PRESETS = ("tiny", "mini", "0.5b", "7b", "72b")
RELEASED_VOCAB = 168072  # the released checkpoints' vocab_size: 168069 tokenizer ids, padded to a multiple of 8
PLUS_MODEL_TYPE = "qwen2_mtp_sensevoice"
PLUS_AUDIO_PREFIXES = ("model.audio_model.", "model.audio_projection.")

# Fields written to config.json, in the shape transformers 4.48 (the reference's pin) reads.
_QWEN_FIELDS = (
    "attention_dropout", "bos_token_id", "eos_token_id", "hidden_act", "hidden_size", "initializer_range",
    "intermediate_size", "max_position_embeddings", "max_window_layers", "num_attention_heads",
    "num_hidden_layers", "num_key_value_heads", "rms_norm_eps", "rope_theta", "sliding_window",
    "tie_word_embeddings", "use_cache", "use_sliding_window", "vocab_size",
)


def preset_config(name: str, num_mtp: int | None = None, tokens: TokenLayout | None = None) -> dict[str, Any]:
    """Upstream-format config dict for a size preset in recipes/models/<name>.yaml.

    The vocabulary is the released one (168072 ids) unless `tokens` (the layout of the tokenizer the
    model is for) is given: then vocab_size is its length padded to a multiple of 8, as the released
    config pads 168069, and bos/eos are its <|endoftext|> / <|im_end|> ids.
    """
    path = RECIPES / f"{name.lower()}.yaml"
    if not path.is_file():
        raise InputError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}")
    spec = yaml.safe_load(path.read_text())
    n = int(spec.pop("num_nextn_predict_layers") if num_mtp is None else num_mtp)
    spec.pop("num_nextn_predict_layers", None)
    layers = int(spec.pop("num_backbone_layers"))
    base = {
        "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu",
        "initializer_range": 0.02, "max_position_embeddings": 32768, "max_window_layers": layers,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "sliding_window": 131072, "use_cache": True,
        "use_sliding_window": False, "vocab_size": RELEASED_VOCAB, "tie_word_embeddings": False,
    }
    base.update(spec)
    if tokens is not None:
        base.update(vocab_size=-(-tokens.vocab_size // 8) * 8, bos_token_id=tokens.endoftext, eos_token_id=tokens.im_end)
    base["num_hidden_layers"] = layers + n
    return with_mtp_fields(base, n)


def with_mtp_fields(config: dict[str, Any], num_mtp: int) -> dict[str, Any]:
    """Set the fields that say how many MCTP modules a checkpoint has (0: plain Qwen2)."""
    out = {k: v for k, v in config.items() if k not in ("num_nextn_predict_layers", "mtp_loss_weight", "auto_map")}
    if config.get("model_type") == PLUS_MODEL_TYPE:  # Plus keeps its type at every N, as upstream's configs
        out.update(architectures=["Qwen2MTPSenseVoiceForCausalLM"], num_nextn_predict_layers=num_mtp,
                   mtp_loss_weight=config.get("mtp_loss_weight", 1.0))
    elif num_mtp:
        out.update(model_type="qwen2_mtp", architectures=["Qwen2MTPForCausalLM"],
                   num_nextn_predict_layers=num_mtp, mtp_loss_weight=config.get("mtp_loss_weight", 1.0))
    else:
        out.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    return out


def hf_config(config: dict[str, Any], attn_implementation: str = "sdpa") -> Qwen2Config:
    """A transformers Qwen2Config carrying the MCTP fields."""
    fields = {k: config[k] for k in _QWEN_FIELDS if k in config}
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if k not in fields]
    if missing:
        raise CheckpointError(f"config.json lacks {', '.join(missing)}; it is not a Qwen2 / VITA-Audio config")
    cfg = Qwen2Config(**fields)
    cfg.num_nextn_predict_layers = int(config.get("num_nextn_predict_layers", 0) or 0)
    cfg.mtp_loss_weight = float(config.get("mtp_loss_weight", 1.0))
    if cfg.num_nextn_predict_layers >= cfg.num_hidden_layers:
        raise CheckpointError("config.json: num_nextn_predict_layers must be smaller than num_hidden_layers")
    cfg._attn_implementation = attn_implementation
    return cfg


def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no config.json; point --model at a VITA-Audio checkpoint folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); re-copy the checkpoint") from None


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / n for n in names]
    elif (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    else:
        raise CheckpointError(f"{folder} has no model.safetensors or model.safetensors.index.json")
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise CheckpointError(f"{folder} is missing weight shards: {', '.join(absent)}; the download is incomplete")
    return files


def is_plus(config: dict[str, Any]) -> bool:
    """A VITA-Audio-Plus config: SenseVoice encoder + projector inside the weights."""
    return config.get("model_type") == PLUS_MODEL_TYPE


def read_safetensors(path: Path, keep: Callable[[str], bool] = lambda name: True) -> dict[str, torch.Tensor]:
    """The tensors of one .safetensors file whose names `keep` accepts; a corrupt or cut file is a CheckpointError.

    Every safetensors read goes through here (model, Plus audio, speech tokenizer), so a
    truncated download says so in one line instead of raising SafetensorError.
    """
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                if keep(name):
                    state[name] = handle.get_tensor(name)
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise CheckpointError(f"cannot read {path}: {exc}; the file is corrupt or truncated, download it again") from None
    return state


def read_state_dict(folder: str | Path, prefixes: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's safetensors, or only those whose names start with `prefixes`."""
    state: dict[str, torch.Tensor] = {}
    for f in _weight_files(Path(folder)):
        state.update(read_safetensors(f, lambda name: prefixes is None or name.startswith(prefixes)))
    return state


def check_keys(model: torch.nn.Module, state: dict[str, torch.Tensor], tied: bool) -> None:
    """Exact key match, reported with the first offenders and what they mean."""
    expected = set(model.state_dict().keys())
    if tied:
        expected.discard("lm_head.weight")
        state.pop("lm_head.weight", None)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            detail.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(
            f"weights do not match config.json: {'; '.join(detail)}; check num_hidden_layers and "
            "num_nextn_predict_layers against the weights"
        )
    for name, tensor in model.state_dict().items():
        if name in state and tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"weight {name} has shape {tuple(state[name].shape)} but config.json implies {tuple(tensor.shape)}"
            )


def load_model(
    folder: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
) -> VitaAudioForCausalLM:
    """Load a VITA-Audio (or stage-1 Qwen2) checkpoint folder; exact keys or a clear error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder {folder} does not exist")
    raw = read_config(folder)
    cfg = hf_config(raw, attn_implementation or default_attention(device))
    state = read_state_dict(folder)
    if is_plus(raw):
        audio = [k for k in state if k.startswith(PLUS_AUDIO_PREFIXES)]
        if not any(k.startswith(PLUS_AUDIO_PREFIXES[1]) for k in audio):
            raise CheckpointError(f"{folder} says model_type {PLUS_MODEL_TYPE} but its weights hold no "
                                  f"{PLUS_AUDIO_PREFIXES[1]}* tensors; re-download the VITA-Audio-Plus checkpoint")
        for k in audio:
            del state[k]
    with torch.device("meta"):
        model = VitaAudioForCausalLM(cfg)
    check_keys(model, state, cfg.tie_word_embeddings)
    model.load_state_dict(state, strict=not cfg.tie_word_embeddings, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    rope = type(model.model.rotary_emb)(config=cfg)  # rotary buffers are not in the checkpoint
    model.model.rotary_emb = rope
    model = _to(model, device, dtype or next(iter(state.values())).dtype)
    model.upstream_config = raw
    return model.eval()


def _to(model: VitaAudioForCausalLM, device: str | torch.device, dtype: torch.dtype) -> VitaAudioForCausalLM:
    """Move and cast, keeping the rotary frequencies in fp32 (bf16 would blur long positions)."""
    inv_freq = model.model.rotary_emb.inv_freq.float()
    model = model.to(device=device, dtype=dtype)
    model.model.rotary_emb.inv_freq = inv_freq.to(device)
    return model


def default_attention(device: str | torch.device) -> str:
    """flash-attn on CUDA when installed, PyTorch SDPA otherwise."""
    if str(device).startswith("cuda"):
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def random_model(config: dict[str, Any], seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: str = "cpu", attn_implementation: str | None = None) -> VitaAudioForCausalLM:
    """A random-init model of a config dict (presets, tests, `vita bench`)."""
    torch.manual_seed(seed)
    model = VitaAudioForCausalLM(hf_config(config, attn_implementation or default_attention(device)))
    model.upstream_config = dict(config)
    return _to(model, device, dtype).eval()


def save_model(model: VitaAudioForCausalLM, folder: str | Path, max_shard_size: str = "5GB",
               extra_files: dict[str, Any] | None = None,
               extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write config.json + safetensors shards (+ index) atomically: a temp folder, then rename.

    `extra_tensors` are saved beside the model's own (a Plus checkpoint's audio encoder and projector).
    """
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = staging_folder(folder)
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        state.update({k: v.detach().contiguous().cpu() for k, v in (extra_tensors or {}).items()})
        split = split_torch_state_dict_into_shards(state, max_shard_size=max_shard_size)
        for filename, names in split.filename_to_tensors.items():
            save_file({n: state[n] for n in names}, str(tmp / filename), metadata={"format": "pt"})
            os.chmod(tmp / filename, file_mode(folder / filename))  # safetensors writes 0600
        if split.is_sharded:
            index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                     "weight_map": split.tensor_to_filename}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        config = with_mtp_fields(getattr(model, "upstream_config", {}) or {}, model.num_mtp)
        config.update({k: getattr(model.config, k) for k in _QWEN_FIELDS if hasattr(model.config, k)})
        config["rope_theta"] = model.config.rope_parameters["rope_theta"]
        config["torch_dtype"] = str(model.dtype).replace("torch.", "")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        for name, content in (extra_files or {}).items():
            (tmp / name).write_text(content if isinstance(content, str) else json.dumps(content, indent=2) + "\n")
        if folder.exists():
            keep = [p for p in folder.iterdir() if not (tmp / p.name).exists() and not p.name.startswith("model")]
            for p in keep:  # tokenizer files etc. that live beside the weights stay
                shutil.move(str(p), str(tmp / p.name))
        swap_folder(tmp, folder)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and is_disk_full(exc, folder.parent):
            raise disk_full(folder) from exc
        raise
    return folder
