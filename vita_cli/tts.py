"""`vita tts`: text to speech, streamed to a file, stdout or the speaker as it is generated."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vita_cli import speech_options as opt
from vita_cli.common import console, err_console, handle_errors
from vita_cli.main import app

if TYPE_CHECKING:
    from vita_core.tts import TtsProgress


def _read_text(text: Optional[str], text_file: Optional[Path]) -> str:
    from vita_core.errors import InputError

    if text is not None and text_file is not None:
        raise InputError("give the text either as an argument or with --text-file, not both")
    if text_file is not None:
        if not text_file.is_file():
            raise InputError(f"--text-file {text_file} does not exist")
        text = text_file.read_text(encoding="utf-8")
    elif text == "-":
        text = sys.stdin.read()
    elif text is None:
        raise InputError("no text: pass it as an argument, with --text-file, or - to read stdin")
    if not text.strip():
        raise InputError("the text to synthesize is empty")
    return text


def _check_format(out: str, fmt: Optional[str]) -> None:
    """--format for --out: a stream's wav or pcm; a file's format is its name's, so another one is refused."""
    from vita_core.errors import InputError

    if out == "-" or fmt is None:
        return
    suffix = Path(out).suffix.lower().lstrip(".")
    if fmt != suffix:
        fix = "raw pcm streams to --out -" if fmt == "pcm" else "drop --format or rename the file"
        raise InputError(f"--format {fmt}: --out {out} is a file, whose format comes from its name (.wav or .flac); "
                         + fix)


@contextmanager
def progress_display(enabled: bool) -> Iterator[Optional[Callable[[TtsProgress], None]]]:
    """Progress of one synthesis on stderr: a live bar on a terminal, a line per finished chunk otherwise."""
    if not enabled:
        yield None
        return
    if not err_console.is_terminal:
        def line(p: TtsProgress) -> None:
            if p.chunk_done and p.chunks > 1:
                err_console.print(f"chunk {p.chunk}/{p.chunks}: {p.audio_seconds:.1f} s of audio so far",
                                  highlight=False)

        yield line
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                  TextColumn("{task.fields[audio]}"), TimeElapsedColumn(), console=err_console,
                  transient=True) as bar:
        task = bar.add_task("generating", total=None, audio="")

        def update(p: TtsProgress) -> None:
            label = f"chunk {p.chunk}/{p.chunks}" if p.chunks > 1 else "generating"
            bar.update(task, description=label, completed=p.tokens, total=p.max_new_tokens,
                       audio=f"{p.audio_seconds:.1f} s of audio")

        yield update


@app.command()
@handle_errors
def tts(
    text: Optional[str] = typer.Argument(None, help="Text to speak; - reads stdin."),
    text_file: Optional[Path] = typer.Option(None, "--text-file", help="Read the text from a file."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="x.wav or x.flac, or - to stream to stdout."),
    fmt: Optional[str] = typer.Option(None, "--format", help="With --out -: wav or pcm (16-bit mono) [default: "
                                      "wav]; with --batch: wav or flac [default: wav]; a file's comes from its name."),
    play: bool = typer.Option(False, "--play", help="Play through the speaker while generating."),
    output_device: Optional[str] = typer.Option(None, "--output-device", help="Speaker for --play (index or name)."),
    batch: Optional[Path] = typer.Option(None, "--batch", help="A file of lines: one audio file per line."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Folder for --batch outputs (created)."),
    prompt_wav: Optional[Path] = typer.Option(None, "--prompt-wav", help="Voice prompt recording "
                                              "(system turn 'Your Voice: <audio>'); needs --tokenizer-dir."),
    as_json: bool = typer.Option(False, "--json", help="Print metadata as JSON (stderr when --out -)."),
    model: Optional[Path] = opt.MODEL,
    tokenizer_dir: Optional[Path] = opt.TOKENIZER_DIR,
    sensevoice_dir: Optional[Path] = opt.SENSEVOICE_DIR,
    decoder_dir: Optional[Path] = opt.DECODER_DIR,
    device: str = opt.DEVICE,
    dtype: str = opt.DTYPE,
    mode: Optional[str] = opt.MODE,
    max_new_tokens: int = opt.MAX_NEW_TOKENS,
    temperature: Optional[float] = opt.TEMPERATURE,
    top_k: Optional[int] = opt.TOP_K,
    top_p: Optional[float] = opt.TOP_P,
    repetition_penalty: Optional[float] = opt.REPETITION_PENALTY,
    seed: Optional[int] = opt.SEED,
) -> None:
    """Synthesize speech; audio is written chunk by chunk as the model generates it.

    Examples: vita tts "Hello there." --out hello.wav;
    echo "Hi" | vita tts - --out - | aplay;
    vita tts --batch lines.txt --out-dir voices/
    """
    from vita_core.errors import InputError
    from vita_core.sinks import FileSink, StreamSink, check_target
    from vita_core.speech import check_generation_flags, load_speech_model
    from vita_core.tts import read_lines, synthesize, voice_prompt

    # every check that needs no model comes first: a typo must not cost the 15-25 s of loading
    if batch is not None:
        if text is not None or text_file is not None or out is not None:
            raise InputError("--batch takes its text from the file and writes to --out-dir; drop TEXT/--out")
        if out_dir is None:
            raise InputError("--batch needs --out-dir DIR")
        fmt = fmt or "wav"
        if fmt not in ("wav", "flac"):
            raise InputError(f"--format {fmt!r}: --batch writes wav or flac files")
        texts = read_lines(batch)
    else:
        texts = [(0, _read_text(text, text_file))]
        if out is None and not play:
            raise InputError("say where the audio goes: --out x.wav, --out - for stdout, or --play")
        if out is not None:
            _check_format(out, fmt)
            check_target(out, fmt or "wav")
        elif fmt is not None:
            raise InputError(f"--format {fmt}: it says how --out - or --batch files are written; --play needs none")
    if prompt_wav is not None and not prompt_wav.is_file():
        raise InputError(f"--prompt-wav {prompt_wav} does not exist")
    check_generation_flags(mode, max_new_tokens, temperature, top_k, top_p, repetition_penalty, device, dtype)
    to_stdout = out == "-"
    quiet = as_json or to_stdout
    report = err_console if to_stdout else console
    speech = load_speech_model(model, tokenizer_dir, decoder_dir, device=device, dtype=dtype, mode=mode,
                               need_encoder=prompt_wav is not None, need_decoder=True,
                               progress=opt.progress(quiet), sensevoice_dir=sensevoice_dir, task="tts",
                               notice=opt.notice())
    sampling = opt.sampling(speech.sampling, temperature, top_k, top_p, repetition_penalty, seed)
    voice = voice_prompt(speech, prompt_wav) if prompt_wav is not None else None
    rate = int(speech.decoder.sample_rate)
    speaker = None
    if play:
        from vita_core.chat.devices import SoundDeviceOutput

        speaker = SoundDeviceOutput(rate, output_device)
        speaker.begin()
    if batch is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for number, line in texts:
        if batch is not None:
            sink = FileSink(out_dir / f"{number:04d}.{fmt}", rate)  # named by line number: blank lines count
        elif to_stdout:
            sink = StreamSink(sys.stdout.buffer, rate, fmt or "wav")
        else:
            sink = FileSink(out, rate) if out is not None else None

        def on_audio(pcm, sink=sink):  # type: ignore[no-untyped-def]
            if sink is not None:
                sink.write(pcm)
            if speaker is not None:
                speaker.write(pcm)

        try:
            with progress_display(not quiet) as on_progress:
                result = synthesize(speech, line, on_audio, voice=voice, sampling=sampling,
                                    max_new_tokens=max_new_tokens, on_progress=on_progress)
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
        if sink is not None:
            sink.close()
        info = result.to_dict()
        if batch is not None:
            info["file"] = str(sink.path)
            info["line"] = number
        elif out is not None and not to_stdout:
            info["file"] = out
        results.append(info)
        if not as_json:
            where = info.get("file", "stdout" if to_stdout else "speaker")
            first = f"{result.first_audio_ms:.0f} ms" if result.first_audio_ms is not None else "none"
            rtf = f"{result.real_time_factor:.2f}" if result.real_time_factor is not None else "-"
            spoken = f" in {result.chunks} chunks" if result.chunks > 1 else ""
            report.print(f"{where}: {result.audio_seconds:.2f} s of audio from {result.num_codes} codes{spoken}, "
                         f"first audio {first}, RTF {rtf}, {result.tokens_per_s:.1f} tokens/s, "
                         f"{result.backbone_forwards} backbone forwards ({result.mode})", highlight=False)
    if speaker is not None:
        speaker.drain()
        speaker.close()
    if as_json:
        payload = json.dumps(results if batch is not None else results[0], indent=2)
        if to_stdout:
            err_console.print(payload, highlight=False, soft_wrap=True)
        else:
            typer.echo(payload)
