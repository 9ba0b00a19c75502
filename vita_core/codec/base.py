"""The codec protocol: every speech tokenizer and decoder behind the same three calls.

Encoders turn 16 kHz mono speech into discrete codes; decoders turn codes back into PCM,
one-shot or incrementally. Codes are plain int64 numpy arrays; PCM is float32 in [-1, 1].
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class SpeechEncoder(Protocol):
    """Audio -> discrete codes (e.g. the GLM-4-Voice tokenizer: 16 kHz in, 12.5 codes/s, 16384 entries)."""

    sample_rate: int
    codes_per_second: float
    codebook_size: int

    def encode(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """One mono waveform at any sample rate -> 1-D int64 codes."""
        ...

    def encode_batch(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        """Several waveforms at once; same result as calling `encode` on each."""
        ...


@runtime_checkable
class StreamingDecoder(Protocol):
    """Incremental decode for one utterance: push codes as they arrive, get the new PCM back."""

    def push(self, codes: Sequence[int]) -> np.ndarray:
        """Add codes; return the PCM that is now final (may be empty)."""
        ...

    def flush(self) -> np.ndarray:
        """End of utterance: return the remaining PCM."""
        ...


@runtime_checkable
class SpeechDecoder(Protocol):
    """Codes -> audio (e.g. GLM-4-Voice flow matching + HiFT at 22.05 kHz)."""

    sample_rate: int

    def decode(self, codes: Sequence[int]) -> tuple[np.ndarray, int]:
        """All codes at once -> (float32 mono PCM, sample rate)."""
        ...

    def stream(self) -> StreamingDecoder:
        """A fresh per-utterance streaming decoder."""
        ...
