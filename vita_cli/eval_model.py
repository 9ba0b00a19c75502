"""`vita eval ... --model`: generate the outputs to score with vita's own model, and the progress bar."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vita_cli import speech_options as opt
from vita_cli.common import err_console
from vita_core.errors import InputError
from vita_core.ranks import Ranks

ALL_MODES = "vanilla,balance,boost,turbo"
ModesOpt = typer.Option(
    None, "--modes", help=f"with --model: modes to generate with, comma-separated (default: {ALL_MODES})"
)
EvalMaxTokensOpt = typer.Option(1024, "--max-new-tokens", min=1, help="with --model: token budget per output")
SynthBatchOpt = typer.Option(
    8, "--synth-batch", min=1, help="with --model: lines synthesized together in one batched generation "
    "(each wav is written when its batch ends; 1: one line at a time)"
)


@contextmanager
def progress_bar() -> Iterator:
    """progress(label, done, total) on stderr: a Rich bar on a terminal, else one line per finished item
    (a log or a CI job sees the run advance instead of nothing for half an hour)."""
    if not err_console.is_terminal:
        last: dict[str, int] = {}

        def line(label: str, done: int, total: int) -> None:
            if done and last.get(label) != done:
                last[label] = done
                err_console.print(f"{label}: {done}/{total}", highlight=False, soft_wrap=True)

        yield line
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        yield update


def load_vita(model: Path, tokenizer_dir, decoder_dir, device: str, dtype: str, encoder: bool, decoder: bool,
              task: str):
    """vita's own model for generating what is then scored; codec folders also come from env or config."""
    from vita_core.speech import load_speech_model

    return load_speech_model(model, tokenizer_dir, decoder_dir, device=device, dtype=dtype, need_encoder=encoder,
                             need_decoder=decoder, progress=opt.progress(False), task=task)


def check_before_loading(model: Path, modes: list[str], out_dir: Path | None, max_new_tokens: int, device: str,
                         dtype: str, **extra: object) -> None:
    """What can fail without the model, checked before the slow load: device, dtype, budget, the output folders."""
    from vita_core.eval.model_runs import check_folder, planned_settings
    from vita_core.speech import check_generation_flags

    check_generation_flags(max_new_tokens=max_new_tokens, device=device, dtype=dtype)
    for mode in modes if out_dir is not None else []:
        check_folder(out_dir / mode, planned_settings(model, mode, max_new_tokens, **extra))


def model_modes(model: Optional[Path], modes: Optional[str], exclusive: dict[str, object]) -> list[str]:
    """The modes to generate with, after checking that --model was not mixed with flags for given outputs."""
    from vita_core.eval.model_runs import parse_modes

    if model is None:
        if modes is not None:
            raise InputError("--modes goes with --model (the modes to generate with)")
        return []
    given = [flag for flag, value in exclusive.items() if value]
    if given:
        raise InputError(f"--model generates the outputs to score; drop {', '.join(given)}")
    return parse_modes(modes or ALL_MODES)


def rank_progress(ranks: Ranks):  # type: ignore[no-untyped-def]
    """The progress bar on rank 0; the other ranks of a torchrun job work without one."""
    return progress_bar() if ranks.is_main else nullcontext(None)


def synthesize_seed_tts(items: list, model: Path, modes: list[str], voice_prompt: bool, tokenizer_dir, decoder_dir,
                        device: str, dtype: str, max_new_tokens: int, out_dir: Path, ranks: Ranks,
                        synth_batch: int = 8) -> dict[str, Path]:
    """`<out_dir>/<mode>/<utt>.wav` for every meta line and mode, resumed, `synth_batch` lines per batched
    generation; returns the folders by mode. Under torchrun each rank makes its share of the lines in
    batches of its own; all return when every wav is there."""
    from vita_core.eval.model_runs import check_prompt_wavs, claim_folders, run_settings, tts_synthesizer
    from vita_core.eval.seedtts import synthesize_missing

    voice_prompt = voice_prompt and any(i.prompt_wav is not None for i in items)
    if voice_prompt:
        check_prompt_wavs(items)
    check_before_loading(model, modes, out_dir, max_new_tokens, device, dtype, voice_prompt=voice_prompt)
    speech = load_vita(model, tokenizer_dir, decoder_dir, ranks.device(device), dtype, encoder=voice_prompt,
                       decoder=True, task="tts")
    settings = {out_dir / m: run_settings(speech, m, max_new_tokens, voice_prompt=voice_prompt) for m in modes}
    claim_folders(settings, ranks)
    synthesize = tts_synthesizer(speech, voice_prompt, max_new_tokens=max_new_tokens)
    made = 0

    def counted(batch, mode):  # type: ignore[no-untyped-def]
        nonlocal made
        made += len(batch)
        return synthesize(batch, mode)

    with rank_progress(ranks) as progress:
        dirs = synthesize_missing(items, out_dir, modes, counted, progress, ranks, synth_batch)
    made = sum(ranks.gather(made))
    if ranks.is_main:
        kept = len(items) * len(modes) - made
        err_console.print(f"synthesized {made} wavs into {out_dir}/<mode>/ ({kept} were there)")
    return dirs


def answer_questions(items: list, model: Path, modes: list[str], tokenizer_dir, decoder_dir, device: str, dtype: str,
                     max_new_tokens: int, out_dir: Path, ranks: Ranks) -> None:
    """`<out_dir>/<mode>/text/<id>.txt` and `speech/<id>.wav` for every question and mode, resumed (under
    torchrun each rank answers its share)."""
    from vita_core.eval.model_runs import claim_folders, run_settings, spoken_answerer
    from vita_core.eval.sqa_bench import answer_all

    check_before_loading(model, modes, out_dir, max_new_tokens, device, dtype)
    speech = load_vita(model, tokenizer_dir, decoder_dir, ranks.device(device), dtype, encoder=True, decoder=True,
                       task="sqa")
    claim_folders({out_dir / m: run_settings(speech, m, max_new_tokens) for m in modes}, ranks)
    with rank_progress(ranks) as progress:
        for mode in modes:
            answer = spoken_answerer(speech, mode, max_new_tokens=max_new_tokens)
            step = (lambda d, t, m=mode: progress(f"answer {m}", d, t)) if progress else None
            answer_all(items, answer, out_dir / mode, step, ranks)
