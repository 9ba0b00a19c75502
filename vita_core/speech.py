"""One loaded speech model for tts, asr and chat: checkpoint, tokenizer, engine and codec.

Folders come from explicit arguments first, then the environment (VITA_MODEL,
VITA_AUDIO_TOKENIZER, VITA_AUDIO_DECODER, VITA_SENSEVOICE), then a config file
(~/.config/vita/config.toml or config.yaml, keys `model`, `audio_tokenizer`, `audio_decoder`,
`sensevoice`). A checkpoint that records its codec (codec.json, see vita_core/codec/record.py) loads
that codec's encoder/decoder, from its own codec folder or the bundled one, unless a flag,
variable or config entry names another folder; one without it is GLM-4-Voice's. A checkpoint's
default mode and content layout come from `mtp_inference_mode` in its generation_config.json, as in
the reference.

Audio input depends on the checkpoint: Boost and Balance hear GLM-4-Voice codes (the speech
tokenizer folder); VITA-Audio-Plus hears continuous SenseVoice features (a SenseVoiceSmall
folder, or the checkpoint folder itself when it carries SenseVoice's config.yaml, as upstream's).
Either way a recording becomes one message part (`audio_part`) and the prompt's input embeddings
follow from the parts (`prompt_embeds`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Sequence

import numpy as np
import soundfile as sf
import soxr

from vita_core.errors import AudioError, CheckpointError, InputError

if TYPE_CHECKING:
    from vita_core.codec.base import SpeechDecoder, SpeechEncoder
    from vita_core.codec.sensevoice.plus_audio import PlusAudioInput
    from vita_core.generate import Engine, Sampling
    from vita_core.model.modeling import VitaAudioForCausalLM
    from vita_core.schedule import Layout, Mode
    from vita_core.tokens import AudioCodes, AudioContext, ChatFormat, TokenLayout

ENV = {"model": "VITA_MODEL", "audio_tokenizer": "VITA_AUDIO_TOKENIZER", "audio_decoder": "VITA_AUDIO_DECODER",
       "sensevoice": "VITA_SENSEVOICE"}
FLAGS = {"model": "--model", "audio_tokenizer": "--tokenizer-dir", "audio_decoder": "--decoder-dir",
         "sensevoice": "--sensevoice-dir"}
WHAT = {
    "model": "a VITA-Audio checkpoint folder (config.json, model.safetensors, tokenizer.json)",
    "audio_tokenizer": "a GLM-4-Voice speech tokenizer folder",
    "audio_decoder": "a GLM-4-Voice speech decoder folder (flow + HiFT)",
    "sensevoice": "a SenseVoiceSmall folder (config.yaml, am.mvn), the audio encoder of VITA-Audio-Plus",
}


NO_LANGUAGE = ("--language {language}: GLM-4-Voice speech codes carry no language hint, only VITA-Audio-Plus "
               "checkpoints (SenseVoice input) take one; leave it at auto")


def check_language_flag(model: str | Path | None, language: str) -> None:
    """A language hint for a checkpoint that takes none fails from its config.json, before anything loads."""
    if language == "auto":
        return
    from vita_core.model.checkpoint import is_plus, read_config

    if not is_plus(read_config(resolve_model(model)[0])):
        raise InputError(NO_LANGUAGE.format(language=language))


def config_file() -> Path | None:
    """The user's config file, if any: $XDG_CONFIG_HOME/vita/config.toml|yaml (default ~/.config)."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "vita"
    for name in ("config.toml", "config.yaml", "config.yml"):
        if (base / name).is_file():
            return base / name
    return None


def read_user_config(path: Path | None = None) -> dict[str, Any]:
    """Keys of the config file (empty when there is none); a broken file is a clear error."""
    path = path or config_file()
    if path is None:
        return {}
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(path.read_text())
        else:
            import yaml

            data = yaml.safe_load(path.read_text()) or {}
    except Exception as exc:  # tomllib and yaml raise their own error types
        raise InputError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold key = value pairs (model, audio_tokenizer, audio_decoder)")
    return data


def _configured(key: str, given: str | Path | None) -> tuple[Any, str]:
    """The value for `key` from the flag, else the environment, else the config file (None if none) and its source."""
    if given is not None:
        return given, FLAGS[key]
    if os.environ.get(ENV[key]):
        return os.environ[ENV[key]], ENV[key]
    cfg = read_user_config()
    if cfg.get(key):
        return cfg[key], f"{key} in {config_file()}"
    return None, FLAGS[key]


def resolve_folder(key: str, given: str | Path | None, fallback: Path | None = None) -> Path:
    """Explicit flag, then environment variable, then config file, then `fallback`; checked to be a folder.

    A model named `vita-mini` is the bundled one (vita_core/bundled.py)."""
    from vita_core.bundled import by_name

    value, source = _configured(key, given)
    if value is None and fallback is not None:
        value = fallback
    if value is None:
        raise InputError(f"no {key.replace('_', ' ')} folder given: pass {FLAGS[key]} DIR, set {ENV[key]}, "
                         f"or add {key} = \"DIR\" to ~/.config/vita/config.toml ({WHAT[key]})")
    path = (by_name(str(value)) if key == "model" else None) or Path(str(value)).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{source} points at {path}, which is not a folder; expected {WHAT[key]}")
    return path


def resolve_model(given: str | Path | None) -> tuple[Path, bool]:
    """The checkpoint folder (flag, env, config, else the bundled vita-mini) and whether it is that fallback."""
    from vita_core.bundled import bundled_model

    fallback = bundled_model() if _configured("model", given)[0] is None else None
    return resolve_folder("model", given, fallback), fallback is not None


def read_generation_config(folder: Path) -> dict[str, Any]:
    path = folder / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); re-copy the checkpoint") from None


def resolve_dtype(dtype: str, device: str) -> Any:
    """'auto' is bfloat16 on CUDA and float32 on CPU."""
    from vita_core.bench import DTYPES

    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype!r}: choose auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def read_audio(path: str | Path | BinaryIO, sample_rate: int, name: str | None = None) -> np.ndarray:
    """A soundfile-readable file (or open binary stream, e.g. stdin) -> float32 mono at `sample_rate`."""
    if isinstance(path, (str, Path)):
        name = name or str(path)
        if not Path(path).is_file():
            raise AudioError(f"audio file {path} does not exist")
        path = str(path)
    try:
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise AudioError(f"cannot read {name} as audio ({exc}); use wav, flac or ogg") from None
    wav = wav.mean(axis=1)
    if wav.size == 0:
        raise AudioError(f"{name} holds no audio samples")
    return resample(wav, sr, sample_rate)


def resample(wav: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return np.ascontiguousarray(wav, dtype=np.float32)
    return soxr.resample(wav, sr, target).astype(np.float32)


@dataclass
class SpeechModel:
    """Everything a speech command needs, loaded once and shared."""

    folder: Path
    model: VitaAudioForCausalLM
    tokenizer: Any  # a transformers tokenizer
    tokens: TokenLayout
    chat: ChatFormat
    engine: Engine
    mode: Mode
    ratio: list[int]  # the checkpoint's content layout
    sampling: Sampling  # the checkpoint's defaults
    encoder: SpeechEncoder | None  # GLM-4-Voice codes in (Boost, Balance)
    decoder: SpeechDecoder | None
    device: str
    plus_audio: PlusAudioInput | None = None  # continuous features in (Plus)

    @property
    def input_rate(self) -> int:
        """Sample rate the audio input expects (16 kHz for both kinds)."""
        source = self.plus_audio or self.encoder
        return int(getattr(source, "sample_rate", 16000))

    @property
    def hears(self) -> bool:
        """Whether audio input was loaded (need_encoder)."""
        return self.plus_audio is not None or self.encoder is not None

    def answer_layout(self) -> Layout:
        """Interleaved text + audio, as the checkpoint was trained."""
        from vita_core.schedule import Layout

        return Layout(self.ratio)

    def text_layout(self) -> Layout:
        from vita_core.schedule import Layout

        return Layout(None, text_only=True)

    def encode(self, wav: np.ndarray, sample_rate: int) -> list[int]:
        """Speech -> discrete codes through the loaded tokenizer."""
        if self.encoder is None:
            raise InputError("audio input needs the speech tokenizer: pass --tokenizer-dir or set VITA_AUDIO_TOKENIZER")
        return [int(c) for c in self.encoder.encode(wav, sample_rate)]

    def audio_part(self, wav: np.ndarray, sample_rate: int, name: str = "the audio",
                   language: str = "auto") -> AudioCodes | AudioContext:
        """A recording as this checkpoint hears it: GLM-4-Voice codes, or (Plus) projected SenseVoice features.

        `language` other than "auto" is SenseVoice's language hint, so only a Plus checkpoint takes one.
        """
        from vita_core.tokens import AudioCodes, AudioContext

        self.check_language(language)
        if self.plus_audio is not None:
            try:
                features = self.plus_audio.embed(wav, sample_rate, language)
            except AudioError as exc:
                raise InputError(f"{name}: {exc}") from None
            return AudioContext(len(features), features)
        codes = self.encode(wav, sample_rate)
        if not codes:
            raise InputError(f"{name} is too short ({wav.size / sample_rate:.2f} s) to give any speech codes")
        return AudioCodes(codes)

    def check_language(self, language: str) -> None:
        """A language hint this checkpoint's audio input takes ("auto" always; others only with SenseVoice)."""
        if language == "auto":
            return
        if self.plus_audio is None:
            raise InputError(NO_LANGUAGE.format(language=language))
        if language not in self.plus_audio.encoder.languages:
            raise InputError(f"--language {language}: SenseVoice knows {', '.join(self.plus_audio.encoder.languages)}")

    def prompt_embeds(self, ids: Sequence[int], parts: Sequence[Any]) -> Any:
        """Backbone input embeddings of a prompt holding these parts, or None when it has no Plus audio."""
        import torch

        from vita_core.codec.sensevoice.plus_audio import fill_audio_context
        from vita_core.tokens import AudioContext

        features = [p.features for p in parts if isinstance(p, AudioContext)]
        if not features:
            return None
        with torch.inference_mode():
            tokens = self.model.embed(torch.tensor(list(ids), device=self.model.lm_head.weight.device))
            return fill_audio_context(tokens, ids, features, self.tokens.context_of_audio)


def checkpoint_defaults(gen: dict[str, Any], num_mtp: int) -> tuple[list[int], list[int] | None, Sampling]:
    """(content ratio, default mode pattern or None for vanilla, default Sampling) of a checkpoint."""
    from vita_core.generate import Sampling
    from vita_core.schedule import BOOST_RATIO, parse_ratio

    pattern = gen.get("mtp_inference_mode")
    ratio = list(BOOST_RATIO)
    if pattern:
        pattern = parse_ratio(pattern)
        if all(a >= 2 for a in pattern[1::2]):
            ratio = pattern
        if not any(pattern[1::2]) or num_mtp == 0:
            pattern = None
    elif num_mtp:
        pattern = list(BOOST_RATIO)
    if gen.get("do_sample"):
        sampling = Sampling(temperature=float(gen.get("temperature", 1.0)), top_k=int(gen.get("top_k", 0) or 0),
                            top_p=float(gen.get("top_p", 1.0)),
                            repetition_penalty=float(gen.get("repetition_penalty", 1.0)))
    else:
        sampling = Sampling()
    return ratio, pattern, sampling


def named_mode(pattern: Sequence[int] | None) -> str | Sequence[int]:
    """'boost' for [1, 10, 4, 10] and so on, so reports name the mode the way users do."""
    from vita_core.schedule import MODES

    for name, known in MODES.items():
        if known == (list(pattern) if pattern else None):
            return name
    return pattern or "vanilla"


def load_speech_model(
    model: str | Path | None = None,
    tokenizer_dir: str | Path | None = None,
    decoder_dir: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    mode: str | Sequence[int] | None = None,
    need_encoder: bool = False,
    need_decoder: bool = False,
    progress: Callable[[str], None] | None = None,
    sensevoice_dir: str | Path | None = None,
    task: str = "tts",
    notice: Callable[[str], None] | None = None,
) -> SpeechModel:
    """Load checkpoint + tokenizer (+ audio input / speech decoder when the task needs them).

    `need_encoder` loads the speech tokenizer, or for a Plus checkpoint SenseVoice and its projector.
    `task` (tts, asr, chat, sqa) is checked against the checkpoint's card; `notice` gets the one line
    saying the bundled vita-mini is used because no model was given.
    """
    from vita_core import codec
    from vita_core.bench import resolve_device
    from vita_core.codec.record import read_record
    from vita_core.generate import Engine
    from vita_core.model.checkpoint import is_plus, load_model, read_config
    from vita_core.schedule import get_mode
    from vita_core.tokens import NUM_AUDIO_CODES, ChatFormat, layout_from_tokenizer, load_tokenizer

    from vita_core.bundled import card_mode, check_task, default_notice

    say = progress or (lambda _msg: None)
    folder, fallback = resolve_model(model)
    check_task(folder, task)
    if fallback and notice is not None:
        notice(default_notice(folder))
    config = read_config(folder)
    plus = is_plus(config)
    own = read_record(folder)  # the checkpoint's codec (glm4voice when it records none)
    enc_dir = resolve_folder("audio_tokenizer", tokenizer_dir, own.folder) if need_encoder and not plus else None
    sv_dir = None
    if need_encoder and plus:
        sv_dir = resolve_folder("sensevoice", sensevoice_dir, folder if (folder / "config.yaml").is_file() else None)
    dec_dir = resolve_folder("audio_decoder", decoder_dir, own.folder) if need_decoder else None
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    chosen_mode = get_mode(mode) if mode is not None else None  # validate flags before the slow part
    tokenizer = load_tokenizer(folder)
    tokens = layout_from_tokenizer(tokenizer)
    if plus != tokens.is_plus:
        which = ("is a VITA-Audio-Plus one but the tokenizer lacks" if plus
                 else "is not a Plus one but the tokenizer has")
        raise CheckpointError(f"{folder}: config.json {which} <|context_of_audio|>; the folder mixes the files of "
                              "two checkpoints, copy the whole released folder")
    encoder = decoder = plus_audio = None  # the codecs load first: a broken folder fails before the slow model load
    if sv_dir is not None:
        from vita_core.codec.sensevoice.plus_audio import load_plus_audio

        say(f"loading SenseVoice audio encoder ({sv_dir}) and projector ({folder})")
        plus_audio = load_plus_audio(folder, sv_dir, int(config["hidden_size"]), device=device, dtype=torch_dtype)
    if enc_dir is not None:
        say(f"loading speech tokenizer {enc_dir}")
        encoder = codec.load_encoder(enc_dir, own.family, device=device)
        if int(encoder.codebook_size) != tokens.num_codes:
            which = "the GLM-4-Voice tokenizer" if tokens.num_codes == NUM_AUDIO_CODES else "the model's own codec"
            raise CheckpointError(f"speech tokenizer {enc_dir} has {encoder.codebook_size} codes but the model "
                                  f"{folder} expects {tokens.num_codes}; use {which}")
    if dec_dir is not None:
        say(f"loading speech decoder {dec_dir}")
        decoder = codec.load_decoder(dec_dir, own.family, device=device)
        size = getattr(decoder, "codebook_size", None)
        if size is not None and int(size) != tokens.num_codes:
            raise CheckpointError(f"speech decoder {dec_dir} has {size} codes but the model {folder} expects "
                                  f"{tokens.num_codes}; use the codec the model was trained with")
    say(f"loading {folder} on {device}")
    net = load_model(folder, device=device, dtype=torch_dtype)
    ratio, pattern, sampling = checkpoint_defaults(read_generation_config(folder), net.num_mtp)
    return SpeechModel(
        folder=folder, model=net, tokenizer=tokenizer, tokens=tokens, chat=ChatFormat(tokenizer, tokens),
        engine=Engine(net, tokens), mode=chosen_mode or get_mode(card_mode(folder) or named_mode(pattern)),
        ratio=ratio, sampling=sampling, encoder=encoder, decoder=decoder, device=device, plus_audio=plus_audio,
    )


def check_generation_flags(mode: str | Sequence[int] | None = None, max_new_tokens: int = 1024,
                           temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                           repetition_penalty: float | None = None, device: str = "auto",
                           dtype: str = "auto") -> None:
    """Check what a request's flags can get wrong without the model, so a typo fails before the slow load.

    Sampling flags are checked as given (each is laid over the checkpoint's valid defaults later).
    """
    from vita_core.bench import resolve_device
    from vita_core.generate import Sampling
    from vita_core.schedule import get_mode

    resolve_dtype(dtype, resolve_device(device))
    if mode is not None:
        get_mode(mode)
    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens {max_new_tokens} must be at least 1")
    given = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "repetition_penalty": repetition_penalty}
    Sampling(**{k: v for k, v in given.items() if v is not None})
