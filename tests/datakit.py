"""Helpers for the data tests: a deterministic stand-in speech encoder and small audio files."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf


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


def write_tone(path: Path, seconds: float, freq: float, sample_rate: int = 16000) -> Path:
    """A short tone with a little seeded noise; `freq` makes files differ."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    noise = np.random.default_rng(int(freq)).normal(0, 0.01, len(t))
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32), sample_rate)
    return path


TINY_TEXTS = ["hello world", "the answer is near", "on and on", "there it is", "in the end", "then another one"]


def make_tiny_corpus(root: Path) -> dict[str, Path]:
    """Inputs for recipes/data/tiny.yaml: a path<TAB>text list, a speech-QA jsonl and a text-only jsonl."""
    import json

    audio = root / "audio"
    lines = []
    for n, text in enumerate(TINY_TEXTS):
        write_tone(audio / f"utt{n}.wav", 0.8 + 0.3 * n, 150 + 40 * n)
        lines.append(f"audio/utt{n}.wav\t{text}")
    pairs = root / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sqa = root / "sqa.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "<|audio|>"}, {"role": "assistant", "content": f"Sure: {t}.<|audio|>"}],
         "audios": [f"audio/utt{n}.wav", f"audio/utt{(n + 1) % len(TINY_TEXTS)}.wav"]}
        for n, t in enumerate(TINY_TEXTS)
    ]
    sqa.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    text = root / "text.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Say {t}"}, {"role": "assistant", "content": t * (n + 1)}]}
            for n, t in enumerate(TINY_TEXTS)]
    text.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"tiny-pairs": pairs, "tiny-sqa": sqa, "tiny-text": text}


def make_tiny_prepared(root: Path, tokenizer, codebook_size: int = 16384) -> Path:
    """Prepare the tiny corpus under root/prepared/<name>, as recipes/data/tiny.yaml expects."""
    from vita_core.data.prepare import gather, prepare

    encoder = StandInEncoder(codebook_size)
    for name, path in make_tiny_corpus(root / "corpus").items():
        items = gather([(path, "auto")], ("asr", "tts"))
        prepare(items, root / "prepared" / name, tokenizer, encoder, "standin", root / "cache", shard_size=5)
    return root
