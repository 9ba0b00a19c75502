"""`vita train --stage N`: one stage of the four-stage recipe, with a Rich progress display."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer

from vita_cli.common import console, handle_errors, plural
from vita_cli.main import app


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@app.command()
@handle_errors
def train(
    stage: int = typer.Option(..., "--stage", min=1, max=4, help="Stage 1..4 of the recipe."),
    init: str = typer.Option(..., help="Checkpoint folder to start from (the previous stage's output/model), "
                                       "or a size preset (tiny, 0.5b, 7b, 72b) for random init."),
    data: Path = typer.Option(..., help="Folder written by `vita pack`."),
    output_dir: Path = typer.Option(..., help="Where checkpoints, model/ and metrics.jsonl go."),
    recipe: Optional[Path] = typer.Option(None, help="Recipe folder with stage{1..4}.yaml, one stage file, or a "
                                                      "name in recipes/ such as tiny (default: recipes/stages, "
                                                      "the reference's 7B values)."),
    max_steps: Optional[int] = typer.Option(None, min=1, help="Optimizer steps (default: the recipe's); "
                                                             "the schedule spans this many."),
    save_every: Optional[int] = typer.Option(None, min=1, help="Write a resumable checkpoint every N steps."),
    resume: bool = typer.Option(False, help="Continue from the newest checkpoint in --output-dir."),
    overwrite: bool = typer.Option(False, help="Replace a run already in --output-dir (its model/, "
                                               "checkpoints and metrics.jsonl)."),
    grad_accum: Optional[int] = typer.Option(None, min=1, help="Override the recipe's gradient accumulation "
                                                              "(keep micro x accum x processes constant)."),
    tokenizer: Optional[Path] = typer.Option(None, help="Folder whose tokenizer files ship with the "
                                                        "checkpoints, the one the data was prepared with "
                                                        "(default: those in --init; needed with a preset)."),
    distributed: Optional[Path] = typer.Option(None, help="DeepSpeed .json or FSDP .yaml from "
                                                          "recipes/distributed (launch with torchrun)."),
    eval_data: Optional[Path] = typer.Option(None, help="Packs of held-out sentences (`vita pack` of data no "
                                                       "step trains on): each checkpoint and the model are "
                                                       "scored on their audio targets (metrics.jsonl 'eval' rows)."),
    seed: Optional[int] = typer.Option(None, help="Override the recipe's seed (initial weights of a preset "
                                                  "and data order), e.g. to check that a recipe reproduces."),
    eval_packs: int = typer.Option(16, min=0, help="After an MCTP stage, report each module's top-1 on the "
                                                  "audio targets of this many packs (0: skip)."),
) -> None:
    """Train one stage and write checkpoints in the released VITA-Audio format.

    Example: vita train --stage 1 --recipe recipes/tiny --init tiny --tokenizer ckpt/VITA-Audio-Boost --data packed/tiny --output-dir runs/s1
    """
    from rich.console import Group
    from rich.live import Live
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from vita_core.train.stages import load_stage
    from vita_core.train.trainer import train as run

    spec = load_stage(recipe, stage).with_overrides(grad_accum=grad_accum, seed=seed)
    drawing = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 draws
    bar = Progress(TextColumn(f"[bold]stage {stage}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.description}"))
    task = bar.add_task("", total=1)
    live = Live(Group(bar), console=console, refresh_per_second=4, transient=False)

    def on_event(kind: str, payload: Any) -> None:
        if kind == "start":
            for path in payload["removed"]:
                console.print(f"removed {path}, left by an interrupted save", soft_wrap=True, highlight=False)
            if payload["resumed_from"] is not None:
                console.print(f"resuming from {payload['resumed_from']} (step {payload['start']})", soft_wrap=True,
                              highlight=False)
            elif resume:
                console.print(f"--resume: no checkpoint in {output_dir}, starting at step 0", soft_wrap=True,
                              highlight=False)
            live.start()
            bar.update(task, total=payload["total"], completed=payload["start"])
            console.print(f"stage {payload['stage']} ({payload['name']}): "
                          f"{plural(payload['num_mtp'], 'MCTP module')}, {payload['trainable'] / 1e6:.2f}M trainable "
                          f"parameters, {plural(payload['processes'], 'process', 'processes')}, global batch "
                          f"{payload['global_batch']}, steps {payload['start']}->{payload['total']}")
        elif kind == "step":
            main = "" if payload.main_loss is None else f"  main {payload.main_loss:.3f} top-1 {payload.main_acc:.1%}"
            bar.update(task, completed=payload.step, description=f"loss {payload.loss:.3f}  lr {payload.lr:.2e}{main}")
            live.update(Group(bar, _module_table(payload)) if payload.mtp_loss else Group(bar))
        elif kind == "eval":
            console.print(_eval_line(payload), soft_wrap=True, highlight=False)
        elif kind == "saved":
            console.print(f"saved {payload}")

    try:
        result = run(spec, init, data, output_dir, max_steps=max_steps, save_every=save_every, resume=resume,
                     overwrite=overwrite, tokenizer=tokenizer, distributed=distributed, eval_data=eval_data,
                     progress=on_event if drawing else None)
    finally:
        if live.is_started:
            live.stop()
            if not console.is_terminal:  # the last frame has no line break when piped
                console.line()
    if os.environ.get("RANK", "0") != "0":
        return
    console.print(f"done: {result.steps} steps in {result.seconds:.1f} s; model in {result.model_dir}, "
                  f"metrics in {output_dir / 'metrics.jsonl'}")
    if spec.num_mtp and eval_packs:
        _print_audio_accuracy(result.model_dir, data, spec.seq_len, eval_packs)


def _eval_line(row: dict[str, Any]) -> str:
    """`held-out at step N: audio loss 5.97 top-1 9.6% | MCTP 0: 6.10 8.1% ...` (over T targets)."""
    e = row["eval"]
    heads = [f"audio loss {_fmt(e['main_loss'], '.3f')} top-1 {_fmt(e['main_acc'], '.1%')}"]
    heads += [f"MCTP {k}: {_fmt(loss, '.3f')} {_fmt(acc, '.1%')}" for k, (loss, acc)
              in enumerate(zip(e["mtp_loss"], e["mtp_acc"]))]
    return f"held-out at step {row['step']} ({e['targets']} audio targets): " + " | ".join(heads)


def _module_table(metrics: Any) -> Any:
    """One row per MCTP module: what it predicts, its loss and top-1 on this step."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for name in ("MCTP", "predicts", "loss", "top-1"):
        table.add_column(name, justify="right")
    for k, (loss, acc) in enumerate(zip(metrics.mtp_loss, metrics.mtp_acc)):
        table.add_row(str(k), f"t+{k + 2}", _fmt(loss, ".3f"), _fmt(acc, ".1%"))
    return table


def _print_audio_accuracy(model_dir: Path, data: Path, seq_len: int, packs: int) -> None:
    """Top-1 of each MCTP module on the audio targets of the first packs, against chance."""
    import torch
    from rich.table import Table

    from vita_core.model.checkpoint import load_model
    from vita_core.tokens import layout_from_tokenizer, load_tokenizer
    from vita_core.train.data import open_packed
    from vita_core.train.evaluate import audio_accuracy

    if not (model_dir / "tokenizer.json").is_file():
        console.print("(no tokenizer beside the weights: pass --tokenizer to see audio accuracy)")
        return
    layout = layout_from_tokenizer(load_tokenizer(model_dir))
    acc = audio_accuracy(load_model(model_dir, dtype=torch.float32), open_packed(data, seq_len),
                         layout.audio_offset, layout.num_codes, packs)
    console.print(f"top-1 on the {acc.targets} audio targets of the first {acc.packs} packs; chance: uniform "
                  f"{acc.uniform:.1e}, always the most frequent code {acc.majority:.1%}")
    table = Table()
    table.add_column("head")
    table.add_column("predicts", justify="right")
    table.add_column("top-1", justify="right")
    table.add_row("main", "t+1", _fmt(acc.main_acc, ".1%"))
    for k, a in enumerate(acc.mtp_acc):
        table.add_row(f"MCTP {k}", f"t+{k + 2}", _fmt(a, ".1%"))
    console.print(table)
