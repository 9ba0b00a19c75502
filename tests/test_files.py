"""Every writer: the mode open() would give, a replaced file's mode kept, a full disk as one error, no temp left."""

import contextlib
import os
import stat

import numpy as np
import pytest
import soundfile as sf

from vita_core import files
from vita_core.asr import Transcript, write_outputs
from vita_core.audio import write_audio
from vita_core.chat.loop import _save_wav
from vita_core.errors import DiskFullError
from vita_core.eval.wavs import write_text, write_wav
from vita_core.model.checkpoint import preset_config, random_model, save_model
from vita_core.sinks import FileSink, StreamSink

TONE = (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32)


def _sink(path):
    sink = FileSink(path, 16000)
    sink.write(TONE)
    sink.close()


def _asr(path):
    t = Transcript(audio="a.wav", text="hello " * 60, duration=1.0, num_codes=12, language="auto", tokens=3, seconds=0.1)
    write_outputs(t, path.stem, path.parent, ["txt"])


WRITERS = {
    "write_audio": (lambda p: write_audio(p, TONE, 16000), "a.flac"),
    "tts FileSink": (_sink, "a.wav"),
    "asr outputs": (_asr, "a.txt"),
    "eval write_wav": (lambda p: write_wav(p, TONE, 16000), "a.wav"),
    "eval write_text": (lambda p: write_text(p, "x" * 1000), "a.tsv"),
    "chat turn wav": (lambda p: _save_wav(p, TONE, 16000), "turn001_user.wav"),
    "prepared json": (lambda p: files.write_json(p, {"a": list(range(100))}), "a.json"),
    "npy": (lambda p: files.write_npy(p, np.arange(100)), "a.npy"),
}


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("name", WRITERS)
def test_new_files_get_the_mode_open_gives_and_replaced_files_keep_theirs(name, tmp_path, umask):
    write, filename = WRITERS[name]
    path = tmp_path / filename
    for mask, expected in ((0o022, 0o644), (0o027, 0o640), (0o077, 0o600)):
        umask(mask)
        path.unlink(missing_ok=True)
        write(path)
        assert _mode(path) == expected, (oct(mask), oct(_mode(path)))
    umask(0o077)
    path.chmod(0o664)
    write(path)
    assert _mode(path) == 0o664
    assert [p.name for p in tmp_path.iterdir()] == [filename]


def test_saved_model_folder_gets_the_mode_mkdir_gives(tmp_path, umask):
    model = random_model(preset_config("tiny"), seed=0)
    umask(0o022)
    save_model(model, tmp_path / "m")
    assert _mode(tmp_path / "m") == 0o755
    assert {_mode(p) for p in (tmp_path / "m").iterdir()} == {0o644}
    (tmp_path / "m").chmod(0o750)
    save_model(model, tmp_path / "m")
    assert _mode(tmp_path / "m") == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("name", WRITERS)
@pytest.mark.parametrize("left", [0, 200])
def test_a_full_disk_is_one_error_naming_the_file_and_leaves_nothing(name, left, full_disk):
    write, filename = WRITERS[name]
    path = full_disk.folder / filename
    full_disk.left = left
    with pytest.raises(DiskFullError) as err:
        write(path)
    assert str(err.value) == f"cannot write {path}: no space left on device; free some space or write elsewhere"
    assert list(full_disk.folder.iterdir()) == []


def test_a_full_disk_keeps_the_file_being_replaced(full_disk):
    path = full_disk.folder / "a.wav"
    full_disk.left = 10**6
    write_audio(path, TONE, 16000)
    before = path.read_bytes()
    full_disk.left = 100
    with pytest.raises(DiskFullError):
        write_audio(path, np.zeros(48000, dtype=np.float32), 16000)
    assert path.read_bytes() == before and sf.info(str(path)).frames == len(TONE)
    assert [p.name for p in full_disk.folder.iterdir()] == ["a.wav"]


@pytest.mark.parametrize("buffering", [0, -1])
def test_stdout_on_a_full_device_is_one_error(buffering):
    full = open("/dev/full", "wb", buffering=buffering)
    with pytest.raises(DiskFullError, match="cannot write stdout: no space left on device"):
        StreamSink(full, 16000).write(TONE)
    with contextlib.suppress(OSError):  # a buffered file still holds the header it could not write
        full.close()


def test_stale_leftovers_are_removed_by_prefix(tmp_path):
    (tmp_path / ".checkpoint-0000002.partial").mkdir()
    (tmp_path / ".x.tmp").write_text("")
    (tmp_path / "checkpoint-0000001").mkdir()
    gone = files.remove_stale(tmp_path, (".checkpoint-",))
    assert [p.name for p in gone] == [".checkpoint-0000002.partial"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.tmp", "checkpoint-0000001"]
