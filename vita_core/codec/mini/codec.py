"""The mini codec behind vita's codec protocol, and its folder format.

A codec folder holds two files:
  config.json        {"format": "vita-mini-codec", "version": 1, "config": {MiniCodecConfig fields}}
  model.safetensors  the MiniCodecModel state dict, key for key (encoder.*, decoder.*), float32 or float16

One object is both the encoder (16 kHz speech -> codes) and the decoder (codes -> 16 kHz PCM).
Streaming decode recomputes only a bounded window (`left_context_codes` past codes plus the new ones),
so each chunk costs the same however long the utterance is, and gives the one-shot samples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vita_core.audio import check_waveform, resample
from vita_core.codec.mini.model import MiniCodecConfig, MiniCodecModel
from vita_core.codec.weights import strict_load
from vita_core.errors import CheckpointError, InputError
from vita_core.files import AtomicFile, write_text

FORMAT = "vita-mini-codec"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class MiniCodec:
    """Encoder and decoder of one trained MiniCodecModel (protocols SpeechEncoder and SpeechDecoder)."""

    def __init__(self, model: MiniCodecModel, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.config = model.config
        self.device = device
        self.sample_rate = self.config.sample_rate
        self.codes_per_second = self.config.codes_per_second
        self.codebook_size = self.config.codebook_size

    @torch.inference_mode()
    def encode(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono speech at any rate -> int64 codes, one per samples_per_code (the tail zero-padded)."""
        wav = check_waveform(wav, sample_rate)
        if sample_rate != self.sample_rate:
            wav = resample(wav, sample_rate, self.sample_rate)
        step = self.config.samples_per_code
        wav = np.pad(wav, (0, -len(wav) % step))
        x = torch.from_numpy(wav).to(self.device)[None]
        return self.model.encode(x)[0].cpu().numpy().astype(np.int64)

    def encode_batch(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        """One `encode` per waveform (the convolutions pad per utterance, so batching would change edges)."""
        return [self.encode(w, sample_rate) for w in wavs]

    def check_codes(self, codes: Sequence[int]) -> torch.Tensor:
        """Codes as a (1, T) tensor, or InputError naming the first code outside [0, codebook_size)."""
        arr = np.asarray(codes, dtype=np.int64).reshape(-1)
        bad = (arr < 0) | (arr >= self.codebook_size)
        if bad.any():
            raise InputError(f"audio code {int(arr[bad][0])} is outside this codec's range 0..{self.codebook_size - 1}")
        return torch.from_numpy(arr).to(self.device)[None]

    @torch.inference_mode()
    def decode(self, codes: Sequence[int]) -> tuple[np.ndarray, int]:
        """All codes at once -> (float32 PCM, 16000); samples_per_code samples per code."""
        x = self.check_codes(codes)
        if x.shape[1] == 0:
            return np.zeros(0, dtype=np.float32), self.sample_rate
        return self.model.decode(x)[0].cpu().numpy().astype(np.float32), self.sample_rate

    def stream(self) -> "MiniStream":
        return MiniStream(self)


MAX_CHUNK_CODES = 8  # 320 ms: decoding one code at a time cost ~7x the decoder work of 8 at a time


class MiniStream:
    """Incremental decode of one utterance (protocol StreamingDecoder).

    Each decode recomputes `left_context_codes` of history, so decoding code by code would spend most
    of its time on that window. The stream decodes once 1 new code is final, then 2, 4, and from then
    on 8 (`MAX_CHUNK_CODES`): the first audio is as early as one code allows, and each chunk's audio
    lasts longer than generating the next one takes at a real-time factor under 0.5. The samples are
    the same however the codes are grouped.
    """

    def __init__(self, codec: MiniCodec):
        self.codec = codec
        c = codec.config
        self.stride, self.hop, self.n_fft = c.code_stride, c.hop, c.n_fft
        self.lookahead, self.context = c.lookahead, c.left_context_codes
        self.istft = codec.model.istft
        self.codes: list[int] = []
        self.frames_done = 0
        self.acc = np.zeros(0, dtype=np.float32)  # overlap-add buffer from buffer sample acc_start on
        self.acc_start = 0
        self.emitted = 0  # output samples returned so far (output sample o = buffer sample o + pad)
        self.chunk_codes = 1  # final codes to wait for before the next decode

    def push(self, codes: Sequence[int]) -> np.ndarray:
        """Add codes; returns the samples no later code can change (lookahead codes behind the input)."""
        self.codes.extend(int(c) for c in self.codec.check_codes(codes)[0].tolist())
        ready = (len(self.codes) - self.lookahead) * self.stride
        if ready - self.frames_done < self.chunk_codes * self.stride:
            return np.zeros(0, dtype=np.float32)
        self.chunk_codes = min(2 * self.chunk_codes, MAX_CHUNK_CODES)
        self._add_frames(ready)
        return self._emit(ready * self.hop - self.istft.pad, n_frames=None)

    def flush(self) -> np.ndarray:
        """End of utterance: the remaining samples, as a one-shot decode ends."""
        total = len(self.codes) * self.stride
        if total > self.frames_done:
            self._add_frames(total)
        return self._emit(total * self.hop, n_frames=total)

    @torch.inference_mode()
    def _add_frames(self, end: int) -> None:
        first_code = self.frames_done // self.stride
        c0 = max(0, first_code - self.context)
        window = torch.tensor(self.codes[c0:], dtype=torch.long, device=self.codec.device)[None]
        model = self.codec.model
        spec = model.decoder(model.fsq.lookup(window))[..., self.frames_done - c0 * self.stride : end - c0 * self.stride]
        frames = self.istft.frames(spec)[0].cpu().numpy()
        need = (end - 1) * self.hop + self.n_fft - self.acc_start
        if need > len(self.acc):
            self.acc = np.concatenate([self.acc, np.zeros(need - len(self.acc), dtype=np.float32)])
        for i, frame in enumerate(frames):
            at = (self.frames_done + i) * self.hop - self.acc_start
            self.acc[at : at + self.n_fft] += frame
        self.frames_done = end

    def _emit(self, until: int, n_frames: int | None) -> np.ndarray:
        """Output samples [emitted, until), normalised by the window envelope; drops what is no longer needed."""
        start, stop = self.emitted + self.istft.pad, until + self.istft.pad
        if stop <= start:
            return np.zeros(0, dtype=np.float32)
        env = self.istft.envelope(start, stop - start, n_frames if n_frames is not None else 1 << 40).numpy()
        out = self.acc[start - self.acc_start : stop - self.acc_start] / env
        self.acc = self.acc[stop - self.acc_start :]
        self.acc_start, self.emitted = stop, until
        return out.astype(np.float32)


def save_mini_codec(model: MiniCodecModel, folder: str | Path, half: bool = False) -> Path:
    """Write config.json + model.safetensors into `folder`, each file replaced atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with AtomicFile(folder / WEIGHTS_FILE) as tmp:
        save_file(state, tmp)
    meta = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict()}
    write_text(folder / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return folder


def read_config(folder: Path) -> MiniCodecConfig:
    """The config of a codec folder, or CheckpointError saying what is wrong with config.json."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {CONFIG_FILE}: not a mini codec folder (train one with `vita codec train`)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); re-save the codec folder") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} config (its 'format' field differs); point at a mini codec folder")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} has version {meta.get('version')!r}; this vita reads version {VERSION}")
    try:
        return MiniCodecConfig.from_dict(meta.get("config") or {})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad 'config' ({exc}); re-save the codec folder") from exc


def load_mini_codec(folder: str | Path, device: str = "cpu") -> MiniCodec:
    """A codec folder -> MiniCodec (weights must match the config key for key)."""
    folder = Path(folder)
    config = read_config(folder)
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE}; copy the whole codec folder")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(f"cannot read {path}: {str(exc).splitlines()[0]}; re-save the codec folder") from exc
    model = MiniCodecModel(config)
    strict_load(model, {k: v.float() for k, v in state.items()}, str(path))
    return MiniCodec(model, device=device)
