"""A tiny corpus for `recipes/data/tiny.yaml`: tone "recordings", a pair list, speech-QA and text jsonl.

README's walkthrough and the data tests prepare these three inputs into the recipe's three sources,
so the whole prepare -> pack -> train chain runs offline in seconds. The audio is seeded tones, not
speech: enough for the encoder, the cache and the packing to do real work.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

TINY_TEXTS = ["hello world", "the answer is near", "on and on", "there it is", "in the end", "then another one"]


def write_tone(path: str | Path, seconds: float, freq: float, sample_rate: int = 16000) -> Path:
    """A short tone with a little seeded noise; `freq` makes files differ."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    noise = np.random.default_rng(int(freq)).normal(0, 0.01, len(t))
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32), sample_rate)
    return path


def build_tiny_corpus(folder: str | Path) -> dict[str, Path]:
    """Write `pairs.txt` (path<TAB>text), `sqa.jsonl` and `text.jsonl` (+ `audio/`) under `folder`.

    Returns the recipe's source name -> input file: tiny-pairs, tiny-sqa, tiny-text.
    """
    root = Path(folder)
    lines = []
    for n, text in enumerate(TINY_TEXTS):
        write_tone(root / "audio" / f"utt{n}.wav", 0.8 + 0.3 * n, 150 + 40 * n)
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
