"""`vita codec train`: train vita-mini's own speech codec from a `path<TAB>text` speech list."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vita_cli.common import console, handle_errors

app = typer.Typer(help="Speech codecs vita trains itself (the mini codec).", no_args_is_help=True)


@app.command(
    "train",
    epilog=(
        "Example:\n\n"
        "  nice vita codec train recipes/mini/codec.yaml --data /work/mini-data/corpus/train.tsv --out runs/codec\n\n"
        "Running it again with the same --out resumes from out/checkpoint.pt; the codec folder is out/codec."
    ),
)
@handle_errors
def train_command(
    recipe: Path = typer.Argument(..., help="Codec recipe YAML (model and train sections)."),
    data: Path = typer.Option(..., "--data", help="Speech list, one 'audio path<TAB>text' per line."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoint.pt and the exported codec/ folder."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimiser steps (default: the recipe's)."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Stop (and save) after this many minutes; rerun to resume."),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads."),
    log_every: int = typer.Option(50, "--log-every", help="Print the loss every N steps."),
) -> None:
    """Train the mini codec end to end (PCM -> FSQ codes -> PCM) with spectral losses."""
    import dataclasses

    import torch

    from vita_core.codec.mini.train import load_codec_recipe, train_codec

    torch.set_num_threads(threads)
    model_config, train_config = load_codec_recipe(recipe)
    if steps is not None:
        train_config = dataclasses.replace(train_config, steps=steps)

    def report(p: dict) -> None:
        if p["step"] % log_every == 0 or p["step"] == p["steps"]:
            console.print(f"step {p['step']}/{p['steps']}  loss {p['loss']:.4f}  {p['seconds_per_step']:.2f} s/step", highlight=False)

    folder = train_codec(model_config, train_config, data, out, max_minutes=minutes, progress=report)
    console.print(f"codec saved to {folder}")
