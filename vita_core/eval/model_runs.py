"""Evaluation outputs from vita's own model, made through the same library calls as `vita tts`,
`vita chat` and `vita asr`, one run per requested mode.

Each factory returns the callable that a runner takes (`Synthesize` for Seed-TTS, `Answer` for
spoken QA, a `Transcriber` for ASR sets), so the runners stay independent of the model and
resume the same way whatever produces the outputs. Each output is sampled with a seed of its own
(`utterance_sampling`), so it depends on its line alone: not on the order of the lines, on which of
several torchrun processes makes it, or on what a resumed run skips.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from vita_core.errors import InputError
from vita_core.eval.asr import Progress
from vita_core.eval.datasets import AudioItem, MetaItem
from vita_core.eval.seedtts import Synthesize
from vita_core.eval.sqa_bench import Answer, SpokenAnswer
from vita_core.eval.wavs import write_text
from vita_core.ranks import Ranks
from vita_core.speech import SpeechModel, read_audio
from vita_core.tokens import AudioCodes, AudioContext

if TYPE_CHECKING:
    from vita_core.generate import Sampling

EVAL_MODES = ("vanilla", "balance", "boost", "turbo")
RUN_FILE = ".vita-run.json"


def parse_modes(value: str) -> list[str]:
    """'vanilla,boost' (commas or spaces) -> ['vanilla', 'boost']; only the named modes, as they name folders."""
    names = [m.strip().lower() for m in value.replace(",", " ").split()]
    bad = [m for m in names if m not in EVAL_MODES]
    if not names or bad:
        raise InputError(f"--modes {value!r}: choose from {', '.join(EVAL_MODES)}, comma-separated")
    if len(set(names)) != len(names):
        raise InputError(f"--modes {value!r}: each mode once")
    return names


def in_mode(speech: SpeechModel, mode: str) -> SpeechModel:
    """The same loaded model generating with another MCTP schedule (nothing is copied but the handle)."""
    from vita_core.schedule import get_mode

    return replace(speech, mode=get_mode(mode))


def run_settings(speech: SpeechModel, mode: str, max_new_tokens: int, **extra: object) -> dict:
    """What decides a folder's outputs: checkpoint, mode, sampling, token budget (and the caller's extras)."""
    return _settings(speech.folder, speech.sampling, mode, max_new_tokens, **extra)


def planned_settings(model: str | Path | None, mode: str, max_new_tokens: int, **extra: object) -> dict:
    """`run_settings` of a checkpoint folder before it is loaded (its sampling from generation_config.json),
    so a folder of other settings fails before the slow load."""
    from vita_core.speech import checkpoint_defaults, read_generation_config, resolve_model

    folder = resolve_model(model)[0]
    sampling = checkpoint_defaults(read_generation_config(folder), 0)[2]  # sampling does not depend on N
    return _settings(folder, sampling, mode, max_new_tokens, **extra)


def _settings(folder: Path, sampling: Sampling, mode: str, max_new_tokens: int, **extra: object) -> dict:
    return {"model": str(Path(folder).resolve()), "mode": mode, "sampling": asdict(sampling),
            "max_new_tokens": max_new_tokens, **extra}


def utterance_sampling(sampling: Sampling, key: str) -> Sampling:
    """`sampling` seeded for one output from the run's seed (none counts as 0) and the output's id."""
    digest = hashlib.sha256(f"{sampling.seed or 0}/{key}".encode()).digest()
    return replace(sampling, seed=int.from_bytes(digest[:8], "little") >> 1)


def check_folder(folder: Path, settings: dict) -> None:
    """Fail if `folder` holds outputs of other settings or files vita did not make (it writes nothing)."""
    folder, path = Path(folder), Path(folder) / RUN_FILE
    if path.is_file():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            before = None
        if before != settings:
            changed = sorted(k for k in settings if not isinstance(before, dict) or before.get(k) != settings[k])
            raise InputError(f"{folder} holds outputs made with other settings ({', '.join(changed) or 'unknown'}); "
                             "use another --out-dir or delete that folder")
    elif folder.is_dir() and any(folder.iterdir()):
        raise InputError(f"{folder} already holds files not made by vita eval --model; "
                         "use another --out-dir or delete that folder")


def claim_folder(folder: Path, settings: dict) -> None:
    """Record `settings` in `folder`, or check they equal the ones its outputs were made with, so a resumed
    run never mixes outputs of another checkpoint or mode into one score."""
    check_folder(folder, settings)
    folder, path = Path(folder), Path(folder) / RUN_FILE
    if not path.is_file():
        write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def claim_folders(claims: dict[Path, dict], ranks: Ranks) -> None:
    """`claim_folder` for each folder and its settings, on rank 0 (a refusal stops every rank); then check
    that every rank sees the claimed folders, so no rank writes outputs that rank 0 would never score."""

    def claim() -> None:
        for folder, settings in claims.items():
            claim_folder(folder, settings)

    ranks.on_main(claim)
    ranks.check_shared([Path(f) / RUN_FILE for f in claims], "--out-dir")


def check_prompt_wavs(items: Sequence[MetaItem]) -> None:
    """Fail before any synthesis if a voice prompt of the meta list is missing."""
    missing = [i for i in items if i.prompt_wav is not None and not Path(i.prompt_wav).is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} prompt wav(s) of the meta list not found (first: {missing[0].prompt_wav}); "
            "fix the paths or pass --no-voice-prompt"
        )


def tts_synthesizer(
    speech: SpeechModel, voice_prompt: bool = True, sampling: Sampling | None = None, max_new_tokens: int = 1024
) -> Synthesize:
    """synthesize(lines, mode) through `vita_core.tts_batch.synthesize_batch` (the lines in one batched
    generation, each with its own seed); with `voice_prompt` each line's prompt recording goes into the
    system turn (encoded once, shared by every mode)."""
    from vita_core.tts import voice_prompt as encode_voice
    from vita_core.tts_batch import TtsJob, synthesize_batch

    voices: dict[Path, AudioCodes | AudioContext] = {}

    def voice_of(item: MetaItem) -> AudioCodes | AudioContext | None:
        if not voice_prompt or item.prompt_wav is None:
            return None
        if item.prompt_wav not in voices:
            voices[item.prompt_wav] = encode_voice(speech, item.prompt_wav)
        return voices[item.prompt_wav]

    def run(items: list[MetaItem], mode: str) -> list[tuple[np.ndarray, int]]:
        jobs = [TtsJob(i.text, voice_of(i), utterance_sampling(sampling or speech.sampling, i.id)) for i in items]
        spoken = synthesize_batch(in_mode(speech, mode), jobs, max_new_tokens=max_new_tokens)
        return [(s.pcm, s.result.sample_rate) for s in spoken]

    return run


def spoken_answerer(
    speech: SpeechModel,
    mode: str,
    system_prompt: str | None = None,
    sampling: Sampling | None = None,
    max_new_tokens: int = 1024,
) -> Answer:
    """answer(question) as a `vita chat` turn in a fresh conversation: the question's audio in the user
    turn, the reference's "Omni" system prompt unless another is given, interleaved text + speech out."""
    from vita_core.chat.loop import DEFAULT_SYSTEM_PROMPT, Conversation
    from vita_core.generate import TokenEvent

    if not speech.hears or speech.decoder is None:
        raise InputError("spoken QA needs the speech tokenizer and decoder: pass --tokenizer-dir and --decoder-dir")
    model = in_mode(speech, mode)
    rate = speech.input_rate
    prompt_text = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt

    def answer(question: AudioItem) -> SpokenAnswer:
        audio = model.audio_part(read_audio(question.audio, rate), rate, f"question {question.audio}")
        conversation = Conversation(model, prompt_text)
        prompt = conversation.prompt(audio)
        stream = model.decoder.stream()
        text_ids: list[int] = []
        chunks: list[np.ndarray] = []
        for event in model.engine.generate(prompt, mode=model.mode, layout=model.answer_layout(),
                                           sampling=utterance_sampling(sampling or model.sampling, question.id),
                                           max_new_tokens=max_new_tokens,
                                           prompt_embeds=conversation.embeds(prompt, audio)):
            if isinstance(event, TokenEvent) and event.kind == "text":
                text_ids.append(event.token)
            elif isinstance(event, TokenEvent) and event.kind == "audio":
                chunks.append(stream.push([model.tokens.id_to_code(event.token)]))
        chunks.append(stream.flush())
        wav = np.concatenate([np.asarray(c, dtype=np.float32).reshape(-1) for c in chunks])
        return SpokenAnswer(model.chat.decode_text(text_ids).strip(), wav if wav.size else None,
                            int(model.decoder.sample_rate))

    return answer


class ModelTranscriber:
    """vita's own model as an ASR backend for `vita eval asr`: `vita_core.asr.transcribe` per utterance
    (the reference's ASR evaluation: greedy, backbone only, audio tokens masked)."""

    def __init__(self, speech: SpeechModel, language: str, max_new_tokens: int | None = None) -> None:
        if not speech.hears:
            raise InputError("transcribing with --model needs the speech tokenizer: pass --tokenizer-dir")
        self.speech, self.language, self.max_new_tokens = speech, language, max_new_tokens
        self.name = f"vita {speech.folder.name}"

    def transcribe(self, audios: Sequence[np.ndarray], progress: Progress | None = None) -> list[str]:
        """One transcript per 16 kHz array; audio too short to give a single code transcribes as ''."""
        from vita_core.asr import transcribe

        out = []
        for n, wav in enumerate(audios, 1):
            try:
                out.append(transcribe(self.speech, wav, 16000, max_new_tokens=self.max_new_tokens).text)
            except InputError:  # the checks above leave only "too short to give any speech codes/features"
                out.append("")
            if progress:
                progress(n, len(audios))
        return out
