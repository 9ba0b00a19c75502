"""`vita eval`: score transcripts, Seed-TTS output folders, ASR sets and spoken-QA answers."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from vita_cli import speech_options as opt
from vita_cli.common import console, err_console, handle_errors
from vita_cli.eval_model import (
    EvalMaxTokensOpt,
    ModesOpt,
    SynthBatchOpt,
    answer_questions,
    check_before_loading,
    load_vita,
    model_modes,
    progress_bar,
    rank_progress,
    synthesize_seed_tts,
)
from vita_core.errors import InputError
from vita_core.ranks import process_group

app = typer.Typer(help="Evaluate: Seed-TTS WER/CER, ASR WER, spoken-QA accuracy.", rich_markup_mode=None)


@app.callback(invoke_without_command=True)
def _group(ctx: typer.Context) -> None:
    """Evaluate: Seed-TTS WER/CER, ASR WER, spoken-QA accuracy."""
    if ctx.invoked_subcommand is None:  # a bare `vita eval` asks for help, as a bare `vita` does
        typer.echo(ctx.get_help())
        raise typer.Exit()

LangOpt = typer.Option("en", "--lang", help="en or zh")
MissingOpt = typer.Option(
    False,
    "--missing-as-error",
    help="score missing/empty outputs as errors (WER 1.0, wrong answer) instead of only counting them",
)
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N, for the ASR model and --model")
BatchOpt = typer.Option(8, "--batch-size", min=1, help="utterances per ASR batch")
ASR_HELP = ("local ASR model: openai-whisper .pt, HF Whisper folder, CTranslate2 folder, Paraformer folder, or "
            "faster-whisper:tiny.en / faster-whisper:base (the pip wheels' Whisper)")


def _figures_table(title: str, scores) -> Table:
    from vita_core.eval.report import pct

    table = Table(title=title)
    for col in ("figure", "value %", "aggregate", "utterances", "scored", "missing"):
        table.add_column(col, justify="left" if col in ("figure", "aggregate") else "right")
    for s in scores:
        table.add_row(
            s.name, pct(s.value), s.aggregate, str(len(s.utterances)), str(len(s.scored)), str(s.missing + s.empty)
        )
    return table


def _load_asr(asr_model: str, lang: str, device: str, batch_size: int):
    from vita_core.bench import resolve_device
    from vita_core.eval.asr import load_transcriber, protocol_note

    device = resolve_device(device)
    with err_console.status(f"loading ASR model {asr_model}"):
        transcriber = load_transcriber(asr_model, lang, device, batch_size)
    note = protocol_note(transcriber, lang)
    if note:
        err_console.print(f"[yellow]warning:[/] {note}")
    return transcriber


@app.command()
@handle_errors
def score(
    pairs: Path = typer.Option(..., "--pairs", help="TSV: id<TAB>reference<TAB>hypothesis"),
    protocol: str = typer.Option(
        "seed-tts", "--protocol", help="seed-tts (mean of per-utterance WER/CER), wer or cer (WeNet corpus)"
    ),
    lang: str = LangOpt,
    as_json: bool = typer.Option(False, "--json", help="write the scores as JSON to stdout"),
) -> None:
    """Score transcripts you already have."""
    from vita_core.eval.datasets import read_pairs_tsv
    from vita_core.eval.scoring import score_pairs

    scores = score_pairs(read_pairs_tsv(pairs), protocol, lang)
    if as_json:
        main, others = scores[0], scores[1:]
        keys = ("id", "wer", "substitutions", "deletions", "insertions", "ref_len")
        out = {
            "protocol": protocol,
            "lang": lang,
            "name": main.name,
            "aggregate": main.aggregate,
            "value": main.value,
            "mean": main.mean,
            "pooled": main.pooled,
            "utterances": [{k: getattr(u, k) for k in keys} for u in main.utterances],
            "other_figures": [
                {"name": s.name, "aggregate": s.aggregate, "value": s.value, "mean": s.mean, "pooled": s.pooled}
                for s in others
            ],
        }
        typer.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    console.print(_figures_table(f"{protocol} ({lang}) on {pairs}", scores))


def _parse_wav_dirs(specs: list[str]) -> dict[str, Path]:
    dirs: dict[str, Path] = {}
    for spec in specs:
        mode, sep, folder = spec.partition("=")
        if not sep:
            mode, folder = Path(spec).name, spec
        if not mode or mode in dirs:
            raise InputError(f"--wav-dir {spec!r}: each mode needs a distinct name (MODE=DIR)")
        dirs[mode] = Path(folder)
    return dirs


@app.command("seed-tts")
@handle_errors
def seed_tts(
    meta: Path = typer.Option(..., "--meta", help="Seed-TTS meta.lst (utt|prompt_text|prompt_wav|text)"),
    wav_dir: Optional[list[str]] = typer.Option(
        None,
        "--wav-dir",
        help="MODE=DIR of <utt>.wav outputs; repeat per mode (a bare DIR is named after the folder); "
        "rows are compared with the mode named vanilla, else the first",
    ),
    model: Optional[Path] = typer.Option(
        None, "--model", "-m", help="synthesize first with this VITA-Audio checkpoint folder, into "
        "<out-dir>/<mode>/<utt>.wav for each --modes (resumable: complete wavs are kept)"
    ),
    modes: Optional[str] = ModesOpt,
    voice_prompt: bool = typer.Option(
        True, "--voice-prompt/--no-voice-prompt", help="with --model: put each line's prompt wav in the "
        "system turn (needs the speech tokenizer)"
    ),
    tokenizer_dir: Optional[Path] = opt.TOKENIZER_DIR,
    decoder_dir: Optional[Path] = opt.DECODER_DIR,
    dtype: str = opt.DTYPE,
    max_new_tokens: int = EvalMaxTokensOpt,
    synth_batch: int = SynthBatchOpt,
    asr_model: str = typer.Option(..., "--asr-model", help=ASR_HELP),
    lang: str = LangOpt,
    out_dir: Path = typer.Option(
        Path("out/seed-tts"), "--out-dir", help="where seed-tts.json, summary.tsv, <mode>.tsv (and --model's wavs) go"
    ),
    missing_as_error: bool = MissingOpt,
    device: str = DeviceOpt,
    batch_size: int = BatchOpt,
) -> None:
    """Seed-TTS WER (en) / CER (zh) of folders of generated wavs (or of --model's), one row per mode."""
    from vita_core.eval.asr import detect_format
    from vita_core.eval.datasets import read_seedtts_meta
    from vita_core.eval.normalize import check_lang
    from vita_core.eval.report import seedtts_rows, write_seedtts
    from vita_core.eval.seedtts import run_seed_tts

    check_lang(lang)
    mode_list = model_modes(model, modes, {"--wav-dir": wav_dir})
    if model is None and not wav_dir:
        raise InputError("nothing to score: give --wav-dir MODE=DIR (existing wavs) or --model DIR (synthesize first)")
    items = read_seedtts_meta(meta)
    detect_format(asr_model)  # a wrong ASR path fails now, not after the synthesis
    with process_group() as ranks:  # under torchrun: each rank synthesizes its share, rank 0 scores
        if model is not None:
            dirs = synthesize_seed_tts(items, model, mode_list, voice_prompt, tokenizer_dir, decoder_dir, device,
                                       dtype, max_new_tokens, out_dir, ranks, synth_batch)
        else:
            dirs = _parse_wav_dirs(wav_dir)
    if not ranks.is_main:
        return
    transcriber = _load_asr(asr_model, lang, device, batch_size)
    with progress_bar() as progress:
        report = run_seed_tts(items, dirs, transcriber, lang, missing_as_error, progress)
    written = write_seedtts(report, out_dir)
    rows = seedtts_rows(report)
    table = Table(title=f"Seed-TTS {lang} ({len(items)} lines, ASR {report.asr})")
    for col in rows[0]:
        table.add_column(col, justify="left" if col == "mode" else "right")
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    if any(r.score.missing + r.score.empty for r in report.results):
        how = "scored as errors" if missing_as_error else "left out of the mean (use --missing-as-error to score them)"
        console.print(f"missing/empty outputs are {how}")
    console.print("wrote " + ", ".join(str(p) for p in written))


@app.command()
@handle_errors
def asr(
    data: Path = typer.Option(
        ..., "--data", help="LibriSpeech-style folder (*.trans.txt) or Kaldi folder (wav.scp + text)"
    ),
    asr_model: Optional[str] = typer.Option(None, "--asr-model", help="transcribe the set with this ASR model: " + ASR_HELP),
    hyp: Optional[Path] = typer.Option(None, "--hyp", help="score these existing hypotheses instead (`id text` lines)"),
    model: Optional[Path] = typer.Option(
        None, "--model", "-m", help="transcribe the set with this VITA-Audio checkpoint folder (as `vita asr`)"
    ),
    tokenizer_dir: Optional[Path] = opt.TOKENIZER_DIR,
    dtype: str = opt.DTYPE,
    lang: str = LangOpt,
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="write asr.json and asr.tsv here"),
    missing_as_error: bool = MissingOpt,
    device: str = DeviceOpt,
    batch_size: int = BatchOpt,
) -> None:
    """Corpus WER of an ASR set: WeNet compute-wer (VITA-Audio's metric) and, for en, after Whisper's normaliser."""
    from vita_core.eval.asr_bench import score_asr_set, transcribe_items
    from vita_core.eval.datasets import read_asr_set, read_hypotheses
    from vita_core.eval.normalize import check_lang
    from vita_core.eval.report import utterance_tsv
    from vita_core.eval.wavs import write_text

    check_lang(lang)
    if [asr_model, model, hyp].count(None) != 2:
        raise InputError(
            "give exactly one of --asr-model (transcribe the set), --model (transcribe it with a VITA-Audio "
            "checkpoint) or --hyp (score existing hypotheses)"
        )
    items = read_asr_set(data)
    if hyp is not None:
        hyps = read_hypotheses(hyp)
    elif model is not None:
        from vita_core.eval.model_runs import ModelTranscriber

        check_before_loading(model, [], None, 1, device, dtype)
        with process_group() as ranks:  # under torchrun: each rank transcribes its share, rank 0 scores
            speech = load_vita(model, tokenizer_dir, None, ranks.device(device), dtype, encoder=True, decoder=False,
                              task="asr")
            with rank_progress(ranks) as progress:
                step = (lambda d, t: progress("asr", d, t)) if progress else None
                hyps = transcribe_items(items, ModelTranscriber(speech, lang), step, ranks)
        if not ranks.is_main:
            return
    else:
        transcriber = _load_asr(asr_model, lang, device, batch_size)
        with progress_bar() as progress:
            hyps = transcribe_items(items, transcriber, lambda d, t: progress("asr", d, t))
    scores = score_asr_set(items, hyps, lang, missing_as_error)
    console.print(_figures_table(f"ASR {data} ({lang})", scores))
    if out_dir is not None:
        write_text(out_dir / "asr.json", json.dumps([s.to_dict() for s in scores], ensure_ascii=False, indent=2) + "\n")
        write_text(out_dir / "asr.tsv", utterance_tsv(scores[0]))
        console.print(f"wrote {out_dir / 'asr.json'}, {out_dir / 'asr.tsv'}")


def _sqa_table(title: str, runs: list, missing_as_error: bool) -> Table:
    from vita_core.eval.report import pct

    table = Table(title=title)
    with_mode = any(mode for mode, _ in runs)
    for col in (["mode"] if with_mode else []) + ["stream", "contain %", "exact %", "answered", "missing"]:
        table.add_column(col, justify="left" if col in ("mode", "stream") else "right")
    for mode, scores in runs:
        for s in scores:
            table.add_row(
                *([mode] if with_mode else []),
                s.name,
                pct(s.accuracy("contain", missing_as_error), 2),
                pct(s.accuracy("exact", missing_as_error), 2),
                str(len(s.scored)),
                str(s.missing),
            )
    return table


@app.command()
@handle_errors
def sqa(
    data: Path = typer.Option(
        ..., "--data", help="jsonl of questions: VITA-Audio format (messages + audios) or {id, audio, answers}"
    ),
    hyp_text: Optional[Path] = typer.Option(
        None, "--hyp-text", help="text answers: `id text` file or folder of <id>.txt"
    ),
    hyp_speech: Optional[Path] = typer.Option(
        None, "--hyp-speech", help="transcripts of the speech answers: `id text` file"
    ),
    speech_dir: Optional[Path] = typer.Option(
        None, "--speech-dir", help="folder of <id>.wav speech answers, transcribed with --asr-model"
    ),
    model: Optional[Path] = typer.Option(
        None, "--model", "-m", help="answer with this VITA-Audio checkpoint folder first, into <out-dir>/<mode>/"
        "text/<id>.txt and speech/<id>.wav for each --modes (resumable); --asr-model transcribes the speech"
    ),
    modes: Optional[str] = ModesOpt,
    tokenizer_dir: Optional[Path] = opt.TOKENIZER_DIR,
    decoder_dir: Optional[Path] = opt.DECODER_DIR,
    dtype: str = opt.DTYPE,
    max_new_tokens: int = EvalMaxTokensOpt,
    asr_model: Optional[str] = typer.Option(None, "--asr-model", help="ASR model for the speech answers: " + ASR_HELP),
    out_dir: Optional[Path] = typer.Option(
        None, "--out-dir", help="write sqa.json here (with --model: default out/sqa)"
    ),
    missing_as_error: bool = MissingOpt,
    device: str = DeviceOpt,
    batch_size: int = BatchOpt,
) -> None:
    """Spoken-QA accuracy of S->T text and S->S transcripts: the reference's "contain" rule and a stricter one."""
    from vita_core.eval.asr import detect_format
    from vita_core.eval.datasets import read_hypotheses, read_sqa_jsonl
    from vita_core.eval.sqa_bench import judge_streams, load_text_answers, transcribe_speech
    from vita_core.eval.wavs import write_text

    mode_list = model_modes(
        model, modes, {"--hyp-text": hyp_text, "--hyp-speech": hyp_speech, "--speech-dir": speech_dir}
    )
    if model is None:
        if hyp_speech is not None and speech_dir is not None:
            raise InputError("give --hyp-speech or --speech-dir, not both")
        if (speech_dir is None) != (asr_model is None):
            raise InputError("--speech-dir and --asr-model go together (the speech answers are transcribed in English)")
        if hyp_text is None and hyp_speech is None and speech_dir is None:
            raise InputError("nothing to score: give --hyp-text and/or --hyp-speech or --speech-dir with --asr-model")
    items = read_sqa_jsonl(data)
    if asr_model is not None:
        detect_format(asr_model)  # a wrong ASR path fails now, not after generating
    runs: list[tuple[str, Path | None, dict | None]] = []  # (mode, speech folder to transcribe, text answers)
    if model is not None:
        out_dir = out_dir or Path("out/sqa")
        with process_group() as ranks:  # under torchrun: each rank answers its share, rank 0 scores
            answer_questions(items, model, mode_list, tokenizer_dir, decoder_dir, device, dtype, max_new_tokens,
                             out_dir, ranks)
        if not ranks.is_main:
            return
        for mode in mode_list:
            runs.append((mode, out_dir / mode / "speech", load_text_answers(out_dir / mode / "text")))
    else:
        runs.append(("", speech_dir, load_text_answers(hyp_text) if hyp_text is not None else None))
    transcriber = _load_asr(asr_model, "en", device, batch_size) if asr_model is not None else None
    results = []
    for mode, folder, text in runs:
        spoken = read_hypotheses(hyp_speech) if hyp_speech is not None else None
        if transcriber is not None:
            with progress_bar() as progress:
                step = lambda d, t, m=mode: progress(f"asr {m}".strip(), d, t)  # noqa: E731
                spoken, _ = transcribe_speech(items, folder, transcriber, step)
        results.append((mode, judge_streams(items, text, spoken)))
    console.print(_sqa_table(f"spoken QA {data} ({len(items)} questions)", results, missing_as_error))
    if model is not None and transcriber is None:
        console.print("speech answers were not scored: add --asr-model to transcribe them")
    if out_dir is not None:
        out = [
            {
                **({"mode": mode} if mode else {}),
                "stream": s.name,
                "contain": s.accuracy("contain", missing_as_error),
                "exact": s.accuracy("exact", missing_as_error),
                "missing": s.missing,
                "missing_as_error": missing_as_error,
                "items": [asdict(j) for j in s.items],
            }
            for mode, scores in results
            for s in scores
        ]
        write_text(out_dir / "sqa.json", json.dumps(out, ensure_ascii=False, indent=2) + "\n")
        console.print(f"wrote {out_dir / 'sqa.json'}")
