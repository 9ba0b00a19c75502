"""Tiny random-init ASR checkpoints in each backend's released format, through the real loading code."""

import builtins
import json
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
