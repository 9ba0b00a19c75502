"""The bundled-model rules: with nothing configured the speech commands fall back to vita-mini and say so
in one line; `--model vita-mini` names it; a checkpoint card (vita-model.json) that lists only tts makes
asr and chat refuse in one line, before any model loads."""

import json
import shutil

import pytest
from typer.testing import CliRunner

import vita_core.bundled as bundled
from vita_cli.main import app
from vita_core.errors import InputError
from vita_core.speech import resolve_model

runner = CliRunner()


@pytest.fixture
def speaking_only(tiny_checkpoint_f32, tmp_path, clean_speech_env, monkeypatch):
    """The tiny checkpoint dressed as the bundled model: a card that lists only tts."""
    folder = tmp_path / "vita-mini-copy"
    shutil.copytree(tiny_checkpoint_f32, folder)
    (folder / bundled.CARD).write_text(json.dumps({"name": "vita-mini", "tasks": ["tts"],
                                                   "summary": "English, one voice, text to speech only"}))
    monkeypatch.setattr(bundled, "BUNDLED_DIR", folder)
    return folder


def test_nothing_configured_falls_back_to_the_bundled_model(speaking_only, monkeypatch, tmp_path):
    assert resolve_model(None) == (speaking_only, True)
    assert resolve_model("vita-mini") == (speaking_only, False)
    monkeypatch.setenv("VITA_MODEL", str(tmp_path))
    assert resolve_model(None) == (tmp_path, False)


def test_without_a_bundled_model_the_old_message_names_the_flag(clean_speech_env, monkeypatch, tmp_path):
    monkeypatch.setattr(bundled, "BUNDLED_DIR", tmp_path / "absent")
    with pytest.raises(InputError, match="no model folder given: pass --model DIR"):
        resolve_model(None)
    with pytest.raises(InputError, match="vita-mini is not bundled with this install"):
        resolve_model("vita-mini")


@pytest.mark.parametrize("argv", [["asr", "x.wav"], ["chat", "--input-wav", "x.wav"]])
def test_a_speaking_only_model_refuses_to_listen_in_one_line(speaking_only, tmp_path, monkeypatch, argv):
    import numpy as np
    import soundfile as sf

    monkeypatch.chdir(tmp_path)
    sf.write("x.wav", np.zeros(16000, dtype=np.float32), 16000)
    result = runner.invoke(app, argv)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "vita-mini" in lines[0] and "can only speak text" in lines[0] and "--model" in lines[0]


def test_tts_says_in_one_line_that_it_uses_the_bundled_model(speaking_only, tmp_path, monkeypatch):
    import speech_fakes

    _, decoder = speech_fakes.install(monkeypatch, tmp_path)
    monkeypatch.setenv("VITA_AUDIO_DECODER", str(decoder))
    result = runner.invoke(app, ["tts", "Hello.", "--out", str(tmp_path / "a.wav"), "--max-new-tokens", "24"])
    assert result.exit_code == 0, result.output
    notices = [line for line in result.output.splitlines() if line.startswith("using vita-mini")]
    assert notices == ["using vita-mini, English, one voice, text to speech only; pass --model or set VITA_MODEL "
                       "to use another checkpoint"]
    result = runner.invoke(app, ["tts", "Hello.", "--out", str(tmp_path / "b.wav"), "--max-new-tokens", "24",
                                 "--model", str(speaking_only)])
    assert "using vita-mini" not in result.output


def test_the_card_mode_is_the_default_mode(speaking_only):
    """The tiny checkpoint's generation config names boost; a card with "mode" overrides it, --mode beats both."""
    from vita_core.speech import load_speech_model

    assert load_speech_model(speaking_only).mode.name == "boost"
    card = json.loads((speaking_only / bundled.CARD).read_text())
    (speaking_only / bundled.CARD).write_text(json.dumps({**card, "mode": "vanilla"}))
    assert load_speech_model(speaking_only).mode.name == "vanilla"
    assert load_speech_model(speaking_only, mode="turbo").mode.name == "turbo"
    (speaking_only / bundled.CARD).write_text(json.dumps({**card, "mode": 3}))
    with pytest.raises(Exception, match="'mode' must be a mode name"):
        load_speech_model(speaking_only)


def test_a_broken_card_is_one_line(speaking_only):
    (speaking_only / bundled.CARD).write_text("{")
    with pytest.raises(Exception, match="vita-model.json is not valid JSON"):
        bundled.check_task(speaking_only, "asr")


def test_bench_model_times_each_mode_on_the_same_sentences(tiny_checkpoint_f32, clean_speech_env, monkeypatch,
                                                          tmp_path):
    import speech_fakes

    from vita_core.speech import load_speech_model
    from vita_core.speech_bench import bench_speech

    _, decoder = speech_fakes.install(monkeypatch, tmp_path)
    speech = load_speech_model(tiny_checkpoint_f32, decoder_dir=decoder, need_decoder=True, device="cpu")
    r = bench_speech(speech, ["vanilla", "turbo"], sentences=["Hello."], repeats=1, warmup=0, threads=1,
                     max_new_tokens=24)
    vanilla, turbo = r.modes
    assert (vanilla.mode, turbo.mode, vanilla.speedup) == ("vanilla", "turbo", 1.0)
    assert turbo.speedup == pytest.approx(vanilla.real_time_factor / turbo.real_time_factor)
    assert turbo.backbone_forwards < vanilla.backbone_forwards and turbo.mtp_forwards > 0 == vanilla.mtp_forwards
    assert 0 < vanilla.first_audio_ms <= vanilla.first_audio_ms_max and vanilla.audio_seconds > 0
    assert speech.mode.name == "boost"  # the loaded model keeps its own default mode
    with pytest.raises(InputError, match="schedule 'warp' must be integers"):
        bench_speech(speech, ["warp"], sentences=["Hello."])
