"""vita chat: a scripted conversation from a WAV file, barge-in, history, errors, and real sounddevice I/O."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import speech_fakes
from vita_cli.main import app
from vita_core.chat.devices import FileOutput
from vita_core.chat.loop import STAGES, ChatSession, Conversation
from vita_core.chat.vad import SpeechStart, Utterance
from vita_core.speech import load_speech_model

runner = CliRunner()
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def speech(tiny_checkpoint_f32):
    speech = load_speech_model(tiny_checkpoint_f32, device="cpu")
    speech.encoder, speech.decoder = speech_fakes.FakeEncoder(), speech_fakes.FakeDecoder()
    return speech


def utterances():
    """Two real spoken sentences (public-domain LibriVox, Debian pocketsphinx-testdata)."""
    names = ["sense_and_sensibility_01_austen_64kb-0880.wav", "sense_and_sensibility_01_austen_64kb-0930.wav"]
    return [sf.read(str(LIBRIVOX / n), dtype="float32")[0] for n in names]


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    """Half a second of silence, a sentence, a second of silence, a sentence, a second of silence."""
    a, b = utterances()
    silence = np.zeros(16000, dtype=np.float32)
    path = tmp_path_factory.mktemp("script") / "two_questions.wav"
    sf.write(str(path), np.concatenate([silence[:8000], a, silence, b, silence]), 16000)
    return path


def test_scripted_conversation_logs_every_stage(codec_dirs, script, tiny_checkpoint_f32, tmp_path):
    log, saved = tmp_path / "turns.jsonl", tmp_path / "audio"
    r = runner.invoke(app, ["chat", "--input-wav", str(script), "--log", str(log), "--save-audio", str(saved),
                            "--model", str(tiny_checkpoint_f32), "--tokenizer-dir", str(codec_dirs[0]),
                            "--decoder-dir", str(codec_dirs[1]), "--device", "cpu", "--max-new-tokens", "24"])
    assert r.exit_code == 0, r.output
    turns = [json.loads(line) for line in log.read_text().splitlines()]
    assert [t["index"] for t in turns] == [1, 2]
    for turn, spoken in zip(turns, utterances()):
        assert set(turn["stages_ms"]) == set(STAGES)
        assert all(v is not None and v > 0 for v in turn["stages_ms"].values()), turn
        s = turn["stages_ms"]
        assert s["audio_encoded"] < s["first_text_token"] and s["first_audio_codes"] <= s["first_sound_out"]
        assert abs(turn["user_seconds"] - len(spoken) / 16000) < 0.6  # the VAD's cut of the sentence
        assert turn["answer_codes"] > 0 and not turn["interrupted"]
        answer = sf.info(turn["files"]["answer"])
        assert answer.frames == turn["answer_codes"] * speech_fakes.SAMPLES_PER_CODE
        assert sf.info(turn["files"]["user"]).frames == round(turn["user_seconds"] * 16000)
        assert turn["user_codes"] == int(turn["user_seconds"] * 12.5)
    assert "turn: 2" in r.stdout


class ScriptedSource:
    """One utterance, then speech heard while the answer is being generated."""

    ended = False

    def __init__(self):
        self.reads, self.polls = 0, 0

    def read(self, timeout=None):
        self.reads += 1
        if self.reads > 1:
            self.ended = True
            return None
        return np.zeros(512, dtype=np.float32)

    def poll(self):
        self.polls += 1
        return np.ones(512, dtype=np.float32) if self.polls == 5 else None

    def close(self):
        pass


class ScriptedSegmenter:
    def __init__(self):
        self.fed = 0

    def feed(self, frame):
        self.fed += 1
        if self.fed == 1:
            return Utterance(np.full(16000, 0.1, dtype=np.float32), end_time=0.0)
        return SpeechStart(0.0) if frame[0] == 1 else None


def test_speaking_during_an_answer_cuts_it(speech):
    sink = FileOutput(22050)
    session = ChatSession(speech, ScriptedSource(), sink, ScriptedSegmenter(), max_new_tokens=40)
    turns = session.run()
    assert len(turns) == 1
    turn = turns[0]
    assert turn.interrupted and turn.stop_reason == "barge-in"
    assert 0 < turn.answer_codes < 40  # the answer stopped at the fifth generated token
    assert session.conversation.ids[-2:] == [speech.tokens.im_end, *speech.chat.text_ids("\n")]


def test_history_carries_the_exact_answer_ids(speech):
    conv = Conversation(speech, system_prompt="Be brief.")
    first = conv.prompt([1, 2])
    answer = [100, speech.tokens.begin_of_audio, speech.tokens.audio_offset + 9, speech.tokens.im_end]
    conv.commit(first, answer)
    second = conv.prompt([3])
    assert second[: len(first) + 3] == first + answer[:3]
    assert second[len(first) + 3] == speech.tokens.im_end
    assert speech.tokenizer.decode(first[: first.index(speech.tokens.im_end)]) == "<|im_start|>system\nBe brief."


@pytest.mark.parametrize("args, message", [
    (["--input-wav", "missing.wav"], "--input-wav missing.wav does not exist"),
    (["--input-wav", "q.wav", "--push-to-talk"], "--push-to-talk needs a live microphone"),
    (["--input-wav", "q.wav", "--max-turns", "0"], "--max-turns 0 must be at least 1"),
    (["--input-wav", "q.wav", "--input-device", "1"], "use either --input-wav or --input-device"),
    (["--input-wav", "q.wav", "--vad-threshold", "1.5"], "--vad-threshold 1.5 must be between 0 and 1"),
    (["--input-wav", "broken.wav"], "cannot read broken.wav as audio"),
    (["--input-device", "99"], "cannot open input device '99'"),
])
def test_user_errors(codec_dirs, tiny_checkpoint_f32, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    sf.write("q.wav", np.zeros(1600, dtype=np.float32), 16000)
    Path("broken.wav").write_bytes(b"RIFF nonsense")
    r = runner.invoke(app, ["chat", *args, "--model", str(tiny_checkpoint_f32), "--tokenizer-dir",
                            str(codec_dirs[0]), "--decoder-dir", str(codec_dirs[1]), "--device", "cpu"])
    assert r.exit_code == 1
    assert message in r.stderr.strip().splitlines()[-1]


ASOUNDRC = """
pcm.micfile {{ type file; slave.pcm "null"; file "/dev/null"; infile "{mic}"; format "raw" }}
pcm.fakemic {{ type plug; slave {{ pcm "micfile"; format S16_LE; rate 16000; channels 1 }} }}
pcm.spkfile {{ type file; slave.pcm "null"; file "{spk}"; format "raw" }}
pcm.fakespk {{ type plug; slave {{ pcm "spkfile"; format S16_LE; rate 22050; channels 1 }} }}
pcm.!default {{ type asym; playback.pcm "fakespk"; capture.pcm "fakemic" }}
"""

RUN_WITH_FAKE_CODEC = textwrap.dedent("""
    import sys
    sys.path[:0] = [{tests!r}, {repo!r}]
    import speech_fakes, vita_core.codec as codec
    codec.load_encoder = lambda folder, name="glm4voice", device="cpu": speech_fakes.FakeEncoder()
    codec.load_decoder = lambda folder, name="glm4voice", device="cpu": speech_fakes.FakeDecoder()
    from vita_cli.main import app
    app(sys.argv[1:])
""")


def test_real_sounddevice_path_through_alsa_file_devices(tmp_path, tiny_checkpoint_f32):
    """PortAudio + ALSA: a fake microphone reading a raw PCM file, a fake speaker writing one."""
    a, _ = utterances()
    mic, spk = tmp_path / "mic.raw", tmp_path / "spk.raw"
    pcm = np.concatenate([np.zeros(8000, dtype=np.float32), a, np.zeros(32000, dtype=np.float32)])
    (pcm * 32767).astype("<i2").tofile(mic)
    (tmp_path / ".asoundrc").write_text(ASOUNDRC.format(mic=mic, spk=spk))
    script = tmp_path / "run.py"
    script.write_text(RUN_WITH_FAKE_CODEC.format(tests=str(REPO / "tests"), repo=str(REPO)))
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "200"}
    listing = subprocess.run([sys.executable, str(script), "chat", "--list-devices"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert listing.returncode == 0 and "fakemic" in listing.stdout and "fakespk" in listing.stdout
    log = tmp_path / "turns.jsonl"
    run = subprocess.run([sys.executable, str(script), "chat", "--input-device", "fakemic", "--output-device",
                          "fakespk", "--max-turns", "1", "--log", str(log), "--model", str(tiny_checkpoint_f32),
                          "--tokenizer-dir", str(tmp_path), "--decoder-dir", str(tmp_path), "--device", "cpu",
                          "--max-new-tokens", "24"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (turn,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert turn["user_codes"] > 0 and turn["answer_codes"] > 0
    assert all(v is not None for v in turn["stages_ms"].values())
    played = np.fromfile(spk, dtype="<i2").astype(np.float32) / 32767
    loud = played[np.abs(played) > 0.01]
    assert loud.size > 0.5 * turn["answer_codes"] * speech_fakes.SAMPLES_PER_CODE  # the answer reached the speaker
    assert np.abs(played).max() == pytest.approx(0.3, abs=0.01)  # the fake decoder's sine amplitude

    spk2 = tmp_path / "spk2.raw"
    (tmp_path / ".asoundrc").write_text(ASOUNDRC.format(mic=mic, spk=spk2))
    tts = subprocess.run([sys.executable, str(script), "tts", "Play this.", "--play", "--json", "--model",
                          str(tiny_checkpoint_f32), "--decoder-dir", str(tmp_path), "--device", "cpu",
                          "--max-new-tokens", "24"], env=env, capture_output=True, text=True, timeout=120)
    assert tts.returncode == 0, tts.stderr
    meta = json.loads(tts.stdout)
    samples = meta["samples"]
    assert samples == meta["num_codes"] * speech_fakes.SAMPLES_PER_CODE > 0
    played = np.fromfile(spk2, dtype="<i2").astype(np.float32) / 32767
    start = int(np.argmax(np.abs(played) > 0))
    assert np.count_nonzero(played[start:]) >= 0.95 * samples  # all of it reached the default speaker
