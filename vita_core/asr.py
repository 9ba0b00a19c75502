"""Speech to text: the recording in the reference's ASR prompt, text-only generation.

The user turn is "Convert the speech to text.\\n" followed by the audio in
<|begin_of_audio|> ... <|end_of_audio|> (the reference's "<|audio|>" placeholder, filled in with
speech codes, or for a Plus checkpoint with SenseVoice feature slots); the answer is generated
with the backbone alone (vanilla) and audio tokens masked out, then decoded with special tokens
skipped, as the reference's ASR evaluation does.
"""

from __future__ import annotations

import glob
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vita_core.errors import InputError
from vita_core.files import write_text
from vita_core.speech import SpeechModel
from vita_core.tokens import AudioCodes, AudioContext

ASR_TASK = "Convert the speech to text.\n"
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif"}
FORMATS = ("txt", "json", "srt", "vtt", "tsv")


@dataclass
class Transcript:
    audio: str
    text: str
    duration: float  # seconds of input audio
    num_codes: int  # speech codes of the input (Plus: continuous feature vectors)
    language: str  # the language hint given ("auto": none)
    tokens: int
    seconds: float  # wall time for encode + generate

    def to_dict(self) -> dict:
        out = asdict(self)
        out["segments"] = [{"id": 0, "start": 0.0, "end": round(self.duration, 3), "text": self.text}]
        return out


def collect_inputs(items: Sequence[str]) -> list[Path]:
    """Files, folders (searched recursively for audio files) and glob patterns -> audio files, in order."""
    if not items:
        raise InputError("give at least one audio file, folder or glob")
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            if not matches:
                raise InputError(f"folder {path} holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                raise InputError(f"pattern {item!r} matches no files")
        else:
            raise InputError(f"audio file {path} does not exist")
        found += [m for m in matches if m not in found]
    return found


def asr_prompt(speech: SpeechModel, audio: AudioCodes | AudioContext) -> list[int]:
    from vita_core.tokens import Message

    return speech.chat.encode([Message("user", [ASR_TASK, audio])])


def check_budget(max_new_tokens: int | None) -> None:
    """A given token budget must allow at least one token (None means the per-duration default)."""
    if max_new_tokens is not None and max_new_tokens < 1:
        raise InputError(f"--max-new-tokens {max_new_tokens} must be at least 1 "
                         "(leave it out for 10 tokens per second of audio + 20)")


def transcribe(speech: SpeechModel, wav: np.ndarray, sample_rate: int, name: str = "",
               max_new_tokens: int | None = None, language: str = "auto") -> Transcript:
    """One recording -> text. The token budget defaults to 10 tokens per second of audio plus 20.

    `language` (Plus checkpoints only) is SenseVoice's language query; "auto" as the reference.
    """
    from vita_core.generate import Sampling, generate_ids

    check_budget(max_new_tokens)
    if wav.size == 0:
        raise InputError(f"{name or 'the audio'} holds no samples")
    start = time.perf_counter()
    duration = wav.size / sample_rate
    audio = speech.audio_part(wav, sample_rate, name or "the audio", language)
    budget = max_new_tokens if max_new_tokens is not None else int(10 * duration) + 20
    prompt = asr_prompt(speech, audio)
    done = generate_ids(speech.engine, prompt, mode="vanilla", layout=speech.text_layout(), sampling=Sampling(),
                        max_new_tokens=budget, prompt_embeds=speech.prompt_embeds(prompt, [audio]))
    text = speech.chat.decode_text(done.tokens).strip()
    return Transcript(audio=name, text=text, duration=duration, num_codes=audio.length, language=language,
                      tokens=len(done.tokens), seconds=time.perf_counter() - start)


def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def render(t: Transcript, fmt: str) -> str:
    """The transcript in one of FORMATS (whisper's layouts; one segment spanning the recording)."""
    end = t.duration
    if fmt == "txt":
        return t.text + "\n"
    if fmt == "json":
        return json.dumps(t.to_dict(), ensure_ascii=False, indent=2) + "\n"
    if fmt == "srt":
        return f"1\n{_timestamp(0, ',')} --> {_timestamp(end, ',')}\n{t.text}\n\n"
    if fmt == "vtt":
        return f"WEBVTT\n\n{_timestamp(0, '.')} --> {_timestamp(end, '.')}\n{t.text}\n\n"
    if fmt == "tsv":
        return f"start\tend\ttext\n0\t{int(round(end * 1000))}\t{t.text}\n"
    raise InputError(f"--output-format {fmt!r}: choose {', '.join(FORMATS)} or all")


def parse_formats(value: str) -> list[str]:
    """'all', one format, or a comma-separated list."""
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    if items == ["all"]:
        return list(FORMATS)
    bad = [v for v in items if v not in FORMATS]
    if bad or not items:
        raise InputError(f"--output-format {value!r}: choose {', '.join(FORMATS)} or all")
    return items


def write_outputs(t: Transcript, stem: str, out_dir: Path, formats: Sequence[str]) -> list[Path]:
    """Write each format atomically (temp file + rename) as out_dir/stem.fmt."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = out_dir / f"{stem}.{fmt}"
        written.append(write_text(target, render(t, fmt)))
    return written


def output_stems(files: Sequence[Path]) -> list[str]:
    """File stems for the outputs; two inputs with the same stem would overwrite each other."""
    stems = [f.stem for f in files]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise InputError(f"several inputs are named {', '.join(dupes)}; their outputs would overwrite each other "
                         "in --output-dir, so transcribe them into separate folders")
    return stems


def transcribe_files(speech: SpeechModel, files: Sequence[Path], out_dir: Path, formats: Sequence[str],
                     on_result: Callable[[Path, Transcript | None, Exception | None], None],
                     max_new_tokens: int | None = None, language: str = "auto") -> int:
    """Transcribe every file, writing its outputs; a file that fails is reported and skipped.

    Returns the number of failures (user errors only; bugs propagate).
    """
    from vita_core.errors import VitaError
    from vita_core.speech import read_audio

    speech.check_language(language)
    check_budget(max_new_tokens)
    rate = speech.input_rate
    failures = 0
    for path, stem in zip(files, output_stems(files)):
        try:
            t = transcribe(speech, read_audio(path, rate), rate, name=str(path), max_new_tokens=max_new_tokens,
                           language=language)
        except VitaError as exc:
            failures += 1
            on_result(path, None, exc)
            continue
        write_outputs(t, stem, out_dir, formats)
        on_result(path, t, None)
    return failures
