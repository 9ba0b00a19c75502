"""`vita tokenizer build`: a small BPE trained on a text corpus, with the VITA specials and audio tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from vita_cli.common import console, handle_errors

app = typer.Typer(help="Build tokenizers for models trained from scratch (vita-mini).", no_args_is_help=True)


@app.command(
    "build",
    epilog="Example: vita tokenizer build --text corpus.txt --codec mini --vocab 2048 --out runs/mini/tokenizer",
)
@handle_errors
def build(
    text: list[Path] = typer.Option(..., "--text", help="UTF-8 text corpus, one sentence a line; repeat for several."),
    codes: Optional[int] = typer.Option(None, "--codes", help="Codebook size of the speech codec: "
                                        "<|audio_0|>..<|audio_{N-1}|> (default: --codec's)."),
    codec: Optional[str] = typer.Option(None, "--codec", help="Record this codec (e.g. mini) in the folder: "
                                        "models trained with it then load that codec by themselves."),
    codec_dir: Optional[Path] = typer.Option(None, "--codec-dir", help="The --codec folder, copied in "
                                             "(default: the bundled one)."),
    vocab: int = typer.Option(2048, "--vocab", help="Text entries of the byte-level BPE (256 bytes + merges)."),
    out: Path = typer.Option(..., "--out", "-o", help="New folder for tokenizer.json + tokenizer_config.json."),
    plus: bool = typer.Option(False, "--plus", help="The Plus layout (<|context_of_audio|> after <|end_of_audio|>)."),
) -> None:
    """Train a deterministic byte-level BPE on --text and append Qwen's and VITA's specials and the audio codes."""
    from vita_core.errors import InputError
    from vita_core.tokens_build import build_text_tokenizer, codec_codes

    if codec is None and codec_dir is not None:
        raise InputError("--codec-dir needs --codec NAME (the codec family of that folder, e.g. mini)")
    if codec is not None:
        size = codec_codes(codec, codec_dir)
        if codes is not None and codes != size:
            raise InputError(f"--codes {codes} disagrees with --codec {codec}, which has {size} codes; drop --codes")
        codes = size
    if codes is None:
        raise InputError("give --codes N (the codec's codebook size) or --codec NAME")
    report = build_text_tokenizer(text, out, num_codes=codes, vocab_size=vocab, plus=plus, codec=codec,
                                  codec_dir=codec_dir)
    table = Table(title=f"tokenizer {report.folder}", show_header=False)
    table.add_row("text entries", f"{report.text_vocab} (ids 0..{report.text_vocab - 1}, from {report.lines} lines)")
    table.add_row("audio codes", f"{report.num_codes} (ids {report.audio_offset}..{report.vocab_size - 1})")
    table.add_row("vocab size", str(report.vocab_size))
    console.print(table)
