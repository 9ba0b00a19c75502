"""Helpers for the data tests: a deterministic stand-in speech encoder and small audio files."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from vita_core.tiny.corpus import TINY_TEXTS, build_tiny_corpus, write_tone  # noqa: F401  (tests import them here)


class StandInEncoder:
    """Follows the SpeechEncoder protocol at GLM-4-Voice's rates: 16 kHz in, 12.5 codes/s, 16384 codes.

    Each 80 ms frame (1280 samples) becomes one code from its energy and zero-crossing count, so
    codes depend on the audio content and equal audio gives equal codes. Counts the clips it encodes.
    A smaller `codebook_size` stands for another codec (codes are taken modulo it).
    """

    sample_rate = 16000
    codes_per_second = 12.5
    hop = 1280

    def __init__(self, codebook_size: int = 16384) -> None:
        self.encoded = 0
        self.codebook_size = codebook_size

    def encode(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        assert sample_rate == self.sample_rate
        self.encoded += 1
        n = len(wav) // self.hop
        frames = np.asarray(wav[: n * self.hop], dtype=np.float64).reshape(n, self.hop)
        energy = np.minimum((np.sqrt((frames**2).mean(axis=1)) * 300).astype(np.int64), 127)
        crossings = (np.diff(np.signbit(frames), axis=1) != 0).sum(axis=1)
        return ((energy * 128 + np.minimum(crossings, 127)) % self.codebook_size).astype(np.int64)

    def encode_batch(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        return [self.encode(w, sample_rate) for w in wavs]


def make_tiny_corpus(root: Path) -> dict[str, Path]:
    """Inputs for recipes/data/tiny.yaml (the same corpus README's walkthrough builds)."""
    return build_tiny_corpus(root)


def make_tiny_prepared(root: Path, tokenizer, codebook_size: int = 16384) -> Path:
    """Prepare the tiny corpus under root/prepared/<name>, as recipes/data/tiny.yaml expects."""
    from vita_core.data.prepare import gather, prepare

    encoder = StandInEncoder(codebook_size)
    for name, path in make_tiny_corpus(root / "corpus").items():
        items = gather([(path, "auto")], ("asr", "tts"))
        prepare(items, root / "prepared" / name, tokenizer, encoder, "standin", root / "cache", shard_size=5)
    return root
