"""Shared fixtures: tiny tokenizers with the released id layout, built once per session."""

from pathlib import Path

import pytest
import torch

# Tiny models gain nothing from threads, and OpenMP spin-waits badly on a busy 2-core machine.
torch.set_num_threads(1)

from vita_core.tiny.tokenizer import build_tokenizer
from vita_core.tokens import load_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="session")
def plus_tokenizer(tmp_path_factory):
    return load_tokenizer(build_tokenizer(tmp_path_factory.mktemp("plus_tokenizer"), plus=True))


@pytest.fixture(scope="session")
def small_tokenizer_dir(tmp_path_factory) -> Path:
    """The released layout rule on another codec: 300 text entries, then the specials, then 1000 codes."""
    return build_tokenizer(tmp_path_factory.mktemp("small_tokenizer"), num_codes=1000, text_vocab=300)


@pytest.fixture(scope="session")
def small_tokenizer(small_tokenizer_dir):
    return load_tokenizer(small_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tokenizer_dir) -> Path:
    """A random-init tiny VITA-Audio checkpoint (10 MCTP modules) saved in the upstream format."""
    import shutil

    import torch

    from vita_core.model.checkpoint import preset_config, random_model, save_model

    model = random_model(preset_config("tiny"), seed=0, dtype=torch.float64)
    folder = tmp_path_factory.mktemp("ckpt") / "vita-tiny"
    save_model(model, folder, max_shard_size="8MB")
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint_f32(tmp_path_factory, tokenizer_dir) -> Path:
    """The tiny checkpoint in float32 with a generation_config.json (Boost layout, greedy), as released."""
    import shutil

    import torch

    from vita_core.model.checkpoint import preset_config, random_model, save_model

    model = random_model(preset_config("tiny"), seed=0, dtype=torch.float32)
    folder = tmp_path_factory.mktemp("ckpt32") / "vita-tiny-f32"
    generation = {"do_sample": False, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
                  "mtp_inference_mode": [1, 10, 4, 10]}
    save_model(model, folder, extra_files={"generation_config.json": generation})
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture(scope="session")
def whisper_pt(tmp_path_factory) -> Path:
    """A tiny random-init openai-whisper checkpoint (.pt) for the eval scorers."""
    from vita_core.tiny.whisper import build_openai_whisper

    return build_openai_whisper(tmp_path_factory.mktemp("ow") / "tiny.pt")


@pytest.fixture
def clean_speech_env(monkeypatch, tmp_path):
    """No model/codec folders from the environment or a user config file."""
    for var in ("VITA_MODEL", "VITA_AUDIO_TOKENIZER", "VITA_AUDIO_DECODER", "VITA_SENSEVOICE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
def codec_dirs(clean_speech_env, monkeypatch, tmp_path):
    """Codec folders whose loading is replaced by the fakes in tests/speech_fakes.py."""
    import speech_fakes

    return speech_fakes.install(monkeypatch, tmp_path)


@pytest.fixture(scope="session")
def decoder_dir(tmp_path_factory) -> Path:
    """A tiny random-init glm-4-voice-decoder folder (config.yaml, flow.pt, hift.pt)."""
    from vita_core.tiny.glm4voice_decoder import build_tiny_glm4voice_decoder

    return build_tiny_glm4voice_decoder(tmp_path_factory.mktemp("decoder") / "glm-4-voice-decoder", seed=0)


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if its command loads a model: flag and input checks must come before the slow load."""
    import vita_core.speech
    from vita_core.model import checkpoint

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the model was loaded before the flags were checked")

    monkeypatch.setattr(vita_core.speech, "load_speech_model", refuse)
    monkeypatch.setattr(checkpoint, "load_model", refuse)
    yield calls
    assert not calls, "the model was loaded before the flags were checked"
class _Filling:
    """A file on a disk that fills up: a write past the bytes left raises OSError(ENOSPC), as the kernel does."""

    def __init__(self, file, disk) -> None:
        self._file, self._disk = file, disk

    def write(self, data):
        size = len(data.encode()) if isinstance(data, str) else memoryview(data).nbytes
        if size > self._disk.left:
            self._disk.left = 0
            raise OSError(28, "No space left on device")
        self._disk.left -= size
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


class FullDisk:
    """`folder` sits on a disk with `left` bytes free (0 at first): files opened there for writing fill it."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.left = folder, 0

    def owns(self, file, mode: str) -> bool:
        import os

        if not isinstance(file, (str, os.PathLike)) or not any(c in mode for c in "wax+"):
            return False
        return Path(os.path.abspath(file)).is_relative_to(self.folder)


@pytest.fixture
def full_disk(tmp_path, monkeypatch) -> FullDisk:
    """ENOSPC injected at the write layer (builtins.open / io.open) for files under one folder.

    A real full disk needs a mount the test machine may not allow; every vita writer opens its
    temp file with open(), so this reaches the same code path. Writers that bypass Python file
    objects (libsndfile by path, as before the fix) are not caught, so a test on them fails.
    """
    import builtins
    import io

    disk = FullDisk(tmp_path / "full")
    disk.folder.mkdir()
    real_open = builtins.open

    def filling_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return _Filling(handle, disk) if disk.owns(file, mode) else handle

    monkeypatch.setattr(builtins, "open", filling_open)
    monkeypatch.setattr(io, "open", filling_open)
    return disk
