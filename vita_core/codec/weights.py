"""Exact weight loading shared by the codecs: released files must match our modules key for key."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vita_core.errors import CheckpointError


def strict_load(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict(strict=True) with a CheckpointError that names the keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{what} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shape {sorted(wrong)[:5]}; use the released weights unchanged"
        )
    module.load_state_dict(state, strict=True)


def read_torch_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict saved with torch.save, read without unpickling arbitrary objects."""
    if not path.is_file():
        raise CheckpointError(f"{path.name} not found in {path.parent}; the decoder folder needs config.yaml, flow.pt and hift.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a corrupt or foreign file
        raise CheckpointError(f"cannot read {path}: {str(exc).splitlines()[0]}; re-download the decoder folder") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors; use the released file unchanged")
    return state
