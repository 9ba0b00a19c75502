"""vita-mini, the model that ships inside the package, and what a checkpoint says it can do.

With no --model, VITA_MODEL or config entry, the speech commands use the bundled vita-mini
(vita_core/assets/vita-mini: a VITA-Audio checkpoint folder in the released format, with its own
codec), so a fresh install speaks with nothing downloaded. `--model vita-mini` names it too.
A checkpoint may carry `vita-model.json` ({"name", "summary", "tasks"}, optionally "mode"): vita-mini
only speaks, so asr and chat refuse it in one line instead of producing nonsense; its "mode" is the
default when no --mode is given, because the released convention (the default mode is the data
layout in generation_config's `mtp_inference_mode`) would make a model whose MCTP modules lose
quality speak through them by default.
"""

from __future__ import annotations

import json
from pathlib import Path

from vita_core.errors import CheckpointError, InputError

NAME = "vita-mini"
BUNDLED_DIR = Path(__file__).resolve().parent / "assets" / NAME
CARD = "vita-model.json"
TASK_WORDS = {"tts": "speak text", "asr": "transcribe speech", "chat": "hold a spoken conversation",
              "sqa": "answer spoken questions"}


def bundled_model() -> Path | None:
    """The bundled checkpoint folder, or None in a checkout that does not have it."""
    return BUNDLED_DIR if (BUNDLED_DIR / "config.json").is_file() else None


def by_name(value: str) -> Path | None:
    """`vita-mini` as a model name means the bundled folder, unless a folder of that name is right here."""
    if value != NAME or Path(value).is_dir():
        return None
    found = bundled_model()
    if found is None:
        raise InputError(f"{NAME} is not bundled with this install (vita_core/assets/{NAME} holds no model yet); "
                         "pass --model a VITA-Audio checkpoint folder")
    return found


def read_card(folder: Path) -> dict | None:
    """The checkpoint's `vita-model.json`, or None when it has none (every released checkpoint)."""
    path = Path(folder) / CARD
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); re-copy the checkpoint") from None
    if not isinstance(card, dict) or not isinstance(card.get("tasks"), list):
        raise CheckpointError(f"{path} must hold an object with a 'tasks' list; re-copy the checkpoint")
    return card


def card_mode(folder: Path) -> str | None:
    """The default mode the checkpoint's card names, or None (no card, or no "mode" in it)."""
    mode = (read_card(folder) or {}).get("mode")
    if mode is not None and not isinstance(mode, str):
        raise CheckpointError(f"{Path(folder) / CARD}: 'mode' must be a mode name such as vanilla; re-copy "
                              "the checkpoint")
    return mode


def check_task(folder: Path, task: str) -> None:
    """Refuse a task the checkpoint's card does not list (no card: every task is allowed)."""
    card = read_card(folder)
    if card is None or task in card["tasks"]:
        return
    name = card.get("name", Path(folder).name)
    can = " and ".join(TASK_WORDS.get(t, t) for t in card["tasks"]) or "nothing"
    raise InputError(f"{name} ({folder}) can only {can}, it cannot {TASK_WORDS.get(task, task)}; pass --model "
                     "a VITA-Audio checkpoint folder (or set VITA_MODEL) for this command")


def default_notice(folder: Path) -> str:
    """The one line a command prints when it falls back to the bundled model."""
    card = read_card(folder) or {}
    summary = card.get("summary", "the bundled model")
    return f"using {NAME}, {summary}; pass --model or set VITA_MODEL to use another checkpoint"
