"""Which codec a checkpoint's audio codes belong to: `codec.json` beside its config.json.

    {"family": "mini", "folder": "codec"}

`family` is a codec name of the registry (vita_core.codec.ENCODERS); `folder`, optional, is the
codec folder relative to the checkpoint (vita train copies it in as `codec/`). Without `folder`
the family's bundled codec is meant (mini: vita_core/assets/vita-mini/codec); glm4voice has none,
so its folders still come from flags, environment or config. A checkpoint without codec.json
(every released one) is glm4voice, as before. A tokenizer folder built for a codec carries the
same record, so `vita train --tokenizer` passes it on to each stage's output.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from vita_core.errors import CheckpointError

RECORD = "codec.json"
SUBFOLDER = "codec"
DEFAULT_FAMILY = "glm4voice"


@dataclass(frozen=True)
class CodecRecord:
    """A checkpoint's codec: its family and, when the family needs one, its resolved folder."""

    family: str
    folder: Path | None  # None: flags/env/config (glm4voice) or nothing given

    @property
    def recorded(self) -> bool:
        return self.family != DEFAULT_FAMILY or self.folder is not None


def bundled_folder(family: str) -> Path | None:
    """The codec folder that ships with vita for `family` (None for glm4voice)."""
    if family == "mini":
        from vita_core.codec.mini import BUNDLED_CODEC

        return BUNDLED_CODEC
    return None


def read_record(checkpoint: Path) -> CodecRecord:
    """The codec of a checkpoint (or tokenizer) folder; glm4voice when it has no codec.json."""
    from vita_core.codec import DECODERS

    path = Path(checkpoint) / RECORD
    if not path.is_file():
        return CodecRecord(DEFAULT_FAMILY, None)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); re-copy the checkpoint") from None
    family = data.get("family") if isinstance(data, dict) else None
    if family not in DECODERS:
        raise CheckpointError(f"{path}: 'family' must be one of {', '.join(DECODERS)}, not {family!r}")
    sub = data.get("folder")
    if sub is None:
        return CodecRecord(family, bundled_folder(family))
    folder = (path.parent / str(sub)).resolve()
    if not folder.is_dir():
        raise CheckpointError(f"{path} names codec folder {sub!r}, but {folder} is not a folder; "
                              "copy the whole checkpoint with its codec folder")
    return CodecRecord(family, folder)


def write_record(target: Path, family: str, codec_dir: Path | None = None) -> None:
    """Record `family` in `target`; a `codec_dir` other than the bundled one is copied in as codec/."""
    from vita_core.codec import DECODERS

    if family not in DECODERS:
        raise CheckpointError(f"unknown codec {family!r}: choose one of {', '.join(DECODERS)}")
    target = Path(target)
    record: dict[str, str] = {"family": family}
    bundled = bundled_folder(family)
    if codec_dir is not None and (bundled is None or Path(codec_dir).resolve() != bundled.resolve()):
        if not Path(codec_dir).is_dir():
            raise CheckpointError(f"codec folder {codec_dir} does not exist")
        dest = target / SUBFOLDER
        if Path(codec_dir).resolve() != dest.resolve():
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(codec_dir, dest)
        record["folder"] = SUBFOLDER
    (target / RECORD).write_text(json.dumps(record) + "\n", encoding="utf-8")


def copy_record(source: Path, target: Path) -> None:
    """Pass a folder's codec record (and codec folder) on to a new checkpoint folder; nothing when it has none."""
    record = read_record(source)
    if record.recorded:
        write_record(target, record.family, record.folder)
