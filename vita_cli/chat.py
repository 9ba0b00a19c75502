"""`vita chat`: spoken conversation through the microphone and speaker, with a live latency panel."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, Optional

import typer
from rich.live import Live
from rich.table import Table

from vita_cli import speech_options as opt
from vita_cli.common import console, err_console, handle_errors, plural
from vita_cli.main import app

COLUMNS = ("turn", "heard", "encoded", "1st text", "1st audio", "1st sound", "lag", "answer")


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _row(turn: Any) -> list[str]:
    s = turn.stages_ms
    answer = turn.answer_text if len(turn.answer_text) < 60 else turn.answer_text[:57] + "..."
    if turn.interrupted:
        answer += " [interrupted]"
    return [str(turn.index), f"{turn.user_seconds:.1f} s", _ms(s["audio_encoded"]), _ms(s["first_text_token"]),
            _ms(s["first_audio_codes"]), _ms(s["first_sound_out"]), _ms(turn.playback_lag_ms), answer]


class Panel:
    """Per-turn stage times after the end of speech, live on a terminal, one line per turn otherwise."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.status = "loading"
        self.live = Live(self._table(), console=console, refresh_per_second=8) if console.is_terminal else None

    def _table(self) -> Table:
        table = Table(title=f"vita chat: {self.status}", caption="ms after the end of your speech")
        for col in COLUMNS:
            table.add_column(col, justify="left" if col == "answer" else "right")
        for row in self.rows[-12:]:
            table.add_row(*row)
        return table

    def event(self, kind: str, turn: Any) -> None:
        self.status = {"listening": "listening", "speech": "hearing you", "thinking": "answering",
                       "turn": "listening"}[kind]
        if kind == "turn":
            self.rows.append(_row(turn))
            if self.live is None:
                console.print("  ".join(f"{c}: {v}" for c, v in zip(COLUMNS, self.rows[-1])), highlight=False,
                              soft_wrap=True)
        if self.live is not None:
            self.live.update(self._table())


def _push_to_talk() -> Any:
    """Enter toggles talking; a daemon thread reads stdin."""
    from vita_core.chat.vad import PushToTalkSegmenter

    pressed = threading.Event()

    def reader() -> None:
        for _line in sys.stdin:
            if pressed.is_set():
                pressed.clear()
            else:
                pressed.set()

    threading.Thread(target=reader, daemon=True).start()
    err_console.print("push-to-talk: press Enter to start talking and Enter again to stop")
    return PushToTalkSegmenter(pressed.is_set)


@app.command()
@handle_errors
def chat(
    input_wav: Optional[Path] = typer.Option(None, "--input-wav", help="Scripted conversation: read the "
                                             "microphone from this file (headless; answers go to --save-audio)."),
    list_devices: bool = typer.Option(False, "--list-devices", help="List audio devices and exit."),
    input_device: Optional[str] = typer.Option(None, "--input-device", help="Microphone (index or name)."),
    output_device: Optional[str] = typer.Option(None, "--output-device", help="Speaker (index or name)."),
    push_to_talk: bool = typer.Option(False, "--push-to-talk", help="Enter toggles talking instead of VAD."),
    vad_threshold: float = typer.Option(0.5, "--vad-threshold", help="silero-vad speech probability threshold."),
    min_silence_ms: int = typer.Option(600, "--min-silence-ms", help="Silence that ends an utterance."),
    system_prompt: Optional[str] = typer.Option(None, "--system-prompt", help="System turn; '' for none "
                                      "[default: the reference's 'Your Name: Omni ...' prompt]."),
    log: Optional[Path] = typer.Option(None, "--log", help="Write one JSON line per turn (times, texts)."),
    save_audio: Optional[Path] = typer.Option(None, "--save-audio", help="Save each turn's user and answer audio."),
    max_turns: Optional[int] = typer.Option(None, "--max-turns", help="Stop after this many answers."),
    model: Optional[Path] = opt.MODEL,
    tokenizer_dir: Optional[Path] = opt.TOKENIZER_DIR,
    sensevoice_dir: Optional[Path] = opt.SENSEVOICE_DIR,
    decoder_dir: Optional[Path] = opt.DECODER_DIR,
    device: str = opt.DEVICE,
    dtype: str = opt.DTYPE,
    mode: Optional[str] = opt.MODE,
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", help="Upper bound on tokens per answer."),
    temperature: Optional[float] = opt.TEMPERATURE,
    top_k: Optional[int] = opt.TOP_K,
    top_p: Optional[float] = opt.TOP_P,
    repetition_penalty: Optional[float] = opt.REPETITION_PENALTY,
    seed: Optional[int] = opt.SEED,
) -> None:
    """Talk with the model: VAD (or push-to-talk) in, streamed speech out, barge-in, latency panel.

    Examples: vita chat --mode turbo; vita chat --input-wav questions.wav --log turns.jsonl --save-audio out/
    """
    from vita_core.chat import devices
    from vita_core.chat.loop import DEFAULT_SYSTEM_PROMPT, ChatSession
    from vita_core.errors import InputError
    from vita_core.chat.vad import check_vad
    from vita_core.speech import check_generation_flags, load_speech_model

    if list_devices:
        found = devices.list_devices()
        if not found:
            console.print("no audio devices found: PortAudio sees no sound card (check ALSA/PulseAudio, or that "
                          "this container has /dev/snd); --input-wav runs a scripted conversation without one",
                          highlight=False, soft_wrap=True)
            return
        table = Table(title="audio devices")
        for col in ("index", "name", "inputs", "outputs", "default rate"):
            table.add_column(col)
        for d in found:
            table.add_row(str(d["index"]), d["name"], str(d["inputs"]), str(d["outputs"]),
                          f"{d['default_samplerate']:.0f}")
        console.print(table)
        return
    if max_turns is not None and max_turns < 1:
        raise InputError(f"--max-turns {max_turns} must be at least 1")
    if input_wav is not None and push_to_talk:
        raise InputError("--push-to-talk needs a live microphone; a --input-wav script is cut by VAD")
    if input_wav is not None and input_device is not None:
        raise InputError("use either --input-wav or --input-device, not both")
    if input_wav is not None and not input_wav.is_file():
        raise InputError(f"--input-wav {input_wav} does not exist")
    if not push_to_talk:
        check_vad(vad_threshold, min_silence_ms)
    check_generation_flags(mode, max_new_tokens, temperature, top_k, top_p, repetition_penalty, device, dtype)
    panel = Panel()
    speech = load_speech_model(model, tokenizer_dir, decoder_dir, device=device, dtype=dtype, mode=mode,
                               need_encoder=True, need_decoder=True, progress=opt.progress(False),
                               sensevoice_dir=sensevoice_dir, task="chat")
    sampling = opt.sampling(speech.sampling, temperature, top_k, top_p, repetition_penalty, seed)
    segmenter = _push_to_talk() if push_to_talk else None
    if segmenter is None:
        try:
            from vita_core.chat.vad import SileroSegmenter

            segmenter = SileroSegmenter(threshold=vad_threshold, min_silence_ms=min_silence_ms)
        except ImportError:
            err_console.print("silero-vad is not installed (pip install silero-vad); falling back to push-to-talk")
            segmenter = _push_to_talk()
    rate = int(speech.decoder.sample_rate)
    live_speaker = input_wav is None or output_device is not None
    if live_speaker and not push_to_talk:
        err_console.print("[yellow]use headphones:[/] there is no echo cancellation, so the answer played on a "
                          "loudspeaker would be heard as speech and interrupt itself")
    source = devices.FileInput(input_wav) if input_wav is not None else devices.SoundDeviceInput(input_device)
    sink = devices.SoundDeviceOutput(rate, output_device) if live_speaker else devices.FileOutput(rate)
    session = ChatSession(speech, source, sink, segmenter,
                          system_prompt=DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt,
                          sampling=sampling, max_new_tokens=max_new_tokens, log_path=log, save_audio=save_audio,
                          on_event=panel.event)
    try:
        if panel.live is not None:
            with panel.live:
                turns = session.run(max_turns)
        else:
            turns = session.run(max_turns)
    finally:
        source.close()
        sink.close()
    summary = plural(len(turns), "turn") + (f", log in {log}" if log else "")
    if not turns:
        heard = f"in {input_wav}" if input_wav is not None else "from the microphone"
        summary += (f": no speech was heard {heard}; check that it holds speech at a normal level, or lower "
                    f"--vad-threshold (now {vad_threshold})")
    err_console.print(summary, highlight=False, soft_wrap=True)
