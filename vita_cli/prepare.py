"""`vita prepare`: corpora -> validated samples with cached audio codes, in token-id shards."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vita_cli.common import console, err_console, handle_errors
from vita_cli.main import app
from vita_core.data.importers import FORMATS

LABELS = {"audio": "audio encoded", "samples": "samples", "measure": "measuring", "write": "packs written"}


@contextlib.contextmanager
def progress_bars() -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback drawing one Rich bar per stage, on a terminal only."""
    bars = Progress(
        TextColumn("{task.description:>14}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err_console, disable=not err_console.is_terminal, transient=True,
    )
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(LABELS.get(stage, stage), total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield update


@app.command(
    "prepare",
    epilog=(
        "Examples:\n\n"
        "  vita prepare LibriSpeech/train-clean-100 --task asr --task tts --model ckpt/VITA-Audio-Boost "
        "--codec-dir ckpt/glm-4-voice-tokenizer --cache-dir cache/codes --out prepared/ls100\n\n"
        "  vita prepare data/voiceassistant.jsonl --model ckpt/VITA-Audio-Boost "
        "--codec-dir ckpt/glm-4-voice-tokenizer --cache-dir cache/codes --out prepared/va400k\n\n"
        "  torchrun --nproc_per_node 8 -m vita_cli prepare ... --device cuda   (each rank encodes its share of shards)\n\n"
        "Re-running the same command after an interruption resumes it (with any number of processes)."
    ),
)
@handle_errors
def prepare_command(
    inputs: List[Path] = typer.Argument(..., help="Corpora: jsonl, LibriSpeech/LibriTTS/Kaldi folders, Common Voice tsv, or 'path<TAB>text' lists."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the prepared shards and report."),
    model: Path = typer.Option(..., "--model", help="VITA-Audio checkpoint folder (its tokenizer gives the token ids)."),
    cache_dir: Path = typer.Option(..., "--cache-dir", help="Folder for the audio-code cache (shared across runs and corpora)."),
    codec_dir: Path = typer.Option(..., "--codec-dir", help="Speech tokenizer folder, e.g. glm-4-voice-tokenizer."),
    codec: str = typer.Option("glm4voice", "--codec", help="Speech tokenizer kind."),
    fmt: str = typer.Option("auto", "--format", help=f"Input layout: {', '.join(FORMATS)}."),
    task: List[str] = typer.Option(["asr"], "--task", help="For (audio, text) corpora: asr and/or tts (repeat the flag)."),
    audio_root: Optional[Path] = typer.Option(None, "--audio-root", help="Base of relative audio paths in jsonl (default: the jsonl's folder)."),
    max_seconds: float = typer.Option(60.0, "--max-seconds", help="Skip audio longer than this."),
    max_tokens: int = typer.Option(8192, "--max-tokens", help="Skip samples longer than this many tokens."),
    shard_size: int = typer.Option(10000, "--shard-size", help="Input records per shard (the unit of resumption)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Audio clips per encoder call."),
    workers: int = typer.Option(4, "--workers", help="Threads reading and resampling audio."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an --out folder that holds a different run."),
    device: str = typer.Option("cpu", "--device", help="Where the speech tokenizer runs: cpu, cuda, cuda:N or auto "
                                                       "(under torchrun, cuda and auto mean each rank's own GPU)."),
) -> None:
    """Encode audio once (content-addressed cache), tokenize, and write token-id shards with a report of every skipped sample."""
    from vita_core.bench import resolve_device
    from vita_core.codec import load_encoder
    from vita_core.data.prepare import gather, prepare
    from vita_core.ranks import process_group
    from vita_core.tokens import load_tokenizer

    items = gather([(p, fmt) for p in inputs], tuple(task), audio_root)
    tokenizer = load_tokenizer(model)
    with process_group() as ranks:
        encoder = load_encoder(codec_dir, codec, device=resolve_device(ranks.device(device)))
        with progress_bars() as update:
            report = prepare(
                items, out, tokenizer, encoder, codec, cache_dir,
                max_seconds=max_seconds, max_tokens=max_tokens, shard_size=shard_size, batch_size=batch_size,
                workers=workers, overwrite=overwrite, progress=update if ranks.is_main else None, ranks=ranks,
            )
    if not ranks.is_main:
        return
    table = Table(title=f"prepared {out}", show_header=False)
    table.add_row("written", f"{report.written} samples, {report.tokens} tokens")
    for kind, n in report.kinds.items():
        table.add_row(f"  {kind}", str(n))
    table.add_row("audio", f"{report.encoded} encoded, {report.cached} from cache")
    table.add_row("skipped", str(len(report.skipped)))
    for reason, n in report.by_reason.items():
        table.add_row(f"  {reason}", str(n))
    console.print(table)
    for skip in report.skipped[:10]:
        console.print(f"skipped {skip.id}: {skip.reason}: {skip.detail}", highlight=False, soft_wrap=True)
    if len(report.skipped) > 10:
        console.print(f"... and {len(report.skipped) - 10} more")
    if report.skipped:
        console.print(f"every skipped sample and its reason: {out / 'report.json'}")
    for fix in report.repaired:
        console.print(f"re-encoded {fix['audio']}: its cache entry {fix['entry']} was corrupt ({fix['reason']})",
                      highlight=False, soft_wrap=True)
