"""HiFT vocoder of the GLM-4-Voice decoder: 80-bin mel at 86.13 frames/s -> 22050 Hz PCM.

A neural source-filter + iSTFT generator (HiFTNet, arXiv 2309.09493): an F0 predictor drives a
harmonic excitation whose STFT is fused into a transposed-conv upsampler; the last layer predicts
log-magnitude and phase of a 16-point STFT that is inverted to 256 samples per mel frame.
The state dict keeps the released `hift.pt` names (`conv_pre.weight_g`, `ups.0.weight_v`, ...).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from vita_core.codec.glm4voice.hift_source import ExcitationState, F0Predictor, HarmonicSource, ResBlock, upsample_f0, weight_normed
from vita_core.codec.weights import read_torch_state
from vita_core.errors import CheckpointError, InputError

_PARAM_G = ".parametrizations.weight.original0"
_PARAM_V = ".parametrizations.weight.original1"


@dataclass(frozen=True)
class ISTFTParams:
    n_fft: int = 16
    hop_len: int = 4


@dataclass(frozen=True)
class F0PredictorConfig:
    num_class: int = 1
    in_channels: int = 80
    cond_channels: int = 512


@dataclass(frozen=True)
class HiFTConfig:
    """The `hift` section of the released decoder's config.yaml; defaults are the released values."""

    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 22050
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: tuple[int, ...] = (8, 8)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16)
    istft_params: ISTFTParams = ISTFTParams()
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 11)
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_predictor: F0PredictorConfig = F0PredictorConfig()

    @property
    def samples_per_frame(self) -> int:
        """PCM samples per mel frame (256 for the released config)."""
        return math.prod(self.upsample_rates) * self.istft_params.hop_len

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HiFTConfig:
        """Build from the hift mapping parsed from config.yaml (`f0_predictor` and `istft_params` nested)."""
        config = _parse(cls, data, "hift")
        _check_layout(config)
        return config


def _parse(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise CheckpointError(f"decoder config: `{where}` must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CheckpointError(f"decoder config: unknown field `{where}.{unknown[0]}`; "
                              "is this a GLM-4-Voice decoder config?")
    missing = sorted(set(fields) - set(data))
    if missing:
        raise CheckpointError(f"decoder config: missing field `{where}.{missing[0]}`; re-download config.yaml")
    nested = {"istft_params": ISTFTParams, "f0_predictor": F0PredictorConfig}
    values = {}
    for name, value in data.items():
        path = f"{where}.{name}"
        if name in nested:
            values[name] = _parse(nested[name], value, path)
        else:
            values[name] = _coerce(value, type(fields[name].default), fields[name].default, path)
    return cls(**values)


def _coerce(value: Any, kind: type, default: Any, path: str) -> Any:
    bad = CheckpointError(f"decoder config: `{path}` = {value!r} is not a valid {kind.__name__}")
    if kind is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise bad
        inner = type(default[0])
        return tuple(_coerce(v, inner, default[0], path) for v in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad
    if kind is int:
        if value != int(value) or value <= 0:
            raise bad
        return int(value)
    return float(value)


def _check_layout(config: HiFTConfig) -> None:
    stages = len(config.upsample_rates)
    lengths = {
        "upsample_kernel_sizes": len(config.upsample_kernel_sizes),
        "source_resblock_kernel_sizes": len(config.source_resblock_kernel_sizes),
        "source_resblock_dilation_sizes": len(config.source_resblock_dilation_sizes),
    }
    for name, length in lengths.items():
        if length != stages:
            raise CheckpointError(f"decoder config: `hift.{name}` needs {stages} entries "
                                  f"(one per upsample rate), got {length}")
    if len(config.resblock_dilation_sizes) != len(config.resblock_kernel_sizes):
        raise CheckpointError("decoder config: `hift.resblock_dilation_sizes` needs one entry per resblock kernel size")
    if config.f0_predictor.num_class != 1 or config.f0_predictor.in_channels != config.in_channels:
        raise CheckpointError("decoder config: `hift.f0_predictor` must have num_class 1 and the vocoder's in_channels")


class HiFTVocoder(nn.Module):
    """Mel [B, in_channels, T] -> (PCM [B, T * 256], excitation source [B, 1, T * 256]).

    Same computation as the reference HiFTGenerator.inference. Call `fold_weight_norm` after
    loading weights so inference does not renormalise every weight on every call. A half-precision
    model keeps the source, the STFTs and the returned PCM in float32.
    """

    def __init__(self, config: HiFTConfig = HiFTConfig()) -> None:
        super().__init__()
        self.config = config
        base, n_fft = config.base_channels, config.istft_params.n_fft
        self.m_source = HarmonicSource(config.sampling_rate, config.nb_harmonics, config.nsf_alpha,
                                       config.nsf_sigma, config.nsf_voiced_threshold)
        self.conv_pre = weight_normed(nn.Conv1d(config.in_channels, base, 7, padding=3))
        self.ups = nn.ModuleList(
            weight_normed(nn.ConvTranspose1d(base // 2**i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes))
        )
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (k, d) in enumerate(zip(config.source_resblock_kernel_sizes, config.source_resblock_dilation_sizes)):
            channels, stride = base // 2 ** (i + 1), math.prod(config.upsample_rates[i + 1:])
            if stride == 1:
                self.source_downs.append(nn.Conv1d(n_fft + 2, channels, 1))
            else:
                self.source_downs.append(nn.Conv1d(n_fft + 2, channels, stride * 2, stride, padding=stride // 2))
            self.source_resblocks.append(ResBlock(channels, k, d))
        self.resblocks = nn.ModuleList(
            ResBlock(base // 2 ** (i + 1), k, d)
            for i in range(len(self.ups))
            for k, d in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes)
        )
        self.conv_post = weight_normed(nn.Conv1d(base // 2 ** len(self.ups), n_fft + 2, 7, padding=3))
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64).float()
        self.register_buffer("stft_window", window, persistent=False)
        self.f0_predictor = F0Predictor(config.f0_predictor.in_channels, config.f0_predictor.cond_channels,
                                        config.f0_predictor.num_class)
        self.register_state_dict_post_hook(_to_released_names)
        self.register_load_state_dict_pre_hook(_from_released_names)

    @property
    def sample_rate(self) -> int:
        return self.config.sampling_rate

    def forward(self, mel: torch.Tensor, cache_source: torch.Tensor | None = None,
                generator: torch.Generator | None = None, state: ExcitationState | None = None,
                commit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Vocode; `cache_source` [B, 1, S] (the tail of the previous chunk's source) overwrites the
        first S source samples so a streamed chunk continues the previous excitation.

        With `state`, the excitation after the cached samples continues the state's phase and
        noise (see ExcitationState), and the state moves to sample `commit` of this call.
        """
        config, n_fft, hop = self.config, self.config.istft_params.n_fft, self.config.istft_params.hop_len
        if mel.dim() != 3 or mel.shape[1] != config.in_channels or mel.shape[2] == 0:
            raise InputError(f"vocoder input must be a mel of shape [batch, {config.in_channels}, frames >= 1], "
                             f"got {tuple(mel.shape)}")
        f0 = upsample_f0(self.f0_predictor(mel), config.samples_per_frame)
        cached = 0 if cache_source is None else cache_source.shape[-1]
        if state is not None:
            fresh = self.m_source(f0[:, :, cached:], state=state, commit=None if commit is None else commit - cached)
            source = torch.cat([torch.zeros_like(f0[:, :, :cached], dtype=fresh.dtype), fresh], dim=-1)
        else:
            source = self.m_source(f0, generator)
        if cached > 0:
            if cached > source.shape[-1] or cache_source.shape[:2] != source.shape[:2]:
                raise InputError(f"cache_source of shape {tuple(cache_source.shape)} does not fit a source of shape "
                                 f"{tuple(source.shape)}; pass the tail of the previous chunk's source")
            source = torch.cat([cache_source.to(source.dtype), source[:, :, cached:]], dim=-1)
        window = self.stft_window.float()
        spec = torch.stft(source.squeeze(1).float(), n_fft, hop, n_fft, window=window, return_complex=True)
        source_spec = torch.cat([spec.real, spec.imag], dim=1).to(mel.dtype)

        x = self.conv_pre(mel)
        kernels = len(config.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, config.lrelu_slope))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](source_spec))
            blocks = self.resblocks[i * kernels:(i + 1) * kernels]
            total = blocks[0](x)
            for block in blocks[1:]:
                total = total + block(x)
            x = total / kernels
        x = self.conv_post(F.leaky_relu(x)).float()

        bins = n_fft // 2 + 1
        magnitude = torch.exp(x[:, :bins]).clamp(max=1e2)
        phase = torch.sin(x[:, bins:])
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        pcm = torch.istft(spec, n_fft, hop, n_fft, window=window)
        return pcm.clamp(-config.audio_limit, config.audio_limit), source

    @torch.inference_mode()
    def inference(self, mel: torch.Tensor, cache_source: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, state: ExcitationState | None = None,
                  commit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` without autograd bookkeeping."""
        return self.forward(mel, cache_source, generator, state, commit)


def _to_released_names(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    items = list(state.items())
    state.clear()
    for key, value in items:
        if key.startswith(prefix):
            key = key.replace(_PARAM_G, ".weight_g").replace(_PARAM_V, ".weight_v")
        state[key] = value


def _from_released_names(module: nn.Module, state: dict, prefix: str, *args: Any) -> None:
    for key in [k for k in state if k.startswith(prefix) and k.endswith((".weight_g", ".weight_v"))]:
        suffix = _PARAM_G if key.endswith("_g") else _PARAM_V
        state[key[: -len(".weight_g")] + suffix] = state.pop(key)


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Replace every weight-normed weight by its value (g * v / |v|, computed once) for inference.

    Outputs are unchanged bit for bit; afterwards the state dict holds plain `weight` tensors,
    so load and save checkpoints before folding.
    """
    for sub in module.modules():
        if parametrize.is_parametrized(sub, "weight"):
            parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)
    return module


def load_hift_state_dict(model: HiFTVocoder, state: Mapping[str, torch.Tensor]) -> None:
    """Load a released-format state dict; any missing, unexpected or mis-shaped key is a CheckpointError."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        key, what = (missing[0], "missing") if missing else (unexpected[0], "unexpected")
        raise CheckpointError(f"hift.pt: {what} key `{key}` ({len(missing)} missing, {len(unexpected)} unexpected); "
                              "the vocoder weights do not match the decoder config")
    for key, shape in expected.items():
        if tuple(state[key].shape) != tuple(shape):
            raise CheckpointError(f"hift.pt: `{key}` has shape {tuple(state[key].shape)}, the config implies "
                                  f"{tuple(shape)}; the vocoder weights do not match the decoder config")
    model.load_state_dict(dict(state))


def load_hift(path: str | Path, config: HiFTConfig, fold: bool = True) -> HiFTVocoder:
    """Read a released `hift.pt` into a vocoder in eval mode (weight norm folded unless fold=False)."""
    state = read_torch_state(Path(path))
    model = HiFTVocoder(config)
    load_hift_state_dict(model, state)
    model.eval()
    return fold_weight_norm(model) if fold else model


def build_random_hift(config: HiFTConfig = HiFTConfig(), seed: int = 0) -> HiFTVocoder:
    """A vocoder with seeded random weights that give finite, varied, mostly unclipped PCM.

    Every weight-normed layer gets v = w and g = |w| for a fan-in-scaled Gaussian w; the F0 head
    is biased so that some frames are voiced (F0 above the threshold) and some are not.
    """
    model = HiFTVocoder(config)
    generator = torch.Generator().manual_seed(seed)

    def gauss(shape: torch.Size, std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    with torch.no_grad():
        for name, sub in model.named_modules():
            if isinstance(sub, (nn.Conv1d, nn.ConvTranspose1d)):
                shape = sub.weight.shape
                kernel = shape[2]
                if isinstance(sub, nn.ConvTranspose1d):
                    fan_in = sub.in_channels * kernel / sub.stride[0]
                else:
                    fan_in = sub.in_channels * kernel
                gain = 0.5 if name == "conv_post" else (0.7 if "resblocks" in name else 1.0)
                weight = gauss(shape, gain / math.sqrt(fan_in))
                if parametrize.is_parametrized(sub, "weight"):
                    norm = weight.flatten(1).norm(dim=1).reshape(-1, *([1] * (weight.dim() - 1)))
                    sub.parametrizations.weight.original0.copy_(norm)
                    sub.parametrizations.weight.original1.copy_(weight)
                else:
                    sub.weight.copy_(weight)
                sub.bias.copy_(gauss(sub.bias.shape, 0.02))
            elif isinstance(sub, nn.Linear):
                sub.weight.copy_(gauss(sub.weight.shape, 1 / math.sqrt(sub.in_features)))
                sub.bias.copy_(gauss(sub.bias.shape, 0.1))
        for name, param in model.named_parameters():
            if name.endswith(".alpha"):
                param.copy_(0.5 + torch.rand(param.shape, generator=generator))
        head = model.f0_predictor.classifier
        head.weight.mul_(150.0)
        head.bias.fill_(15.0)
    return model.eval()
