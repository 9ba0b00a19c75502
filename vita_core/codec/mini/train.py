"""Train the mini codec end to end on a `path<TAB>text` speech list: PCM -> codes -> PCM, spectral losses.

The recipe (recipes/mini/codec.yaml) has two sections: `model` (MiniCodecConfig fields) and `train`
(TrainConfig fields). Deterministic: the initial weights come from `seed`, and the crops of step n from
(seed, n), so a resumed run draws the same batches as an uninterrupted one. Resumable: `checkpoint.pt`
(weights, optimiser, step) and the exported codec folder are rewritten atomically every
`checkpoint_every` steps and at the end; training again with the same --out continues from there.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from vita_core.codec.mini.codec import save_mini_codec
from vita_core.codec.mini.model import MiniCodecConfig, MiniCodecModel, mel_filterbank
from vita_core.data.audio_io import read_mono
from vita_core.errors import InputError
from vita_core.files import AtomicFile

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the recipe's `train` section)."""

    seed: int = 11
    steps: int = 5500
    batch: int = 8
    crop_codes: int = 32  # training crop length in codes (32 x 40 ms = 1.28 s at 25 codes/s)
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 200
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    half_weights: bool = True  # export float16 weights (half the size; decode runs in float32)


def load_codec_recipe(path: str | Path) -> tuple[MiniCodecConfig, TrainConfig]:
    """recipes/mini/codec.yaml -> (model config, train config); InputError names a bad key."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"codec recipe {path} not found; see recipes/mini/codec.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    unknown = sorted(set(data) - {"model", "train"})
    if unknown:
        raise InputError(f"{path}: unknown sections {unknown}; use 'model' and 'train'")
    try:
        model = MiniCodecConfig.from_dict(data.get("model") or {})
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: bad 'model' section ({exc})") from exc
    train = data.get("train") or {}
    known = {f.name for f in fields(TrainConfig)}
    if set(train) - known:
        raise InputError(f"{path}: unknown 'train' keys {sorted(set(train) - known)}; known: {', '.join(sorted(known))}")
    return model, TrainConfig(**train)


def read_speech_list(path: str | Path, sample_rate: int) -> np.ndarray:
    """All utterances of a `path<TAB>text` list, resampled and joined into one float32 array."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"speech list {path} not found; make one with scripts/make_mini_corpus.py")
    wavs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        location = Path(line.split("\t", 1)[0])
        audio = location if location.is_absolute() else path.parent / location
        try:
            wavs.append(read_mono(audio, sample_rate))
        except (OSError, RuntimeError) as exc:
            raise InputError(f"{path}:{n}: cannot read {audio} ({exc})") from exc
    if not wavs:
        raise InputError(f"{path} lists no audio")
    return np.concatenate(wavs)


class SpectralLoss(torch.nn.Module):
    """At three STFT sizes: log-mel L1, log-magnitude L1 and spectral convergence (one STFT pair each)."""

    def __init__(self, sample_rate: int, sizes: tuple[int, ...] = (320, 640, 1280), n_mels: int = 80):
        super().__init__()
        self.sizes = sizes
        for n in sizes:
            self.register_buffer(f"win{n}", torch.hann_window(n), persistent=False)
            self.register_buffer(f"fb{n}", mel_filterbank(sample_rate, n, n_mels), persistent=False)

    def _mag(self, wav: torch.Tensor, n: int) -> torch.Tensor:
        return torch.stft(wav, n, n // 4, window=getattr(self, f"win{n}"), return_complex=True).abs()

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        loss = y.new_zeros(())
        for n in self.sizes:
            sy = self._mag(y, n)
            with torch.no_grad():
                sx = self._mag(x, n)
            fb = getattr(self, f"fb{n}")
            loss = loss + F.l1_loss(torch.log(fb @ sy.square() + 1e-5), torch.log(fb @ sx.square() + 1e-5))
            loss = loss + 0.5 * F.l1_loss(torch.log(sy + 1e-5), torch.log(sx + 1e-5))
            loss = loss + torch.linalg.norm(sy - sx) / torch.linalg.norm(sx).clamp(min=1e-5)
        return loss


def _lr(step: int, t: TrainConfig) -> float:
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    frac = min(1.0, (step - t.warmup) / max(1, t.steps - t.warmup))
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * frac))


def _save_checkpoint(out: Path, model: MiniCodecModel, opt: torch.optim.Optimizer, step: int, t: TrainConfig) -> None:
    with AtomicFile(out / CHECKPOINT) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "train": asdict(t),
                    "config": model.config.to_dict()}, tmp)
    save_mini_codec(model, out / "codec", half=t.half_weights)


def train_codec(
    model_config: MiniCodecConfig,
    train_config: TrainConfig,
    speech_list: str | Path,
    out: str | Path,
    max_minutes: float | None = None,
    progress: Callable[[dict], None] | None = None,
) -> Path:
    """Train (or resume) into `out`; returns the exported codec folder `out/codec`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t = train_config
    torch.manual_seed(t.seed)
    model = MiniCodecModel(model_config)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(0.8, 0.99), weight_decay=0.01)
    step = 0
    if (out / CHECKPOINT).is_file():
        ckpt = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
        if ckpt["config"] != model_config.to_dict():
            raise InputError(f"{out / CHECKPOINT} was trained with another model config; use a new --out")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])
    audio = torch.from_numpy(read_speech_list(speech_list, model_config.sample_rate))
    crop = t.crop_codes * model_config.samples_per_code
    if len(audio) <= crop:
        raise InputError(f"{speech_list} holds less than one {crop}-sample crop of speech")
    loss_fn = SpectralLoss(model_config.sample_rate)
    started = time.monotonic()
    model.train()
    while step < t.steps:
        rng = np.random.default_rng([t.seed, step])
        starts = rng.integers(0, len(audio) - crop, t.batch)
        x = torch.stack([audio[s : s + crop] for s in starts])
        for group in opt.param_groups:
            group["lr"] = _lr(step, t)
        tick = time.monotonic()
        loss = loss_fn(model(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        step += 1
        timed_out = max_minutes is not None and time.monotonic() - started > 60 * max_minutes
        if step % t.checkpoint_every == 0 or step == t.steps or timed_out:
            _save_checkpoint(out, model, opt, step, t)
        if progress:
            progress({"step": step, "steps": t.steps, "loss": loss.item(), "seconds_per_step": time.monotonic() - tick})
        if timed_out:
            break
    if not (out / "codec").is_dir():
        _save_checkpoint(out, model, opt, step, t)
    return out / "codec"
