"""The bundled vita-mini really speaks: `vita tts` with no model flag, and Whisper tiny.en hears the words.

The sentences are fixed: five of the corpus's 120 held-out sentences (no training step saw them), picked
among those an earlier vita-mini run spoke word for word (Whisper base), so that the test guards
against regressions rather than measures the model (the README's held-out table does that). The bound
is a WER over all of them (Whisper's English normaliser), set with a margin above what the bundled
model measured, so the test fails when the bundle, the engine, the codec or the decoder stops
producing intelligible speech.
"""

import pytest
import torch
from typer.testing import CliRunner

from vita_cli.main import app
from vita_core.bundled import BUNDLED_DIR
from vita_core.eval.scoring import Pair, score_pairs
from vita_core.eval.asr import load_transcriber
from vita_core.eval.wavs import read_16k
from vita_core.generate import generate_ids
from vita_core.speech import load_speech_model
from vita_core.tts import tts_prompt

SENTENCES = [
    "Each person has the right to take the subway.",
    "What we cannot speak about we must pass over in silence.",
    "Anything is possible on paper.",
    "First pull up, then pull down.",
    "Life is too short to stuff a mushroom.",
]
MAX_WER = 0.5  # the bundled model (run 10) measured 0.33 (README, vita-mini); noise scores about 1
MIN_BF16_AGREEMENT = 0.9


@pytest.fixture(scope="module")
def tiny_en():
    return load_transcriber("faster-whisper:tiny.en", "en", batch_size=1)


def test_bundled_vita_mini_speaks_words_whisper_recognises(tiny_en, tmp_path, clean_speech_env):
    assert (BUNDLED_DIR / "model.safetensors").is_file(), "vita-mini is not bundled (scripts/bundle_mini.py)"
    runner = CliRunner()
    pairs = []
    for n, text in enumerate(SENTENCES):
        out = tmp_path / f"{n}.wav"
        result = runner.invoke(app, ["tts", text, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "using vita-mini" in result.output
        (hyp,) = tiny_en.transcribe([read_16k(out)])
        pairs.append(Pair(str(n), text, hyp))
    _, whisper_norm = score_pairs(pairs, "wer", "en")
    assert whisper_norm.value <= MAX_WER, [(p.ref, p.hyp) for p in pairs]


def _teacher_forced_argmax(dtype: str, ids: list[int]) -> torch.Tensor:
    """The fast path's choice at every position of `ids` in one pass (full-vocabulary argmax)."""
    from vita_core.kv_cache import KVCache

    speech = load_speech_model("vita-mini", dtype=dtype, device="cpu")
    m, fast = speech.model, speech.engine.fast
    assert fast is not None
    with torch.inference_mode():
        cache = KVCache(m.config, len(ids), range(m.config.num_hidden_layers), "cpu", m.lm_head.weight.dtype)
        (hidden,) = fast.backbone([m.embed(torch.tensor(ids))], [0], [cache])
        return m.logits(hidden).argmax(-1)


def test_bf16_fast_path_agrees_with_fp32_on_the_trained_model():
    """bf16 changes rounding, so greedy paths may part; teacher-forced on fp32's own answer, the two
    choose the same token at nearly every position."""
    speech = load_speech_model("vita-mini", dtype="float32", device="cpu")
    prompt = tts_prompt(speech, SENTENCES[1])
    done = generate_ids(speech.engine, prompt, mode="vanilla", layout=speech.answer_layout(), max_new_tokens=300)
    ids = prompt + done.tokens
    ref, low = _teacher_forced_argmax("float32", ids), _teacher_forced_argmax("bfloat16", ids)
    answer = slice(len(prompt) - 1, len(ids) - 1)  # the logits that chose each answer token
    assert answer.stop - answer.start > 50
    agree = (ref[answer] == low[answer]).float().mean().item()
    assert agree >= MIN_BF16_AGREEMENT, agree
