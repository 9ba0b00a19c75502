"""vita tts: file, stdout and stdin through the real (tiny) GLM-4-Voice decoder folder; batch, voice prompt,
model resolution and error cases with the instant fake codec of tests/speech_fakes.py."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import speech_fakes
from vita_cli.main import app
from vita_core.codec.glm4voice.decoder import load_glm4voice_decoder
from vita_core.errors import CheckpointError, InputError
from vita_core.model import checkpoint
from vita_core.speech import load_speech_model, resolve_folder
from vita_core.tokens import AudioCodes
from vita_core.tts import tts_prompt

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


def run(args, **kw):
    return runner.invoke(app, ["tts", *args], **kw)


@pytest.fixture(scope="module")
def real_args(tiny_checkpoint_f32, decoder_dir):
    """The tiny checkpoint with the tiny GLM-4-Voice decoder folder: no fakes anywhere."""
    return ["--model", str(tiny_checkpoint_f32), "--decoder-dir", str(decoder_dir), "--device", "cpu",
            "--max-new-tokens", N, "--seed", "3"]


@pytest.fixture(scope="module")
def real_file(real_args, tmp_path_factory):
    """One `vita tts TEXT --out x.wav --json` run: (its JSON, the wav path, the folder it was written in)."""
    folder = tmp_path_factory.mktemp("tts_real")
    out = folder / "hello.wav"
    r = run([TEXT, "--out", str(out), "--json", *real_args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), out, folder


def test_real_decoder_file_length_matches_generated_codes(real_file, decoder_dir):
    meta, out, folder = real_file
    decoder = load_glm4voice_decoder(decoder_dir)
    assert meta["num_codes"] > 0 and meta["mode"] == "boost" and meta["file"] == str(out)
    info = sf.info(str(out))
    assert info.samplerate == 22050 and info.channels == 1 and info.subtype == "PCM_16"
    assert info.frames == meta["samples"] == decoder.samples_for(meta["num_codes"])
    assert meta["sample_rate"] == 22050 and meta["audio_seconds"] == pytest.approx(info.frames / 22050)
    assert meta["first_audio_ms"] > 0 and meta["real_time_factor"] > 0 and meta["tokens_per_s"] > 0
    assert 0 < meta["backbone_forwards"] < meta["tokens"] and meta["mtp_forwards"] > 0  # Boost: MCTP did the rest
    wav, _ = sf.read(str(out), dtype="float32")
    assert np.abs(wav).max() > 0.001  # the vocoder's output, not silence
    assert [p.name for p in folder.iterdir()] == ["hello.wav"]  # no temp file left behind


def test_real_decoder_streams_stdin_to_stdout_as_the_file(real_file, real_args):
    _, out, _ = real_file
    pcm = sf.read(str(out), dtype="int16")[0].astype("<i2").tobytes()
    r = run(["-", "--out", "-", "--format", "pcm", *real_args], input=TEXT + "\n")
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes == pcm
    r = run([TEXT, "--out", "-", *real_args])
    assert r.exit_code == 0, r.stderr
    data = r.stdout_bytes
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt " and data[36:40] == b"data"
    assert int.from_bytes(data[24:28], "little") == 22050 and int.from_bytes(data[34:36], "little") == 16
    assert data[44:] == pcm


@pytest.mark.parametrize("damage, fragments", [
    ("missing flow", ["lacks flow.pt: a GLM-4-Voice decoder folder holds config.yaml, flow.pt and hift.pt"]),
    ("corrupt hift", ["cannot read ", "hift.pt: ", "; re-download the decoder folder"]),
])
def test_broken_decoder_folder_exits_with_one_line(real_args, decoder_dir, tmp_path, monkeypatch, damage, fragments):
    broken = tmp_path / "decoder"
    shutil.copytree(decoder_dir, broken)
    if damage == "missing flow":
        (broken / "flow.pt").unlink()
    else:
        (broken / "hift.pt").write_bytes((decoder_dir / "hift.pt").read_bytes()[:4096])
    monkeypatch.chdir(tmp_path)
    loaded = []
    monkeypatch.setattr(checkpoint, "load_model", lambda *a, **k: loaded.append(a))
    args = [*real_args]
    args[args.index("--decoder-dir") + 1] = str(broken)
    r = run([TEXT, "--out", "x.wav", *args])
    assert r.exit_code == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(broken) in last
    assert all(f in last for f in fragments), last
    assert loaded == []  # the broken folder failed before the slow model load
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoder"]  # no x.wav, no temp file


def test_batch_to_flac_folder_numbered_by_line(base_args, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("First line.\n\nSecond line.\n")
    r = run(["--batch", str(lines), "--out-dir", str(tmp_path / "voices"), "--format", "flac", "--json", *base_args])
    assert r.exit_code == 0, r.output
    meta = json.loads(r.stdout)
    # named by line number: the blank line 2 is skipped, not renumbered away
    assert [m["file"] for m in meta] == [str(tmp_path / "voices" / "0001.flac"), str(tmp_path / "voices" / "0003.flac")]
    assert [m["line"] for m in meta] == [1, 3]
    for m in meta:
        assert sf.info(m["file"]).frames == m["num_codes"] * speech_fakes.SAMPLES_PER_CODE


def test_voice_prompt_goes_into_a_system_turn(speech, codec_dirs, base_args, tmp_path):
    ids = tts_prompt(speech, TEXT, voice=AudioCodes([5, 7]))
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
    ([TEXT, "--out", "x.wav", "--prompt-wav", "voice.wav"],
     "no audio tokenizer folder given: pass --tokenizer-dir DIR"),
    ([TEXT, "--out", "x.wav", "--temperature", "-1"], "temperature -1.0 must be >= 0"),
    (["--batch", "nolines.txt", "--out-dir", "d"], "batch file nolines.txt does not exist"),
])
def test_user_errors_exit_with_one_line(base_args, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    sf.write("voice.wav", 0.1 * np.sin(np.arange(16000) / 10.0), 16000)
    r = run([*extra, *base_args])
    assert r.exit_code == 1
    assert message in r.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == ["voice.wav"]


@pytest.mark.parametrize("extra, message", [
    ([TEXT, "--out", "x.wav", "--mode", "warp"], "schedule 'warp' must be integers"),
    ([TEXT, "--out", "x.wav", "--temperature", "-1"], "temperature -1.0 must be >= 0"),
    ([TEXT, "--out", "x.wav", "--top-p", "0"], "top_p 0.0 must be in (0, 1]"),
    ([TEXT, "--out", "x.wav", "--top-k", "-2"], "top_k -2 must be >= 0"),
    ([TEXT, "--out", "x.wav", "--repetition-penalty", "0"], "repetition_penalty 0.0 must be > 0"),
    ([TEXT, "--out", "x.wav", "--max-new-tokens", "0"], "--max-new-tokens 0 must be at least 1"),
    ([TEXT, "--out", "x.wav", "--prompt-wav", "missing.wav"], "--prompt-wav missing.wav does not exist"),
    ([TEXT, "--out", "x.wav", "--dtype", "int8"], "--dtype 'int8': choose auto"),
    ([TEXT, "--out", "x.wav", "--format", "pcm"],
     "--format pcm: --out x.wav is a file, whose format comes from its name (.wav or .flac); "
     "raw pcm streams to --out -"),
    ([TEXT, "--out", "x.flac", "--format", "wav"], "--format wav: --out x.flac is a file"),
    (["--batch", "lines.txt", "--out-dir", "d", "--format", "pcm"], "--format 'pcm': --batch writes wav or flac"),
])
def test_flag_errors_come_before_loading(base_args, tmp_path, monkeypatch, no_model_load, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lines.txt").write_text("One.\n")
    r = run([*base_args, *extra])
    assert r.exit_code == 1
    assert message in r.stderr.strip().splitlines()[-1]
    assert not list(tmp_path.glob("*.wav")) and not list(tmp_path.glob("*.flac"))


def test_missing_or_wrong_folders(codec_dirs, tmp_path, tokenizer_dir, monkeypatch):
    import vita_core.bundled as bundled

    monkeypatch.setattr(bundled, "BUNDLED_DIR", tmp_path / "absent")  # a checkout without vita-mini
    r = run([TEXT, "--out", str(tmp_path / "a.wav"), "--device", "cpu"])
    assert r.exit_code == 1 and "no model folder given: pass --model DIR, set VITA_MODEL" in r.stderr
    r = run([TEXT, "--out", str(tmp_path / "a.wav"), "--model", str(tmp_path / "nope"), "--decoder-dir",
             str(codec_dirs[1])])
    assert r.exit_code == 1 and "--model points at" in r.stderr and "VITA-Audio checkpoint folder" in r.stderr
    r = run([TEXT, "--out", str(tmp_path / "a.wav"), "--model", str(tokenizer_dir), "--decoder-dir", str(codec_dirs[1]),
             "--device", "cpu"])
    assert r.exit_code == 1 and "has no config.json" in r.stderr
    assert not (tmp_path / "a.wav").exists()


LONG = ("The first sentence is short. Here is a second one, a little longer than the first! Is this the third? "
        "Yes.\n\nA new paragraph starts here and goes on for a while, with commas, clauses and more words than "
        "any one chunk may hold, so that it has to be cut between its clauses; the end.")


def test_long_text_is_the_per_chunk_runs_in_order(speech):
    """Greedy: one synthesis of a long text equals its chunks synthesized one by one, codes and PCM alike."""
    from vita_core.tts import chunk_text, synthesize

    def count(piece):
        return len(speech.tokenizer.encode(piece, add_special_tokens=False))

    chunks = chunk_text(LONG, 40, count)
    assert len(chunks) >= 4 and all(count(c) <= 40 for c in chunks)
    assert " ".join(chunks) == " ".join(LONG.split())  # nothing lost or reordered
    pcm, seen = [], []
    whole = synthesize(speech, LONG, pcm.append, max_new_tokens=12, chunk_tokens=40, on_progress=seen.append)
    parts = []
    for chunk in chunks:
        part_pcm = []
        parts.append((synthesize(speech, chunk, part_pcm.append, max_new_tokens=12, chunk_tokens=40), part_pcm))
    assert whole.chunks == len(chunks) and all(p.chunks == 1 for p, _ in parts)
    assert whole.codes == [c for p, _ in parts for c in p.codes] and whole.num_codes > 0
    assert np.array_equal(np.concatenate(pcm), np.concatenate([x for _, pp in parts for x in pp]))
    assert whole.samples == sum(p.samples for p, _ in parts) and whole.tokens == sum(p.tokens for p, _ in parts)
    assert whole.backbone_forwards == sum(p.backbone_forwards for p, _ in parts)
    done = [p for p in seen if p.chunk_done]
    assert [p.chunk for p in done] == list(range(1, len(chunks) + 1)) and all(p.chunks == len(chunks) for p in seen)
    assert done[-1].audio_seconds == pytest.approx(whole.audio_seconds)
    assert [p.tokens for p in seen if p.chunk == 1 and not p.chunk_done] == list(range(1, parts[0][0].tokens + 1))


def test_long_text_keeps_every_request_small(speech, monkeypatch):
    """The engine allocates per prompt + budget: a long text must never become one huge prompt."""
    from vita_core.generate import Engine
    from vita_core.tts import synthesize

    sizes = []
    new_state = Engine._new_state

    def spy(self, prompt, max_new, *args):
        sizes.append(len(prompt) + max_new)
        return new_state(self, prompt, max_new, *args)

    monkeypatch.setattr(Engine, "_new_state", spy)
    text = " ".join(f"Sentence number {n} says a few words." for n in range(120))  # ~4,500 characters
    result = synthesize(speech, text, lambda pcm: None, max_new_tokens=2)
    assert result.chunks == len(sizes) > 10
    assert max(sizes) < 120  # 64 text tokens + the task prompt + 2; one prompt of all the text was ~4,500


def test_prompt_longer_than_the_context_is_one_line(speech, monkeypatch):
    from vita_core.generate import generate_ids

    monkeypatch.setattr(speech.model.config, "max_position_embeddings", 40)
    with pytest.raises(InputError, match=r"^the prompt is 50 tokens, more than the model's context of 40 positions "
                                         r"\(max_position_embeddings\); shorten the text, audio or history$"):
        generate_ids(speech.engine, list(range(50)), max_new_tokens=4)
    done = generate_ids(speech.engine, list(range(30)), max_new_tokens=10**9, stop_ids=())  # no 10**9 allocation
    assert len(done.tokens) == 10 and done.stop_reason == "length"


def test_long_text_file_becomes_one_wav(base_args, tmp_path):
    text = tmp_path / "book.txt"
    text.write_text(" ".join(f"This is sentence {n} of a long text file." for n in range(24)), encoding="utf-8")
    out = tmp_path / "book.wav"
    r = run(["--text-file", str(text), "--out", str(out), "--json", *base_args])
    assert r.exit_code == 0, r.output
    meta = json.loads(r.stdout)
    assert meta["chunks"] >= 3
    assert sf.info(str(out)).frames == meta["samples"] == meta["num_codes"] * speech_fakes.SAMPLES_PER_CODE
    r = run(["--text-file", str(text), "--out", str(out), *base_args])  # not a terminal: a line per chunk
    assert [line for line in r.stderr.splitlines() if line.startswith("chunk ")][-1].startswith(
        f"chunk {meta['chunks']}/{meta['chunks']}: ")
@pytest.mark.parametrize("left", [0, 3000])
def test_full_disk_is_one_line_and_leaves_no_temp_file(base_args, full_disk, left):
    full_disk.left = left
    out = full_disk.folder / "x.wav"
    r = run([TEXT, "--out", str(out), *base_args])
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1] == f"error: cannot write {out}: no space left on device; free some space or write elsewhere"
    assert list(full_disk.folder.iterdir()) == []


def test_sigterm_mid_synthesis_removes_the_temp_file(real_args, tmp_path):
    """A real process: the synthesis writes a chunk, then the process gets SIGTERM (as from `kill`)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import os, signal, sys, time\n"
        "import numpy as np\n"
        "import vita_core.tts\n"
        "def synthesize(speech, text, on_audio, **kwargs):\n"
        "    on_audio(np.zeros(2205, dtype=np.float32))\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(60)\n"
        "vita_core.tts.synthesize = synthesize\n"
        "from vita_cli.main import app\n"
        "app(sys.argv[1:], prog_name='vita')\n"
    )
    out = tmp_path / "out" / "x.wav"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-c", script, "tts", TEXT, "--out", str(out), *real_args], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 143, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "terminated"
    assert list(out.parent.iterdir()) == []
