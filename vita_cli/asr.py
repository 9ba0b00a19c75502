"""`vita asr`: transcribe files, folders and globs into txt/json/srt/vtt/tsv."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import List, Optional

import typer

from vita_cli import speech_options as opt
from vita_cli.common import console, err_console, fail, handle_errors
from vita_cli.main import app


@app.command()
@handle_errors
def asr(
    inputs: List[str] = typer.Argument(..., help="Audio files, folders (searched recursively) or globs; "
                                                 "- reads one recording from stdin (outputs named stdin.*)."),
    output_format: str = typer.Option("all", "--output-format", "-f",
                                      help="txt, json, srt, vtt, tsv, a comma-separated list, or all."),
    output_dir: Path = typer.Option(Path("."), "--output-dir", "-o", help="Folder for the transcripts (created)."),
    language: str = typer.Option("auto", "--language", "-l",
                                 help="auto, or for VITA-Audio-Plus checkpoints SenseVoice's language hint "
                                      "(zh, en, yue, ja, ko); GLM-4-Voice codes take none."),
    model: Optional[Path] = opt.MODEL,
    tokenizer_dir: Optional[Path] = opt.TOKENIZER_DIR,
    sensevoice_dir: Optional[Path] = opt.SENSEVOICE_DIR,
    device: str = opt.DEVICE,
    dtype: str = opt.DTYPE,
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens",
                                                 help="Token budget per file [default: 10 per second of audio + 20]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print transcripts."),
) -> None:
    """Transcribe speech with the checkpoint's ASR task (greedy, text only).

    Example: vita asr recordings/ "*.flac" --output-format srt --output-dir subs/
    """
    from vita_core.asr import (check_budget, collect_inputs, output_stems, parse_formats, transcribe, transcribe_files,
                               write_outputs)
    from vita_core.errors import InputError
    from vita_core.speech import check_generation_flags, check_language_flag, load_speech_model, read_audio

    formats = parse_formats(output_format)
    check_budget(max_new_tokens)
    from_stdin = inputs == ["-"]
    if "-" in inputs and not from_stdin:
        raise InputError("- (stdin) must be the only input")
    files = [] if from_stdin else collect_inputs(inputs)
    output_stems(files)
    check_generation_flags(device=device, dtype=dtype)
    check_language_flag(model, language)
    speech = load_speech_model(model, tokenizer_dir=tokenizer_dir, device=device, dtype=dtype,
                               need_encoder=True, progress=opt.progress(quiet), sensevoice_dir=sensevoice_dir,
                               task="asr")
    speech.check_language(language)
    if from_stdin:
        rate = speech.input_rate
        wav = read_audio(io.BytesIO(sys.stdin.buffer.read()), rate, name="stdin")
        transcript = transcribe(speech, wav, rate, name="stdin", max_new_tokens=max_new_tokens, language=language)
        write_outputs(transcript, "stdin", output_dir, formats)
        if not quiet:
            console.print(transcript.text, highlight=False, soft_wrap=True)
        return

    def on_result(path, transcript, error):  # type: ignore[no-untyped-def]
        if error is not None:
            err_console.print(f"[bold red]error:[/] {path}: {error}", highlight=False, soft_wrap=True)
        elif not quiet:
            console.print(f"[bold]{path}[/] ({transcript.duration:.1f} s): {transcript.text}", highlight=False,
                          soft_wrap=True)

    failures = transcribe_files(speech, files, output_dir, formats, on_result, max_new_tokens=max_new_tokens,
                                language=language)
    if failures:
        fail(f"{failures} of {len(files)} files failed")
