"""vita chat: a scripted conversation from a WAV file, barge-in, history, errors, and real sounddevice I/O."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import speech_fakes
from vita_cli.main import app
from vita_core.codec import load_encoder
from vita_core.codec.glm4voice.decoder import load_glm4voice_decoder
from vita_core.tiny.glm4voice_tokenizer import build_tiny_glm4voice_tokenizer
from vita_core.chat.devices import FileOutput
from vita_core.chat.loop import STAGES, ChatSession, Conversation
from vita_core.chat.vad import SpeechStart, Utterance
from vita_core.speech import load_speech_model
from vita_core.tokens import AudioCodes

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


@pytest.fixture(scope="module")
def speech_tokenizer_dir(tmp_path_factory):
    """A tiny random-init glm-4-voice-tokenizer folder in the released format."""
    return build_tiny_glm4voice_tokenizer(tmp_path_factory.mktemp("speech_tokenizer") / "glm-4-voice-tokenizer")


def test_scripted_conversation_logs_every_stage(clean_speech_env, script, tiny_checkpoint_f32, speech_tokenizer_dir,
                                                decoder_dir, tmp_path):
    """The real (tiny) speech tokenizer and decoder folders: no fakes."""
    log, saved = tmp_path / "turns.jsonl", tmp_path / "audio"
    r = runner.invoke(app, ["chat", "--input-wav", str(script), "--log", str(log), "--save-audio", str(saved),
                            "--model", str(tiny_checkpoint_f32), "--tokenizer-dir", str(speech_tokenizer_dir),
                            "--decoder-dir", str(decoder_dir), "--device", "cpu", "--max-new-tokens", "24"])
    assert r.exit_code == 0, r.output
    encoder, decoder = load_encoder(speech_tokenizer_dir), load_glm4voice_decoder(decoder_dir)
    turns = [json.loads(line) for line in log.read_text().splitlines()]
    assert [t["index"] for t in turns] == [1, 2]
    for turn, spoken in zip(turns, utterances()):
        assert set(turn["stages_ms"]) == set(STAGES)
        assert all(v is not None and v > 0 for v in turn["stages_ms"].values()), turn
        s = turn["stages_ms"]
        assert s["audio_encoded"] < s["first_text_token"] and s["first_audio_codes"] <= s["first_sound_out"]
        assert abs(turn["user_seconds"] - len(spoken) / 16000) < 0.6  # the VAD's cut of the sentence
        assert turn["answer_codes"] > 0 and not turn["interrupted"] and turn["stop_reason"] == "length"
        answer = sf.info(turn["files"]["answer"])
        assert answer.samplerate == 22050 and answer.frames == decoder.samples_for(turn["answer_codes"])
        user, rate = sf.read(turn["files"]["user"], dtype="float32")
        assert rate == 16000 and len(user) == round(turn["user_seconds"] * 16000)
        assert turn["user_codes"] == encoder.num_codes(len(user)) == len(encoder.encode(user, 16000))
    assert sorted(p.name for p in saved.iterdir()) == [f"turn00{i}_{w}.wav" for i in (1, 2) for w in ("answer", "user")]
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
    first = conv.prompt(AudioCodes([1, 2]))
    answer = [100, speech.tokens.begin_of_audio, speech.tokens.audio_offset + 9, speech.tokens.im_end]
    conv.commit(first, AudioCodes([1, 2]), answer)
    second = conv.prompt(AudioCodes([3]))
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

def test_real_sounddevice_path_through_alsa_file_devices(tmp_path, tiny_checkpoint_f32, speech_tokenizer_dir,
                                                         decoder_dir):
    """PortAudio + ALSA: a fake microphone reading a raw PCM file, a fake speaker writing one; real codec."""
    a, _ = utterances()
    mic, spk = tmp_path / "mic.raw", tmp_path / "spk.raw"
    pcm = np.concatenate([np.zeros(8000, dtype=np.float32), a, np.zeros(32000, dtype=np.float32)])
    (pcm * 32767).astype("<i2").tofile(mic)
    (tmp_path / ".asoundrc").write_text(ASOUNDRC.format(mic=mic, spk=spk))
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "200",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    vita = [sys.executable, "-m", "vita_cli"]
    folders = ["--model", str(tiny_checkpoint_f32), "--decoder-dir", str(decoder_dir), "--device", "cpu",
               "--max-new-tokens", "24"]
    listing = subprocess.run([*vita, "chat", "--list-devices"], env=env, capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and "fakemic" in listing.stdout and "fakespk" in listing.stdout
    log, saved = tmp_path / "turns.jsonl", tmp_path / "saved"
    run = subprocess.run([*vita, "chat", "--input-device", "fakemic", "--output-device", "fakespk", "--max-turns", "1",
                          "--log", str(log), "--save-audio", str(saved), "--tokenizer-dir", str(speech_tokenizer_dir),
                          *folders], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (turn,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert turn["user_codes"] > 0 and turn["answer_codes"] > 0
    assert all(v is not None for v in turn["stages_ms"].values())
    answer = sf.read(turn["files"]["answer"], dtype="int16")[0]
    assert len(answer) == load_glm4voice_decoder(decoder_dir).samples_for(turn["answer_codes"])
    assert_played(np.fromfile(spk, dtype="<i2"), answer)

    spk2 = tmp_path / "spk2.raw"
    (tmp_path / ".asoundrc").write_text(ASOUNDRC.format(mic=mic, spk=spk2))
    out = tmp_path / "played.wav"
    tts = subprocess.run([*vita, "tts", "Play this.", "--play", "--out", str(out), "--json", *folders], env=env,
                         capture_output=True, text=True, timeout=120)
    assert tts.returncode == 0, tts.stderr
    assert json.loads(tts.stdout)["samples"] == sf.info(str(out)).frames > 0
    assert_played(np.fromfile(spk2, dtype="<i2"), sf.read(str(out), dtype="int16")[0])


def assert_played(played: np.ndarray, expected: np.ndarray) -> None:
    """The speaker file holds `expected` (to 1 LSB of rounding) once the silence it was fed while starved is cut."""
    heard, want = without_gaps(played), without_gaps(expected)
    assert len(heard) == len(want) > 0.9 * len(expected)
    assert np.abs(heard.astype(np.int32) - want).max() <= 1


def without_gaps(pcm: np.ndarray, min_run: int = 64) -> np.ndarray:
    """`pcm` less every run of at least `min_run` zero samples (the speaker's underruns, lead-in and tail)."""
    zero = np.concatenate([[False], pcm == 0, [False]])
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    keep = np.ones(len(pcm), dtype=bool)
    for start, stop in zip(edges[::2], edges[1::2]):
        if stop - start >= min_run:
            keep[start:stop] = False
    return pcm[keep]


@pytest.mark.parametrize("args, message", [
    (["--vad-threshold", "1.5"], "--vad-threshold 1.5 must be between 0 and 1"),
    (["--min-silence-ms", "0"], "--min-silence-ms 0 must be at least 1"),
    (["--mode", "warp"], "schedule 'warp' must be integers"),
    (["--temperature", "-0.5"], "temperature -0.5 must be >= 0"),
    (["--top-p", "2"], "top_p 2.0 must be in (0, 1]"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0 must be at least 1"),
    (["--dtype", "int4"], "--dtype 'int4': choose auto"),
])
def test_flag_errors_come_before_loading(codec_dirs, tiny_checkpoint_f32, tmp_path, monkeypatch, no_model_load,
                                         args, message):
    monkeypatch.chdir(tmp_path)
    sf.write("q.wav", np.zeros(1600, dtype=np.float32), 16000)
    r = runner.invoke(app, ["chat", "--input-wav", "q.wav", "--model", str(tiny_checkpoint_f32), "--device", "cpu",
                            *args])
    assert r.exit_code == 1
    assert message in r.stderr.strip().splitlines()[-1]


def test_silence_says_no_speech_was_heard(codec_dirs, tiny_checkpoint_f32, tmp_path):
    quiet = tmp_path / "quiet.wav"
    sf.write(str(quiet), np.zeros(32000, dtype=np.float32), 16000)
    r = runner.invoke(app, ["chat", "--input-wav", str(quiet), "--model", str(tiny_checkpoint_f32), "--tokenizer-dir",
                            str(codec_dirs[0]), "--decoder-dir", str(codec_dirs[1]), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert r.stderr.strip().splitlines()[-1] == (
        f"0 turns: no speech was heard in {quiet}; check that it holds speech at a normal level, or lower "
        "--vad-threshold (now 0.5)")


def test_one_turn_is_singular(codec_dirs, tiny_checkpoint_f32, script):
    r = runner.invoke(app, ["chat", "--input-wav", str(script), "--max-turns", "1", "--max-new-tokens", "8",
                            "--model", str(tiny_checkpoint_f32), "--tokenizer-dir", str(codec_dirs[0]),
                            "--decoder-dir", str(codec_dirs[1]), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert r.stderr.strip().splitlines()[-1] == "1 turn"


def test_no_sound_card_is_explained(monkeypatch):
    from vita_core.chat import devices

    monkeypatch.setattr(devices, "list_devices", lambda: [])
    r = runner.invoke(app, ["chat", "--list-devices"])
    assert r.exit_code == 0
    assert r.stdout.startswith("no audio devices found: PortAudio sees no sound card")
class TwoUtterances:
    """A source and segmenter in one: two utterances (different each session), then the input ends."""

    def __init__(self, level):
        self.level, self.reads, self.ended = level, 0, False

    def read(self, timeout=None):
        self.reads += 1
        self.ended = self.reads > 2
        return None if self.ended else np.full(512, self.level, dtype=np.float32)

    def poll(self):
        return None

    def feed(self, frame):
        return Utterance(np.full(8000 * self.reads, frame[0], dtype=np.float32), end_time=0.0)

    def close(self):
        pass


def test_a_second_session_into_the_same_log_and_folder_keeps_the_first(speech, tmp_path):
    log, saved = tmp_path / "turns.jsonl", tmp_path / "audio"
    for level in (0.1, 0.2):
        source = TwoUtterances(level)
        ChatSession(speech, source, FileOutput(22050), source, max_new_tokens=8, log_path=log, save_audio=saved).run()
        if level == 0.1:
            first = {p.name: p.read_bytes() for p in saved.iterdir()}
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["session"], r["index"]) for r in rows] == [(1, 1), (1, 2), (2, 3), (2, 4)]
    assert sorted(p.name for p in saved.iterdir()) == [f"turn00{i}_{w}.wav" for i in (1, 2, 3, 4) for w in ("answer", "user")]
    assert all((saved / name).read_bytes() == data for name, data in first.items())
    for row, level in zip(rows, (0.1, 0.1, 0.2, 0.2)):
        assert sf.read(row["files"]["user"], dtype="float32")[0][0] == pytest.approx(level, abs=1e-4)


def test_a_spoken_answer_hands_out_its_text_and_sound_step_by_step(speech):
    from vita_core.chat.answer import SpokenAnswer
    from vita_core.generate import generate_ids

    prompt = Conversation(speech).prompt(AudioCodes([1, 2, 3]))
    answer = SpokenAnswer(speech, prompt, max_new_tokens=30)
    steps = list(answer)
    whole = generate_ids(speech.engine, prompt, mode=speech.mode, layout=speech.answer_layout(), max_new_tokens=30)
    assert answer.ids == whole.tokens and len(steps) == 31 and steps[-1].final  # one step per token, then the flush
    assert "".join(s.text for s in steps) == answer.text == speech.chat.decode_text(whole.tokens)
    assert sum(s.pcm.size for s in steps) == speech_fakes.SAMPLES_PER_CODE * answer.codes > 0
    assert answer.stop_reason == "length" and set(answer.stages_ms) == set(STAGES)
    assert answer.stages_ms["first_text_token"] > 0 and answer.stages_ms["first_audio_codes"] > 0
    text_only = SpokenAnswer(speech, prompt, max_new_tokens=8, spoken=False)
    assert not any(s.pcm.size for s in text_only) and text_only.codes == 0 and len(text_only.ids) == 8
