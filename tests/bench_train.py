"""Training throughput and peak memory of one stage on a random-init size preset (run by hand).

    python tests/bench_train.py --preset 0.5b --stage 1 --seq-len 8192 --steps 6

Tokens/s counts every packed input token (padding included) per second of optimizer steps after
the first (warm-up); peak memory is torch.cuda.max_memory_allocated. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainkit import SyntheticPacked  # noqa: E402
from vita_core.tiny.tokenizer import build_tokenizer  # noqa: E402
from vita_core.train.stages import load_stage  # noqa: E402
from vita_core.train.trainer import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="0.5b")
    parser.add_argument("--stage", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--no-checkpointing", action="store_true")
    args = parser.parse_args()
    spec = load_stage(None, args.stage).with_overrides(
        max_steps=args.steps, seq_len=args.seq_len, grad_accum=args.grad_accum, warmup_ratio=0.0)
    if args.no_checkpointing:
        spec = replace(spec, gradient_checkpointing=False)
    data = SyntheticPacked(args.steps * args.grad_accum, args.seq_len)
    stamps: list[float] = []

    def on_event(kind: str, payload: object) -> None:
        if kind == "step":
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        tokenizer = build_tokenizer(Path(out) / "tokenizer")  # the released id layout, shipped with the weights
        result = train(spec, args.preset, data, Path(out) / "run", tokenizer=tokenizer, progress=on_event)
    tokens = args.seq_len * args.grad_accum * (len(stamps) - 1)
    print(json.dumps({
        "preset": args.preset, "stage": args.stage, "seq_len": args.seq_len, "grad_accum": args.grad_accum,
        "gradient_checkpointing": spec.gradient_checkpointing, "steps": result.steps,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "tokens_per_s": round(tokens / (stamps[-1] - stamps[0]), 1),
        "seconds_per_step": round((stamps[-1] - stamps[0]) / (len(stamps) - 1), 3),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "final_loss": round(result.history[-1].loss, 4),
    }))


if __name__ == "__main__":
    main()
