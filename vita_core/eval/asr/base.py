"""What every ASR backend offers: load once from a local path, transcribe 16 kHz arrays in batches."""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

Progress = Callable[[int, int], None]
"""Called as progress(done, total) after each batch."""


class Transcriber(Protocol):
    name: str
    language: str

    def transcribe(self, audios: Sequence[np.ndarray], progress: Progress | None = None) -> list[str]:
        """One transcript per 16 kHz float32 mono array, in order."""
        ...


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
