"""`vita pack`: a data recipe -> fixed-length packed training shards."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from vita_cli.common import console, handle_errors
from vita_cli.main import app
from vita_cli.prepare import progress_bars


@app.command(
    "pack",
    epilog=(
        "Examples:\n\n"
        "  vita pack recipes/data/stage1-3.yaml --out packed/stage1-3\n\n"
        "  vita pack recipes/data/stage4.yaml --out packed/stage4 --seq-len 2048 --ratio '1 4 3 8 4 10'\n\n"
        "The same recipe and --seed give byte-identical shards."
    ),
)
@handle_errors
def pack_command(
    recipe: Path = typer.Argument(..., help="Data recipe YAML (sources with ratio, cap and prepared folders)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the packed shards."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Tokens per packed sequence (default: the recipe's, else 8192)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Selection and shuffle seed (default: the recipe's, else 42)."),
    ratio: Optional[str] = typer.Option(None, "--ratio", help="Text/audio interleave, e.g. '1 10 4 10' (Boost), '1 4 3 8 4 10' (Balance), or 'none'."),
    root: Optional[Path] = typer.Option(None, "--root", help="Base of the recipe's relative folder paths (default: current folder)."),
    window: int = typer.Option(20000, "--window", help="Samples per best-fit window (larger: less padding, less mixing)."),
    packs_per_shard: int = typer.Option(1024, "--packs-per-shard", help="Packed sequences per shard file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the packs in a non-empty --out."),
) -> None:
    """Interleave answers by the stage's ratio, label answers only, and pack samples into fixed-length shards."""
    from vita_core.data.pack import pack
    from vita_core.data.recipe import load_recipe
    from vita_core.schedule import parse_ratio

    parsed = load_recipe(recipe, root)
    layout = "recipe" if ratio is None else (None if ratio.strip().lower() == "none" else parse_ratio(ratio))
    with progress_bars() as update:
        report = pack(
            parsed, out, seq_len=seq_len, seed=seed, ratio=layout, window=window,
            packs_per_shard=packs_per_shard, overwrite=overwrite, progress=update,
        )
    table = Table(title=f"packed {out}", show_header=False)
    table.add_row("packs", f"{report.packs} x {report.seq_len} tokens in {len(report.shards)} shards")
    table.add_row("samples", str(report.samples))
    for source, n in sorted(report.per_source.items()):
        table.add_row(f"  {source}", str(n))
    table.add_row("real tokens", str(report.real_tokens))
    table.add_row("padding", f"{report.padding_fraction:.2%} (efficiency {1 - report.padding_fraction:.2%})")
    table.add_row("speed", f"{report.samples_per_second:,.0f} samples/s ({report.seconds:.1f} s)")
    table.add_row("too long", str(len(report.too_long)))
    console.print(table)
    for item in report.too_long[:10]:
        console.print(f"too long: {item['source']} {item['id']}: {item['tokens']} tokens > {report.seq_len}", highlight=False)
    if len(report.too_long) > 10:
        console.print(f"... and {len(report.too_long) - 10} more, listed in {out / 'manifest.json'}")
