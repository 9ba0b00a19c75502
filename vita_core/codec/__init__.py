"""Audio codecs behind one protocol (see base.py), each built from a local folder by name.

Implementations are imported only when asked for, so importing this package stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from vita_core.codec.base import SpeechDecoder, SpeechEncoder, StreamingDecoder
from vita_core.errors import CheckpointError

ENCODERS = ("glm4voice", "mini")
DECODERS = ("glm4voice", "mini")

__all__ = ["DECODERS", "ENCODERS", "SpeechDecoder", "SpeechEncoder", "StreamingDecoder", "load_decoder", "load_encoder"]


def _check(folder: str | Path, name: str, known: tuple[str, ...], kind: str) -> Path:
    if name not in known:
        raise CheckpointError(f"unknown {kind} codec {name!r}: choose one of {', '.join(known)}")
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{kind} folder not found: {folder}")
    return folder


def load_encoder(folder: str | Path, name: str = "glm4voice", device: str = "cpu") -> SpeechEncoder:
    """Audio -> codes, e.g. the released glm-4-voice-tokenizer folder, or a mini codec folder."""
    folder = _check(folder, name, ENCODERS, "encoder")
    if name == "mini":
        from vita_core.codec.mini.codec import load_mini_codec

        return load_mini_codec(folder, device=device)
    from vita_core.codec.glm4voice.tokenizer import load_glm4voice_tokenizer

    return load_glm4voice_tokenizer(folder, device=device)


def load_decoder(folder: str | Path, name: str = "glm4voice", device: str = "cpu") -> SpeechDecoder:
    """Codes -> audio, e.g. the released glm-4-voice-decoder folder (config.yaml, flow.pt, hift.pt), or a mini codec folder."""
    folder = _check(folder, name, DECODERS, "decoder")
    if name == "mini":
        from vita_core.codec.mini.codec import load_mini_codec

        return load_mini_codec(folder, device=device)
    from vita_core.codec.glm4voice.decoder import load_glm4voice_decoder

    return load_glm4voice_decoder(folder, device=device)
