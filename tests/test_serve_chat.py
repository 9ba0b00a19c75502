"""vita serve's POST /v1/chat/completions with audio, driven by the official `openai` client.

Answers are compared with vita_core's own `SpokenAnswer` for the same prompt (the tiny random
checkpoint never stops by itself, so every answer runs to its max_tokens budget).
"""

import base64
import io
import threading
from dataclasses import replace

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import soxr
from fastapi.testclient import TestClient

import vita_server.chat_completions
from test_serve import (SPOKEN, client, model_id, needs_speech, serving, speech, speech_tokenizer_dir,  # noqa: F401
                        url)  # (fixtures)
from vita_core.chat.answer import SpokenAnswer
from vita_core.chat.loop import DEFAULT_SYSTEM_PROMPT
from vita_core.speech import read_audio
from vita_core.tokens import Message
from vita_server import create_app

AUDIO = {"voice": "default", "format": "pcm16"}
USER = [{"role": "user", "content": "Hello there."}]


def library_answer(speech, parts, budget):
    """vita_core's answer to one user turn of `parts` after the default system prompt: (text, 24 kHz int16)."""
    parts = [speech.audio_part(p, 16000) if isinstance(p, np.ndarray) else p for p in parts]
    ids = speech.chat.encode([Message("system", DEFAULT_SYSTEM_PROMPT), Message("user", parts)])
    answer = SpokenAnswer(speech, ids, speech.prompt_embeds(ids, parts), max_new_tokens=budget)
    pcm = np.concatenate([step.pcm for step in answer])
    resampled = soxr.resample(pcm, int(speech.decoder.sample_rate), 24000)
    return answer.text, (np.clip(resampled, -1, 1) * 32767).round().astype(np.int16), answer


def close_to(got, want):
    """The streamed resampling equals the one-shot one up to rounding, sample for sample."""
    assert abs(len(got) - len(want)) <= 2 and len(got) > 0
    n = min(len(got), len(want))
    assert np.abs(got[:n].astype(np.int32) - want[:n]).max() <= 2


def stream(client, model_id, **kw):
    args = {"model": model_id, "modalities": ["text", "audio"], "audio": AUDIO, "messages": USER,
            "max_tokens": 24, "seed": 0, "stream": True}
    args.update(kw)
    content, transcript, audio, finish = "", "", b"", None
    for chunk in client.chat.completions.create(**args):
        assert chunk.object == "chat.completion.chunk"
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        if delta.audio is not None:
            transcript += delta.audio.transcript or ""
            audio += base64.b64decode(delta.audio.data or "")
        finish = chunk.choices[0].finish_reason or finish
    return content, transcript, np.frombuffer(audio, dtype="<i2"), finish


def test_a_stream_yields_text_and_audio_deltas(client, model_id, speech):
    text, pcm, _ = library_answer(speech, ["Hello there."], 24)
    content, transcript, audio, finish = stream(client, model_id)
    assert content == transcript == text and finish == "length"
    close_to(audio, pcm)


def test_a_whole_answer_holds_a_wav_that_decodes(client, model_id, speech):
    text, pcm, answer = library_answer(speech, ["Hello there."], 24)
    r = client.chat.completions.create(model=model_id, modalities=["text", "audio"], messages=USER, max_tokens=24,
                                       audio={"voice": "default", "format": "wav"})
    message = r.choices[0].message
    assert message.content == message.audio.transcript == text and r.choices[0].finish_reason == "length"
    samples, rate = sf.read(io.BytesIO(base64.b64decode(message.audio.data)), dtype="int16")
    assert rate == 24000 and message.audio.id.startswith("audio_") and message.audio.expires_at > 0
    close_to(samples, pcm)
    assert r.usage.completion_tokens == len(answer.ids) == 24


@needs_speech
def test_input_audio_parts_are_heard(client, model_id, speech):
    recording = read_audio(SPOKEN, 16000)
    text, pcm, answer = library_answer(speech, ["Answer this:", recording], 24)
    wav = base64.b64encode(SPOKEN.read_bytes()).decode()
    messages = [{"role": "user", "content": [{"type": "text", "text": "Answer this:"},
                                             {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}]}]
    content, _, audio, _ = stream(client, model_id, messages=messages)
    assert content == text
    close_to(audio, pcm)
    r = client.chat.completions.create(model=model_id, messages=messages, max_tokens=1)
    codes = speech.audio_part(recording, 16000).length
    assert codes > 0 and r.usage.prompt_tokens == len(answer.prompt)  # the recording's codes are in the prompt
    assert len(answer.prompt) == len(library_answer(speech, ["Answer this:"], 1)[2].prompt) + codes + 2


def test_text_only_answers_have_no_audio(client, model_id, speech):
    ids = speech.chat.encode([Message("system", DEFAULT_SYSTEM_PROMPT), Message("user", "Hello there.")])
    answer = SpokenAnswer(speech, ids, max_new_tokens=12, spoken=False)
    list(answer)
    r = client.chat.completions.create(model=model_id, messages=USER, max_tokens=12)
    assert r.choices[0].message.content == answer.text and r.choices[0].message.audio is None


def test_a_model_that_cannot_hear_refuses_input_audio(speech, model_id):
    body = {"model": model_id, "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]}
    with TestClient(create_app(replace(speech, encoder=None))) as local:
        r = local.post("/v1/chat/completions", json=body)
    error = r.json()["error"]
    assert r.status_code == 400 and "--tokenizer-dir" in error["message"] and error["param"] == "messages[0].content[0]"


@pytest.mark.parametrize("kw, param, words", [
    ({"audio": {"voice": "default", "format": "wav"}}, "audio.format", "use pcm16 with stream"),
    ({"audio": None}, "audio", "need the audio parameter"),
    ({"modalities": ["audio"]}, "modalities", '["text", "audio"]'),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "%%"}}]}]},
     "messages[0].content[0].input_audio.data", "base64"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio",
                                                 "input_audio": {"data": "bm90IGF1ZGlv"}}]}]},
     "messages[0].content[0].input_audio.data", "cannot read"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0]", "text or input_audio"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "system, user or assistant"),
    ({"messages": []}, "messages", "messages is empty"),
    ({"n": 2}, "n", "one choice"),
    ({"temperature": -1}, "temperature", "temperature -1"),
    ({"extra_body": {"mode": "warp"}}, "mode", "mode"),
])
def test_bad_chat_parameters_are_400_with_one_message(client, model_id, kw, param, words):
    args = {"model": model_id, "modalities": ["text", "audio"], "audio": AUDIO, "messages": USER, "stream": True}
    args.update({k: v for k, v in kw.items() if v is not None})
    if kw.get("audio", 1) is None:
        del args["audio"]
    with pytest.raises(openai.BadRequestError) as err:
        list(client.chat.completions.create(**args))
    body = err.value.body
    assert err.value.status_code == 400 and body["param"] == param and words in body["message"]
    assert "\n" not in body["message"]


def test_an_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o-audio-preview", messages=USER)


def test_a_client_that_leaves_mid_stream_frees_its_slot(speech, model_id, monkeypatch):
    answers = []

    class Recorded(SpokenAnswer):
        def __iter__(self):
            answers.append(self)
            return super().__iter__()

    monkeypatch.setattr(vita_server.chat_completions, "SpokenAnswer", Recorded)
    body = {"model": model_id, "messages": USER, "modalities": ["text", "audio"], "audio": AUDIO, "stream": True,
            "max_tokens": 20000}
    with serving(create_app(speech, max_queue=1)) as base:
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")  # the answer has started; the client goes away
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        for _ in range(200):  # the server notices the closed socket within moments
            try:
                content, _, audio, _ = stream(client, model_id)
                break
            except openai.InternalServerError as exc:
                assert exc.status_code == 503
                threading.Event().wait(0.05)
    assert audio.size and answers[1].stop_reason == "length"
    assert 0 < len(answers[0].ids) < 20000  # the first answer was stopped, not run to its budget


def test_past_the_request_timeout_is_504_or_an_error_event(speech, model_id, monkeypatch):
    gate = threading.Event()

    class Held(SpokenAnswer):
        def __iter__(self):
            gate.wait(1.0)  # longer than the server's 0.2 s limit
            return super().__iter__()

    monkeypatch.setattr(vita_server.chat_completions, "SpokenAnswer", Held)
    with serving(create_app(speech, request_timeout=0.2)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model=model_id, messages=USER, max_tokens=12)
        assert err.value.status_code == 504 and err.value.body["code"] == "request_timeout"
        with pytest.raises(openai.APIError) as err:
            stream(client, model_id, max_tokens=12)
        assert "--request-timeout 0.2" in err.value.message
        assert httpx.get(f"{base}/health").status_code == 200  # the server keeps serving
