"""Training stages as data: one YAML file per stage says what trains, with which losses and rates.

`recipes/stages/stage{1..4}.yaml` carry the reference's 7B values; a recipe folder such as
`recipes/tiny/` holds files that `extends:` those and override a few fields for a small model.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from vita_core.errors import InputError

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
DEFAULT_RECIPE = RECIPES / "stages"


@dataclass(frozen=True)
class StageSpec:
    """Everything one stage needs besides the data and the starting checkpoint."""

    stage: int
    name: str
    num_mtp: int                 # MCTP modules in this stage's checkpoints (0: plain Qwen2)
    trainable: str               # "all": every parameter; "mtp": exactly the MCTP parameters
    detach_backbone: bool        # backbone runs without gradient and its loss is dropped
    lr: float
    max_steps: int
    mtp_lr_mult: float = 1.0     # MCTP parameters train at lr * this
    weight_decay: float = 0.0    # biases and norm weights never decay
    warmup_ratio: float = 0.03
    warmup_shape: str = "log"    # DeepSpeed WarmupCosineLR's default, what the reference ran
    min_lr_ratio: float = 0.1    # cosine ends at this fraction of the peak
    adam_betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    seq_len: int = 8192
    micro_batch_size: int = 1    # packed sequences per device per forward
    grad_accum: int = 16
    gradient_checkpointing: bool = True
    mtp_loss_weight: float = 1.0
    seed: int = 42
    mixed_precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; bf16 or no forces it

    def __post_init__(self) -> None:
        problems = []
        if self.stage not in (1, 2, 3, 4):
            problems.append(f"stage must be 1..4, not {self.stage}")
        if self.trainable not in ("all", "mtp"):
            problems.append(f"trainable must be 'all' or 'mtp', not {self.trainable!r}")
        if self.trainable == "mtp" and self.num_mtp == 0:
            problems.append("trainable 'mtp' needs num_mtp >= 1")
        if self.detach_backbone and self.trainable != "mtp":
            problems.append("detach_backbone needs trainable 'mtp' (a detached backbone cannot learn)")
        if self.warmup_shape not in ("log", "linear"):
            problems.append(f"warmup_shape must be 'log' or 'linear', not {self.warmup_shape!r}")
        for name in ("lr", "max_steps", "seq_len", "micro_batch_size", "grad_accum", "mtp_lr_mult"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive")
        if self.mixed_precision not in ("auto", "bf16", "no"):
            problems.append(f"mixed_precision must be 'auto', 'bf16' or 'no', not {self.mixed_precision!r}")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.min_lr_ratio <= 1:
            problems.append("warmup_ratio must be in [0, 1) and min_lr_ratio in [0, 1]")
        if problems:
            raise InputError(f"stage recipe: {'; '.join(problems)}")

    def with_overrides(self, **changes: Any) -> "StageSpec":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({k: v for k, v in changes.items() if v is not None})
        return StageSpec(**values)


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping, with `extends: other.yaml` (relative to this file) merged underneath."""
    if path in seen:
        raise InputError(f"{path}: `extends` loops back to itself")
    if not path.is_file():
        raise InputError(f"stage recipe {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a mapping of stage fields")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return {**_read((path.parent / parent).resolve(), (*seen, path)), **data}


def stage_file(recipe: str | Path | None, stage: int) -> Path:
    """A recipe is a folder holding stage{N}.yaml, one stage file, or the name of a folder in
    recipes/ (`tiny`, `stages`)."""
    path = Path(recipe) if recipe is not None else DEFAULT_RECIPE
    if not path.exists() and (RECIPES / path).is_dir():
        path = RECIPES / path
    return path / f"stage{stage}.yaml" if path.is_dir() else path


def load_stage(recipe: str | Path | None, stage: int) -> StageSpec:
    """Read and check one stage of a recipe (default: recipes/stages, the reference's 7B values)."""
    path = stage_file(recipe, stage)
    data = _read(path.resolve())
    known = {f.name for f in fields(StageSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if data.get("stage", stage) != stage:
        raise InputError(f"{path} describes stage {data['stage']}, not stage {stage}")
    data["stage"] = stage
    missing = [f.name for f in fields(StageSpec) if f.default is MISSING and f.name not in data]
    if missing:
        raise InputError(f"{path}: missing field(s) {', '.join(missing)}")
    try:
        for f in fields(StageSpec):  # PyYAML reads 1e-3 as a string; accept it as the number it is
            if f.name in data and f.type in ("float", "int"):
                data[f.name] = float(data[f.name]) if f.type == "float" else int(data[f.name])
        if "adam_betas" in data:
            data["adam_betas"] = tuple(float(b) for b in data["adam_betas"])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: a field has the wrong type ({exc})") from None
    return StageSpec(**data)
