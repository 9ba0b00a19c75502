"""`vita bench`: speedup table of the inference modes and time to the first audio block.

With `--decoder`, it measures the speech decoder instead: first-chunk latency, real-time factor
and the cost of the last streaming chunk over the first, against the reference's re-decode.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from vita_cli.common import console, err_console, handle_errors
from vita_cli.main import app

if TYPE_CHECKING:
    from vita_core.bench import BenchResult


@app.command()
@handle_errors
def bench(
    preset: str = typer.Option("0.5b", help="Model size preset: tiny, mini, 0.5b, 7b, 72b (random init)."),
    modes: str = typer.Option("vanilla,balance,boost,turbo", help="Comma-separated modes; vanilla is always run."),
    new_tokens: int = typer.Option(512, help="Tokens generated per run (stop tokens ignored)."),
    repeats: int = typer.Option(3, help="Measured runs per mode; the table shows the median."),
    warmup: int = typer.Option(1, help="Unmeasured warm-up runs per mode."),
    prompt_tokens: int = typer.Option(32, help="Length of the random prompt."),
    layout: str = typer.Option("1 10 4 10", help="Content layout every mode generates (text/audio ratio)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
    seed: int = typer.Option(0, help="Seed for weights and prompt."),
    threads: int | None = typer.Option(None, help="CPU threads; default: the cores other processes leave free."),
    against_hf: bool = typer.Option(False, "--against-hf", help="Also time Hugging Face generate on the same backbone."),
    batch: int = typer.Option(1, help="Also run each mode as one batch of N requests (different prompts)."),
    static_cache: bool | None = typer.Option(
        None, "--static-cache/--no-static-cache",
        help="The static KV cache + CUDA graphs path; default: on with CUDA only (--no-static-cache to compare, "
             "--static-cache to run it eagerly on CPU)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    decoder: str | None = typer.Option(
        None, help="Bench the speech decoder instead: 'real' (random weights, released sizes), 'tiny', or a "
                   "glm-4-voice-decoder folder."),
    decoder_chunks: int = typer.Option(20, help="With --decoder: full streaming chunks to time."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Bench a trained speech checkpoint as `vita tts` runs it, text to PCM: a folder, "
                                    "or vita-mini for the bundled one (instead of a random --preset)."),
    tokenizer: Path | None = typer.Option(
        None, help="Tokenizer folder whose vocabulary and audio codes the preset uses (default: the released "
                   "168072-id layout), e.g. vita-mini's from `vita tokenizer build`."),
) -> None:
    """Measure tokens/s, backbone forwards and first-audio latency of each mode (or the decoder's speed).

    Examples: vita bench --preset 0.5b --new-tokens 512 ; vita bench --model ckpt/VITA-Audio-Boost ;
    vita bench --decoder real --device cuda
    """
    from vita_core.bench import bench_modes

    if decoder is not None:
        _bench_decoder(decoder, decoder_chunks, device, dtype, seed, as_json)
        return
    if model is not None:
        _bench_speech(model, modes, repeats, warmup, device, dtype, threads, as_json)
        return
    from vita_core.schedule import parse_ratio
    from vita_core.tokens import layout_from_tokenizer, load_tokenizer

    tokens = layout_from_tokenizer(load_tokenizer(tokenizer)) if tokenizer is not None else None
    finished: list[BenchResult] = []

    def on_mode(so_far: BenchResult) -> None:
        finished[:] = [so_far]
        m = so_far.modes[-1]
        if not as_json:
            err_console.print(f"{m.mode}: {m.tokens_per_s:.1f} tokens/s ({m.speedup:.2f}x), {m.backbone_forwards} "
                              f"backbone + {m.mtp_forwards} MCTP forwards", highlight=False)

    try:
        result = bench_modes(
            preset=preset, modes=[m.strip() for m in modes.split(",") if m.strip()], new_tokens=new_tokens,
            repeats=repeats, warmup=warmup, prompt_tokens=prompt_tokens, device=device, dtype=dtype,
            layout=parse_ratio(layout), seed=seed, threads=threads, against_hf=against_hf,
            batch=batch, static_cache=static_cache, progress=lambda msg: err_console.log(msg) if not as_json else None,
            on_mode=on_mode, tokens=tokens,
        )
    except KeyboardInterrupt:
        if finished:  # Ctrl-C: what was measured is still worth showing
            _print_modes(finished[0], preset, dtype, prompt_tokens, new_tokens, repeats, as_json, partial=True)
        raise
    _print_modes(result, preset, dtype, prompt_tokens, new_tokens, repeats, as_json)


SPEED_COLUMNS = ("mode", "tokens/s", "range", "speedup", "first audio block")
LIMIT_COLUMNS = ("mode", "limit tok/s", "% of limit", "limit speedup")
FORWARD_COLUMNS = ("mode", "backbone fwd", "MCTP fwd", "ms/backbone", "ms/catch-up", "ms/MCTP")
WIDE = 190  # below this many columns the one table would squeeze its cells: narrower tables instead


def _print_modes(result: BenchResult, preset: str, dtype: str, prompt_tokens: int, new_tokens: int, repeats: int,
                 as_json: bool, partial: bool = False) -> None:
    """The modes measured so far: JSON, one table on a wide terminal, or a speed and a forwards table."""
    if as_json:
        typer.echo(json.dumps({**result.to_dict(), "interrupted": partial}, indent=2))
        return
    r = result
    path = r.engine_path
    title = (f"{preset} ({r.parameters / 1e6:.0f}M params) on {r.device}, {dtype}, {path}, {r.threads} "
             f"thread{'s' if r.threads != 1 else ''}, load {r.load_before:.2f} -> {r.load_after:.2f}; "
             f"{prompt_tokens}-token prompt, {new_tokens} new tokens, median of {repeats}; limit = each pass's weight "
             f"reads at {r.read_gb_per_s:.1f} GB/s or its matmuls at {r.matmul_gflops:.0f} GFLOP/s, the slower" + (" (interrupted)" if partial else ""))
    cells = [{
        "mode": m.mode, "tokens/s": f"{m.tokens_per_s:.1f}",
        "range": f"{m.tokens_per_s_min:.1f}-{m.tokens_per_s_max:.1f}", "backbone fwd": str(m.backbone_forwards),
        "MCTP fwd": str(m.mtp_forwards), "speedup": f"{m.speedup:.2f}x",
        "first audio block": f"{m.first_audio_block_ms:.0f} ms", "ms/backbone": f"{m.backbone_forward_ms:.1f}",
        "ms/catch-up": f"{m.backbone_catchup_ms:.1f}", "ms/MCTP": f"{m.mtp_forward_ms:.1f}",
        "limit tok/s": f"{m.limit_tokens_per_s:.1f}", "% of limit": f"{m.percent_of_limit:.0f}%",
        "limit speedup": f"{m.limit_speedup:.2f}x", **_batch_cells(m, r.batch)} for m in r.modes]
    if r.hf_generate is not None:
        h = r.hf_generate
        cells.append({"mode": "hf generate", "tokens/s": f"{h.tokens_per_s:.1f}",
                      "range": f"{h.tokens_per_s_min:.1f}-{h.tokens_per_s_max:.1f}",
                      "speedup": f"{1 / h.vanilla_over_hf:.2f}x"})
    limit = LIMIT_COLUMNS + ((f"batch of {r.batch} tok/s", "per request", "batch first audio") if r.batch > 1 else ())
    layouts = ([SPEED_COLUMNS + limit[1:] + FORWARD_COLUMNS[1:]] if console.width >= WIDE
               else [SPEED_COLUMNS, limit, FORWARD_COLUMNS])
    for n, columns in enumerate(layouts):
        table = Table(title=title if n == 0 else None)
        for col in columns:
            table.add_column(col, justify="left" if col == "mode" else "right", no_wrap=True)
        for row in cells:
            if n == 0 or row["mode"] != "hf generate":
                table.add_row(*(row.get(col, "") for col in columns))
        console.print(table)


def _batch_cells(m, batch: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A mode's batched figures: total tok/s, the median request's tok/s, the range of first audio blocks."""
    if batch <= 1:
        return {}
    first = m.batch_first_audio_block_ms
    return {f"batch of {batch} tok/s": f"{m.batch_tokens_per_s:.1f}", "per request": f"{m.batch_request_tokens_per_s:.1f}",
            "batch first audio": f"{min(first):.0f}-{max(first):.0f} ms" if first else "none"}


def _bench_speech(model: str, modes: str, repeats: int, warmup: int, device: str, dtype: str,
                  threads: int | None, as_json: bool) -> None:
    from vita_cli import speech_options as opt
    from vita_core.speech import check_generation_flags, load_speech_model
    from vita_core.speech_bench import SENTENCES, bench_speech

    names = [m.strip() for m in modes.split(",") if m.strip()]
    for name in names:
        check_generation_flags(name, device=device, dtype=dtype)
    speech = load_speech_model(model, device=device, dtype=dtype, need_decoder=True, progress=opt.progress(as_json),
                               task="tts")
    r = bench_speech(speech, names, repeats=repeats, warmup=warmup, threads=threads, dtype=dtype,
                     progress=lambda msg: err_console.log(msg) if not as_json else None)
    if as_json:
        typer.echo(json.dumps(r.to_dict(), indent=2))
        return
    table = Table(title=f"{speech.folder.name} on {r.device}, {dtype}, {r.threads} thread{'s' if r.threads != 1 else ''}"
                        f", load {r.load_before:.2f} -> {r.load_after:.2f}: `vita tts` of {len(SENTENCES)} sentences "
                        f"x {repeats}, greedy; real-time factor = wall s per s of speech, decoding included")
    for col in ("mode", "real-time factor", "speedup", "first audio", "tokens/s", "speech s", "backbone fwd",
                "MCTP fwd"):
        table.add_column(col, justify="left" if col == "mode" else "right", no_wrap=True)
    for m in r.modes:
        table.add_row(m.mode, f"{m.real_time_factor:.3f}", f"{m.speedup:.2f}x",
                      f"{m.first_audio_ms:.0f} ms (max {m.first_audio_ms_max:.0f})", f"{m.tokens_per_s:.1f}",
                      f"{m.audio_seconds:.1f}", str(m.backbone_forwards), str(m.mtp_forwards))
    console.print(table)


def _bench_decoder(decoder: str, chunks: int, device: str, dtype: str, seed: int, as_json: bool) -> None:
    from vita_core.decoder_bench import bench_decoder

    folder = None if decoder in ("real", "tiny") else decoder
    r = bench_decoder(decoder_dir=folder, real_dims=decoder != "tiny", chunks=chunks, device=device, dtype=dtype,
                      seed=seed, progress=lambda msg: err_console.log(msg) if not as_json else None)
    if as_json:
        typer.echo(json.dumps(r.to_dict(), indent=2))
        return
    table = Table(title=f"speech decoder ({r.decoder}, {r.parameters / 1e6:.0f}M params) on {r.device}, {r.dtype}: "
                        f"{r.steps} ODE steps ({r.first_chunk_steps} for the first chunk), chunks of {r.chunk_codes} "
                        f"codes after a first of {r.first_chunk_codes}, {r.context_codes} codes of context")
    table.add_column("measure")
    table.add_column("vita streaming", justify="right")
    table.add_column("re-decode history (reference)", justify="right")
    table.add_row("first chunk latency", f"{r.first_chunk_ms:.0f} ms for {r.first_chunk_audio_ms:.0f} ms of audio", "")
    table.add_row("chunk 1 (first full chunk)", f"{r.chunk_ms[0]:.0f} ms", f"{r.reference_first_ms:.0f} ms")
    table.add_row(f"chunk {len(r.chunk_ms)}", f"{r.chunk_ms[-1]:.0f} ms", f"{r.reference_last_ms:.0f} ms")
    table.add_row(f"chunk {len(r.chunk_ms)} / chunk 1", f"{r.last_over_first:.2f}x", f"{r.reference_last_over_first:.2f}x")
    table.add_row("real-time factor", f"{r.stream_rtf:.3f}", f"one-shot decode: {r.one_shot_rtf:.3f}")
    console.print(table)
