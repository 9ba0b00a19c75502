"""Flags shared by tts, asr and chat: where the model and codec live and how to run them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import typer

from vita_cli.common import err_console

if TYPE_CHECKING:
    from vita_core.generate import Sampling

MODEL = typer.Option(None, "--model", "-m", help="VITA-Audio checkpoint folder (env VITA_MODEL or config file; "
                                                  "default: the bundled vita-mini).")
TOKENIZER_DIR = typer.Option(None, "--tokenizer-dir",
                             help="Speech tokenizer folder, e.g. glm-4-voice-tokenizer (env VITA_AUDIO_TOKENIZER "
                                  "or config file; default: the codec the checkpoint records in codec.json).")
DECODER_DIR = typer.Option(None, "--decoder-dir",
                           help="Speech decoder folder, e.g. glm-4-voice-decoder (env VITA_AUDIO_DECODER "
                                "or config file; default: the codec the checkpoint records in codec.json).")
SENSEVOICE_DIR = typer.Option(None, "--sensevoice-dir",
                              help="SenseVoiceSmall folder, the audio input of VITA-Audio-Plus checkpoints "
                                   "(env VITA_SENSEVOICE or config file; default: the checkpoint folder "
                                   "when it holds SenseVoice's config.yaml).")
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.")
DTYPE = typer.Option("auto", "--dtype", help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16.")
MODE = typer.Option(None, "--mode", help="vanilla, balance, boost, turbo or a list like '1 10 4 10' "
                                         "(default: the mode its vita-model.json card names, vanilla for "
                                         "vita-mini, else its mtp_inference_mode).")
MAX_NEW_TOKENS = typer.Option(1024, "--max-new-tokens", help="Upper bound on generated tokens.")
TEMPERATURE = typer.Option(None, "--temperature", help="0 is greedy (default: the checkpoint's generation_config).")
TOP_K = typer.Option(None, "--top-k", help="Keep the k most likely tokens (0: off).")
TOP_P = typer.Option(None, "--top-p", help="Nucleus sampling mass in (0, 1].")
REPETITION_PENALTY = typer.Option(None, "--repetition-penalty", help="Penalty on already seen tokens (1: off).")
SEED = typer.Option(None, "--seed", help="Seed for sampling, for repeatable output.")


def progress(quiet: bool) -> Callable[[str], None]:
    """Loading messages on stderr, unless quiet."""
    return (lambda _msg: None) if quiet else (lambda msg: err_console.log(msg))


def notice() -> Callable[[str], None]:
    """The one-line notice that the bundled vita-mini is in use, on stderr (kept even when quiet)."""
    return lambda msg: err_console.print(msg, highlight=False, soft_wrap=True)


def sampling(base: Sampling, temperature: float | None, top_k: int | None, top_p: float | None,
             repetition_penalty: float | None, seed: int | None) -> Sampling:
    """The checkpoint's defaults with the flags that were given laid over them."""
    from dataclasses import replace

    given = {"temperature": temperature, "top_k": top_k, "top_p": top_p,
             "repetition_penalty": repetition_penalty, "seed": seed}
    return replace(base, **{k: v for k, v in given.items() if v is not None})
