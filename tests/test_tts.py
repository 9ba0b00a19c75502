"""vita tts: files, stdout streaming, stdin, batch, voice prompt, model resolution and error cases."""

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import speech_fakes
from vita_cli.main import app
from vita_core.errors import CheckpointError, InputError
from vita_core.speech import load_speech_model, resolve_folder
from vita_core.tts import synthesize, tts_prompt

runner = CliRunner()
TEXT = "Hello there."
N = "24"


@pytest.fixture
def base_args(tiny_checkpoint_f32, codec_dirs):
    enc, dec = codec_dirs
    return ["--model", str(tiny_checkpoint_f32), "--decoder-dir", str(dec), "--device", "cpu", "--max-new-tokens", N]


@pytest.fixture(scope="module")
def speech(tiny_checkpoint_f32):
    """The tiny model loaded once through the library, with the fake codec attached."""
    speech = load_speech_model(tiny_checkpoint_f32, device="cpu")
    speech.encoder, speech.decoder = speech_fakes.FakeEncoder(), speech_fakes.FakeDecoder()
    return speech


@pytest.fixture(scope="module")
def reference(speech):
    """The library's own synthesis of TEXT: codes and PCM, to compare the CLI outputs against."""
    chunks = []
    result = synthesize(speech, TEXT, chunks.append, max_new_tokens=int(N))
    return result, np.concatenate(chunks)


def run(args, **kw):
    return runner.invoke(app, ["tts", *args], **kw)


def test_file_length_matches_generated_codes(base_args, reference, tmp_path):
    result, pcm = reference
    assert result.num_codes > 0 and result.mode == "boost"
    out = tmp_path / "hello.wav"
    r = run([TEXT, "--out", str(out), "--json", *base_args])
    assert r.exit_code == 0, r.output
    meta = json.loads(r.stdout)
    assert meta["num_codes"] == result.num_codes
    assert meta["backbone_forwards"] == result.backbone_forwards and meta["mtp_forwards"] > 0
    assert meta["first_audio_ms"] > 0 and meta["real_time_factor"] > 0 and meta["tokens_per_s"] > 0
    info = sf.info(str(out))
    assert info.samplerate == 22050 and info.frames == result.num_codes * speech_fakes.SAMPLES_PER_CODE
    wav, _ = sf.read(str(out), dtype="float32")
    expected = speech_fakes.FakeDecoder().decode(result.codes)[0]
    np.testing.assert_allclose(wav, expected, atol=1 / 32767 + 1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hello")]  # no temp left behind


def test_stdin_to_stdout_streams_wav_and_pcm(base_args, reference):
    _, pcm = reference
    expected = (np.clip(pcm, -1, 1) * 32767).round().astype("<i2").tobytes()
    r = run(["-", "--out", "-", *base_args], input=TEXT + "\n")
    assert r.exit_code == 0, r.stderr
    data = r.stdout_bytes
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt " and data[36:40] == b"data"
    assert int.from_bytes(data[24:28], "little") == 22050
    assert data[44:] == expected
    r = run(["-", "--out", "-", "--format", "pcm", *base_args], input=TEXT)
    assert r.exit_code == 0 and r.stdout_bytes == expected


def test_batch_to_flac_folder(base_args, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("First line.\n\nSecond line.\n")
    r = run(["--batch", str(lines), "--out-dir", str(tmp_path / "voices"), "--format", "flac", "--json", *base_args])
    assert r.exit_code == 0, r.output
    meta = json.loads(r.stdout)
    assert [m["file"] for m in meta] == [str(tmp_path / "voices" / "0001.flac"), str(tmp_path / "voices" / "0002.flac")]
    for m in meta:
        assert sf.info(m["file"]).frames == m["num_codes"] * speech_fakes.SAMPLES_PER_CODE


def test_voice_prompt_goes_into_a_system_turn(speech, codec_dirs, base_args, tmp_path):
    ids = tts_prompt(speech, TEXT, voice_codes=[5, 7])
    lay = speech.tokens
    assert ids[ids.index(lay.begin_of_audio) : ids.index(lay.end_of_audio) + 1] == [
        lay.begin_of_audio, lay.audio_offset + 5, lay.audio_offset + 7, lay.end_of_audio]
    assert speech.tokenizer.decode(ids[: ids.index(lay.begin_of_audio)]) == "<|im_start|>system\nYour Voice: "
    wav = tmp_path / "voice.wav"
    sf.write(str(wav), 0.1 * np.sin(np.arange(16000) / 10.0), 16000)
    out = tmp_path / "cloned.wav"
    r = run([TEXT, "--out", str(out), "--prompt-wav", str(wav), "--tokenizer-dir", str(codec_dirs[0]), *base_args])
    assert r.exit_code == 0, r.output
    assert sf.info(str(out)).frames > 0


def test_folders_come_from_env_then_config_file(monkeypatch, tmp_path, codec_dirs, tiny_checkpoint_f32):
    with pytest.raises(InputError, match="no model folder given: pass --model DIR, set VITA_MODEL"):
        resolve_folder("model", None)
    cfg = tmp_path / "config" / "vita"
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text(f'model = "{tiny_checkpoint_f32}"\naudio_decoder = "{tmp_path / "nowhere"}"\n')
    assert resolve_folder("model", None) == tiny_checkpoint_f32
    with pytest.raises(CheckpointError, match="audio_decoder in .*config.toml points at .*nowhere, which is not a"):
        resolve_folder("audio_decoder", None)
    monkeypatch.setenv("VITA_MODEL", str(codec_dirs[0]))
    assert resolve_folder("model", None) == codec_dirs[0]
    assert resolve_folder("model", tiny_checkpoint_f32) == tiny_checkpoint_f32


@pytest.mark.parametrize("extra, message", [
    (["   ", "--out", "x.wav"], "the text to synthesize is empty"),
    ([TEXT], "say where the audio goes"),
    ([TEXT, "--out", "x.mp3"], "use a .wav or .flac file name"),
    ([TEXT, "--out", "-", "--format", "ogg"], "choose wav or pcm for stdout"),
    ([TEXT, "--out", "x.wav", "--mode", "warp"], "schedule 'warp' must be integers"),
    ([TEXT, "--out", "x.wav", "--dtype", "int8"], "--dtype 'int8': choose auto"),
    ([TEXT, "--out", "x.wav", "--prompt-wav", "missing.wav"],
     "no audio tokenizer folder given: pass --tokenizer-dir DIR"),
    ([TEXT, "--out", "x.wav", "--temperature", "-1"], "temperature -1.0 must be >= 0"),
    (["--batch", "nolines.txt", "--out-dir", "d"], "batch file nolines.txt does not exist"),
])
def test_user_errors_exit_with_one_line(base_args, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    r = run([*extra, *base_args])
    assert r.exit_code == 1
    assert message in r.stderr.strip().splitlines()[-1]
    assert not list(tmp_path.glob("*.wav"))


def test_missing_or_wrong_folders(codec_dirs, tmp_path, tokenizer_dir):
    r = run([TEXT, "--out", str(tmp_path / "a.wav"), "--device", "cpu"])
    assert r.exit_code == 1 and "no model folder given: pass --model DIR, set VITA_MODEL" in r.stderr
    r = run([TEXT, "--out", str(tmp_path / "a.wav"), "--model", str(tmp_path / "nope"), "--decoder-dir",
             str(codec_dirs[1])])
    assert r.exit_code == 1 and "--model points at" in r.stderr and "VITA-Audio checkpoint folder" in r.stderr
    r = run([TEXT, "--out", str(tmp_path / "a.wav"), "--model", str(tokenizer_dir), "--decoder-dir", str(codec_dirs[1]),
             "--device", "cpu"])
    assert r.exit_code == 1 and "has no config.json" in r.stderr
    assert not (tmp_path / "a.wav").exists()
