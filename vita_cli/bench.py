"""`vita bench`: speedup table of the inference modes and time to the first audio block.

With `--decoder`, it measures the speech decoder instead: first-chunk latency, real-time factor
and the cost of the last streaming chunk over the first, against the reference's re-decode.
"""

from __future__ import annotations

import json

import typer
from rich.table import Table

from vita_cli.common import console, err_console, handle_errors
from vita_cli.main import app


@app.command()
@handle_errors
def bench(
    preset: str = typer.Option("0.5b", help="Model size preset: tiny, 0.5b, 7b, 72b (random init)."),
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
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    decoder: str | None = typer.Option(
        None, help="Bench the speech decoder instead: 'real' (random weights, released sizes), 'tiny', or a "
                   "glm-4-voice-decoder folder."),
    decoder_chunks: int = typer.Option(20, help="With --decoder: full streaming chunks to time."),
) -> None:
    """Measure tokens/s, backbone forwards and first-audio latency of each mode (or the decoder's speed).

    Examples: vita bench --preset 0.5b --new-tokens 512 ; vita bench --decoder real --device cuda
    """
    from vita_core.bench import bench_modes

    if decoder is not None:
        _bench_decoder(decoder, decoder_chunks, device, dtype, seed, as_json)
        return
    from vita_core.schedule import parse_ratio

    result = bench_modes(
        preset=preset, modes=[m.strip() for m in modes.split(",") if m.strip()], new_tokens=new_tokens,
        repeats=repeats, warmup=warmup, prompt_tokens=prompt_tokens, device=device, dtype=dtype,
        layout=parse_ratio(layout), seed=seed, threads=threads, against_hf=against_hf, batch=batch, progress=lambda msg: err_console.log(msg) if not as_json else None,
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    r = result
    path = "fast path (prepacked oneDNN)" if r.fast_path else "Hugging Face layers"
    table = Table(title=f"{preset} ({r.parameters / 1e6:.0f}M params) on {r.device}, {dtype}, {path}, "
                        f"{r.threads} thread(s), load {r.load_before:.2f} -> {r.load_after:.2f}; "
                        f"{prompt_tokens}-token prompt, {new_tokens} new tokens, median of {repeats}; "
                        f"limit = weight bytes read at {r.read_gb_per_s:.1f} GB/s")
    for col in ("mode", "tokens/s (range)", "backbone / MCTP fwd", "speedup", "limit tok/s (reached)",
                "limit speedup", "first audio block", "ms/backbone", "ms/catch-up", "ms/MCTP"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    if r.batch > 1:
        table.add_column(f"batch of {r.batch}: tok/s (per request)", justify="right")
        table.add_column("batch: first audio block", justify="right")
    for m in r.modes:
        extra = []
        if r.batch > 1:
            first = m.batch_first_audio_block_ms
            extra = [f"{m.batch_tokens_per_s:.1f} ({m.batch_request_tokens_per_s:.1f})",
                     f"{min(first):.0f}-{max(first):.0f} ms" if first else "none"]
        table.add_row(m.mode, f"{m.tokens_per_s:.1f} ({m.tokens_per_s_min:.1f}-{m.tokens_per_s_max:.1f})",
                      f"{m.backbone_forwards} / {m.mtp_forwards}", f"{m.speedup:.2f}x",
                      f"{m.limit_tokens_per_s:.1f} ({m.percent_of_limit:.0f}%)", f"{m.limit_speedup:.2f}x",
                      f"{m.first_audio_block_ms:.0f} ms", f"{m.backbone_forward_ms:.1f}", f"{m.backbone_catchup_ms:.1f}",
                      f"{m.mtp_forward_ms:.1f}", *extra)
    if r.hf_generate is not None:
        h = r.hf_generate
        table.add_row("hf generate", f"{h.tokens_per_s:.1f} ({h.tokens_per_s_min:.1f}-{h.tokens_per_s_max:.1f})",
                      "", f"vanilla {h.vanilla_over_hf:.2f}x", *[""] * (6 + 2 * (r.batch > 1)))
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
