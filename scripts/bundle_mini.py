"""Install a trained vita-mini checkpoint as the bundled default (vita_core/assets/vita-mini).

    python scripts/bundle_mini.py WORK/runs/s4/model

Copies the checkpoint's files (weights, config, tokenizer, generation config) beside the bundled
codec (assets/vita-mini/codec, which the checkpoint was prepared and trained with), and writes the
codec record and the card that tells tts it may use the model and asr/chat that they may not, and
makes vanilla the default mode (vita-mini's MCTP modes cost WER, README: vita-mini).
The weights stay in the bf16 the recipe trains and saves in (float32 would be twice the size and
the whole bundle must stay under 40 MB). Each file is written atomically (vita_core.files), so a
kill never leaves a truncated file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vita_core.bundled import BUNDLED_DIR, CARD, NAME  # noqa: E402
from vita_core.codec.record import RECORD, read_record  # noqa: E402
from vita_core.files import write_bytes, write_json  # noqa: E402

FILES = ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
SUMMARY = "English, one voice (piper's joe), text to speech only"
LIMIT_MB = 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="the trained model folder (runs/s4/model)")
    args = parser.parse_args()
    src = args.checkpoint
    missing = [f for f in FILES if not (src / f).is_file()]
    if missing:
        sys.exit(f"error: {src} lacks {', '.join(missing)}; give the model/ folder of a finished vita train run")
    if read_record(src).family != "mini":
        sys.exit(f"error: {src} was not trained on the mini codec (its codec.json); vita-mini needs it")
    size = sum((src / f).stat().st_size for f in FILES) + sum(
        p.stat().st_size for p in (BUNDLED_DIR / "codec").iterdir())
    if size > LIMIT_MB * 1e6:
        sys.exit(f"error: the bundle would be {size / 1e6:.1f} MB, over {LIMIT_MB} MB; save the weights in bf16")
    for name in FILES:
        write_bytes(BUNDLED_DIR / name, (src / name).read_bytes())
    write_json(BUNDLED_DIR / RECORD, {"family": "mini", "folder": "codec"})
    write_json(BUNDLED_DIR / CARD, {"name": NAME, "summary": SUMMARY, "tasks": ["tts"], "mode": "vanilla"})
    print(f"bundled {src} as {BUNDLED_DIR} ({size / 1e6:.1f} MB with the codec)")


if __name__ == "__main__":
    main()
