"""vita asr: inputs from files/folders/globs, every output format, prompt layout, error cases."""

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import speech_fakes
from vita_cli.main import app
from vita_core.asr import asr_prompt, collect_inputs, render, transcribe, Transcript
from vita_core.errors import InputError
from vita_core.speech import load_speech_model, read_audio
from vita_core.tokens import AudioCodes

runner = CliRunner()


@pytest.fixture(scope="module")
def speech(tiny_checkpoint_f32):
    speech = load_speech_model(tiny_checkpoint_f32, device="cpu")
    speech.encoder = speech_fakes.FakeEncoder()
    return speech


@pytest.fixture
def recordings(tmp_path):
    folder = tmp_path / "rec"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(str(folder / "one.wav"), 0.2 * rng.standard_normal(16000).astype(np.float32), 16000)
    stereo = 0.1 * rng.standard_normal((int(44100 * 1.5), 2)).astype(np.float32)
    sf.write(str(folder / "sub" / "two.flac"), stereo, 44100)
    (folder / "notes.txt").write_text("not audio")
    return folder


def test_prompt_is_the_reference_asr_task(speech):
    ids = asr_prompt(speech, AudioCodes([3, 4]))
    lay = speech.tokens
    assert ids[ids.index(lay.begin_of_audio) : ids.index(lay.end_of_audio) + 1] == [
        lay.begin_of_audio, lay.audio_offset + 3, lay.audio_offset + 4, lay.end_of_audio]
    assert speech.tokenizer.decode(ids[: ids.index(lay.begin_of_audio)]) == (
        "<|im_start|>user\nConvert the speech to text.\n")
    assert speech.tokenizer.decode(ids[ids.index(lay.end_of_audio) + 1 :]) == "<|im_end|>\n<|im_start|>assistant\n"


def test_every_format_for_every_file(speech, codec_dirs, recordings, tiny_checkpoint_f32, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["asr", str(recordings), "--output-dir", str(out), "--model", str(tiny_checkpoint_f32),
                            "--tokenizer-dir", str(codec_dirs[0]), "--device", "cpu", "--max-new-tokens", "12"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}.{fmt}" for stem in ("one", "two") for fmt in ("txt", "json", "srt", "vtt", "tsv"))
    for stem, path, seconds in (("one", recordings / "one.wav", 1.0), ("two", recordings / "sub" / "two.flac", 1.5)):
        expected = transcribe(speech, read_audio(path, 16000), 16000, max_new_tokens=12)
        meta = json.loads((out / f"{stem}.json").read_text())
        assert meta["text"] == expected.text == (out / f"{stem}.txt").read_text().rstrip("\n")
        assert meta["num_codes"] == expected.num_codes == int(seconds * 12.5)
        assert meta["duration"] == pytest.approx(seconds, abs=1e-3)
        end = "00:00:01,000" if stem == "one" else "00:00:01,500"
        assert (out / f"{stem}.srt").read_text().splitlines()[:2] == ["1", f"00:00:00,000 --> {end}"]
        assert (out / f"{stem}.vtt").read_text().startswith(f"WEBVTT\n\n00:00:00.000 --> {end.replace(',', '.')}\n")
        assert (out / f"{stem}.tsv").read_text().splitlines()[1].split("\t")[:2] == ["0", str(int(seconds * 1000))]


def test_stdin_recording(speech, codec_dirs, recordings, tiny_checkpoint_f32, tmp_path):
    out = tmp_path / "out"
    data = (recordings / "one.wav").read_bytes()
    r = runner.invoke(app, ["asr", "-", "-f", "json", "-o", str(out), "--model", str(tiny_checkpoint_f32),
                            "--tokenizer-dir", str(codec_dirs[0]), "--device", "cpu", "--max-new-tokens", "12"],
                      input=data)
    assert r.exit_code == 0, r.output
    expected = transcribe(speech, read_audio(recordings / "one.wav", 16000), 16000, max_new_tokens=12)
    assert json.loads((out / "stdin.json").read_text())["text"] == expected.text


def test_render_formats_exactly():
    t = Transcript(audio="a.wav", text="hello world", duration=3723.5, num_codes=1, language="auto", tokens=3,
                   seconds=0.1)
    assert render(t, "srt") == "1\n00:00:00,000 --> 01:02:03,500\nhello world\n\n"
    assert render(t, "tsv") == "start\tend\ttext\n0\t3723500\thello world\n"
    assert json.loads(render(t, "json"))["segments"] == [{"id": 0, "start": 0.0, "end": 3723.5, "text": "hello world"}]


def test_inputs_from_globs_folders_and_files(recordings):
    files = collect_inputs([str(recordings / "*.wav"), str(recordings), str(recordings / "one.wav")])
    assert files == [recordings / "one.wav", recordings / "sub" / "two.flac"]
    with pytest.raises(InputError, match="matches no files"):
        collect_inputs([str(recordings / "*.mp3")])


def test_a_bad_file_fails_the_run_but_not_the_others(codec_dirs, recordings, tiny_checkpoint_f32, tmp_path):
    (recordings / "broken.wav").write_bytes(b"RIFF....not a wave file")
    out = tmp_path / "out"
    r = runner.invoke(app, ["asr", str(recordings), "-f", "txt", "-o", str(out), "--model", str(tiny_checkpoint_f32),
                            "--tokenizer-dir", str(codec_dirs[0]), "--device", "cpu", "--max-new-tokens", "4"])
    assert r.exit_code == 1
    assert "broken.wav as audio" in r.stderr and "1 of 3 files failed" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["one.txt", "two.txt"]


@pytest.mark.parametrize("args, message", [
    (["missing.wav"], "audio file missing.wav does not exist"),
    (["rec/one.wav", "-f", "docx"], "--output-format 'docx': choose txt, json, srt, vtt, tsv or all"),
    (["rec/sub/two.flac", "copy/two.wav"], "several inputs are named two"),
    (["rec/one.wav", "--tokenizer-dir", "nowhere"], "--tokenizer-dir points at nowhere, which is not a folder"),
    (["rec/one.wav"], "no audio tokenizer folder given: pass --tokenizer-dir DIR, set VITA_AUDIO_TOKENIZER"),
    (["rec/one.wav", "-"], "- (stdin) must be the only input"),
])
def test_user_errors(codec_dirs, recordings, tiny_checkpoint_f32, monkeypatch, args, message):
    monkeypatch.chdir(recordings.parent)
    (recordings.parent / "copy").mkdir()
    sf.write("copy/two.wav", np.zeros(1600, dtype=np.float32), 16000)
    r = runner.invoke(app, ["asr", *args, "--model", str(tiny_checkpoint_f32), "--device", "cpu"])
    assert r.exit_code == 1
    assert message in r.stderr.strip().splitlines()[-1]


def test_real_glm4voice_encoder_end_to_end(clean_speech_env, recordings, tiny_checkpoint_f32, tmp_path):
    """No fakes: the tiny GLM-4-Voice tokenizer folder goes through load_encoder and the real encoder."""
    from vita_core.tiny.glm4voice_tokenizer import build_tiny_glm4voice_tokenizer

    enc = build_tiny_glm4voice_tokenizer(tmp_path / "glm-4-voice-tokenizer")
    out = tmp_path / "out"
    r = runner.invoke(app, ["asr", str(recordings / "one.wav"), "-f", "json", "-o", str(out), "--model",
                            str(tiny_checkpoint_f32), "--tokenizer-dir", str(enc), "--device", "cpu",
                            "--max-new-tokens", "8"])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "one.json").read_text())
    assert meta["num_codes"] == 13  # 1.0 s at 16 kHz: ceil(16000 / 1280) codes


@pytest.mark.parametrize("args, message", [
    (["rec/one.wav", "--max-new-tokens", "0"], "--max-new-tokens 0 must be at least 1 (leave it out for 10 tokens"),
    (["rec/one.wav", "--max-new-tokens", "-3"], "--max-new-tokens -3 must be at least 1"),
    (["rec/one.wav", "-l", "en"], "--language en: GLM-4-Voice speech codes carry no language hint"),
    (["rec/one.wav", "--dtype", "int8"], "--dtype 'int8': choose auto"),
])
def test_flag_errors_come_before_loading(codec_dirs, recordings, tiny_checkpoint_f32, monkeypatch, no_model_load,
                                         args, message):
    monkeypatch.chdir(recordings.parent)
    r = runner.invoke(app, ["asr", *args, "--model", str(tiny_checkpoint_f32), "--device", "cpu"])
    assert r.exit_code == 1
    assert message in r.stderr.strip().splitlines()[-1]
def test_full_disk_is_one_line_and_leaves_no_temp_file(codec_dirs, recordings, tiny_checkpoint_f32, full_disk):
    enc, _ = codec_dirs
    r = runner.invoke(app, ["asr", str(recordings / "one.wav"), "--model", str(tiny_checkpoint_f32), "--tokenizer-dir",
                            str(enc), "--device", "cpu", "--output-dir", str(full_disk.folder), "-f", "json",
                            "--max-new-tokens", "4"])
    assert r.exit_code == 1
    out = full_disk.folder / "one.json"
    assert r.stderr.splitlines()[-1] == f"error: cannot write {out}: no space left on device; free some space or write elsewhere"
    assert list(full_disk.folder.iterdir()) == []
