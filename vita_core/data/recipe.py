"""Data-mixture recipes: which prepared folders a stage trains on, in what proportion.

A recipe is YAML, shaped like the reference's `configs/sts_finetune_stage*.yaml`:

    seq_len: 8192            # packed sequence length (flag --seq-len overrides)
    ratio: [1, 10, 4, 10]    # text/audio interleave of assistant answers; null keeps one audio block
    seed: 42
    sources:
      librispeech:
        ratio: 1.0           # fraction of each folder to use; above 1 repeats samples
        cap: 100000          # optional: at most this many samples per folder
        paths: [prepared/librispeech-clean-100, prepared/librispeech-other-500]

As in the reference, ratio and cap apply to each folder of a source on its own
(`used = min(int(len * ratio), cap)`, taking a seeded permutation with wrap-around), and the
selections of all folders are concatenated and shuffled. Sources with ratio 0 are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from vita_core.errors import InputError
from vita_core.schedule import parse_ratio


@dataclass(frozen=True)
class Source:
    name: str
    ratio: float
    cap: int | None
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class Recipe:
    sources: tuple[Source, ...]
    seq_len: int = 8192
    ratio: tuple[int, ...] | None = (1, 10, 4, 10)
    seed: int = 42

    def folders(self) -> list[tuple[Source, Path]]:
        """(source, folder) of every folder that contributes samples, in recipe order."""
        return [(s, p) for s in self.sources if s.ratio > 0 and s.cap != 0 for p in s.paths]


def load_recipe(path: str | Path, root: str | Path | None = None) -> Recipe:
    """Parse and check a recipe; relative folder paths are taken from `root` (default: the current folder)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"recipe {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"recipe {path} is not valid YAML: {exc}") from None
    return parse_recipe(data, Path(root) if root else Path.cwd(), str(path))


def parse_recipe(data: Any, root: Path, where: str = "recipe") -> Recipe:
    if not isinstance(data, dict) or not isinstance(data.get("sources"), dict) or not data["sources"]:
        raise InputError(f"{where}: needs a 'sources' mapping of name -> {{ratio, cap, paths}}")
    unknown = set(data) - {"seq_len", "ratio", "seed", "sources"}
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)}; allowed: seq_len, ratio, seed, sources")
    sources = []
    for name, spec in data["sources"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("paths"), list) or not spec["paths"]:
            raise InputError(f"{where}: source {name!r} needs a 'paths' list of prepared folders")
        extra = set(spec) - {"ratio", "cap", "paths"}
        if extra:
            raise InputError(f"{where}: source {name!r} has unknown keys {sorted(extra)}; allowed: ratio, cap, paths")
        ratio, cap = spec.get("ratio", 1.0), spec.get("cap")
        if not isinstance(ratio, (int, float)) or ratio < 0:
            raise InputError(f"{where}: source {name!r} ratio must be a number >= 0, got {ratio!r}")
        if cap is not None and (not isinstance(cap, int) or cap < 0):
            raise InputError(f"{where}: source {name!r} cap must be a whole number >= 0, got {cap!r}")
        paths = tuple(p if p.is_absolute() else root / p for p in map(Path, spec["paths"]))
        sources.append(Source(str(name), float(ratio), cap, paths))
    ratio = data.get("ratio", [1, 10, 4, 10])
    seq_len, seed = data.get("seq_len", 8192), data.get("seed", 42)
    if not isinstance(seq_len, int) or seq_len < 16:
        raise InputError(f"{where}: seq_len must be a whole number >= 16, got {seq_len!r}")
    if not isinstance(seed, int):
        raise InputError(f"{where}: seed must be a whole number, got {seed!r}")
    return Recipe(tuple(sources), seq_len, tuple(parse_ratio(ratio)) if ratio is not None else None, seed)


def select(counts: Sequence[tuple[float, int | None, int]], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which samples to use: for folders given as (ratio, cap, size), return (folder, index) arrays in training order."""
    folders, indices = [], []
    for k, (ratio, cap, size) in enumerate(counts):
        used = int(size * ratio)
        if cap is not None:
            used = min(used, cap)
        if size == 0 or used == 0:
            continue
        perm = np.random.default_rng([seed, k]).permutation(size)
        indices.append(perm[np.arange(used) % size])
        folders.append(np.full(used, k, dtype=np.int64))
    if not indices:
        raise InputError("the recipe selects no samples: every source is empty or has ratio 0")
    folder, index = np.concatenate(folders), np.concatenate(indices)
    order = np.random.default_rng([seed, len(counts)]).permutation(len(index))
    return folder[order], index[order]
