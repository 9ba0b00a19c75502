"""vita serve's /v1/realtime WebSocket: OpenAI's Realtime events over a real uvicorn server on 127.0.0.1.

The user speaks a real recording (LibriVox, Debian pocketsphinx-testdata) sent as base64 PCM16 at
24 kHz in 100 ms appends, as a browser would; silero's server VAD cuts it, the tiny random model answers.
"""

import base64
import json
import threading
from dataclasses import replace

import httpx
import numpy as np
import pytest
import soxr
from websockets.sync.client import connect

from test_serve import (SPOKEN, model_id, needs_speech, serving, speech, speech_tokenizer_dir,  # noqa: F401
                        url)  # (fixtures)
from vita_core.chat.answer import STAGES
from vita_core.speech import read_audio
from vita_server import create_app

pytestmark = needs_speech
CHUNK = 2400  # 100 ms at 24 kHz


@pytest.fixture(scope="module")
def spoken():
    """Half a second of silence, the sentence, a second of silence: 24 kHz PCM16 bytes."""
    wav = read_audio(SPOKEN, 24000)
    wav = np.concatenate([np.zeros(12000, np.float32), wav, np.zeros(24000, np.float32)])
    return (np.clip(wav, -1, 1) * 32767).astype("<i2").tobytes()


class Socket:
    """A realtime client: send events, read events until one of a type arrives."""

    def __init__(self, ws):
        self.ws, self.seen = ws, []

    def send(self, kind, **fields):
        self.ws.send(json.dumps({"type": kind, **fields}))

    def speak(self, pcm):
        for start in range(0, len(pcm), 2 * CHUNK):
            self.send("input_audio_buffer.append", audio=base64.b64encode(pcm[start:start + 2 * CHUNK]).decode())

    def until(self, kind):
        while True:
            event = json.loads(self.ws.recv(timeout=60))
            self.seen.append(event)
            if event["type"] == kind:
                return event

    def since(self, start, kind):
        return [e for e in self.seen[start:] if e["type"] == kind]


def open_socket(url, model_id, **session):
    ws = connect(f"{url.replace('http', 'ws')}/v1/realtime?model={model_id}")
    s = Socket(ws)
    assert s.until("session.created")["session"]["turn_detection"]["type"] == "server_vad"
    if session:
        s.send("session.update", session=session)
        updated = s.until("session.updated")["session"]
        for key, value in session.items():  # a turn_detection given in part keeps the other defaults
            assert updated[key] == value or updated[key].items() >= value.items()
    return s


def test_a_spoken_turn_is_heard_and_answered_with_timings(url, model_id, spoken, speech):
    s = open_socket(url, model_id, max_response_output_tokens=24, turn_detection={"silence_duration_ms": 400})
    with s.ws:
        s.speak(spoken)
        started = s.until("input_audio_buffer.speech_started")
        stopped = s.until("input_audio_buffer.speech_stopped")
        assert started["item_id"] == stopped["item_id"] and 0 < started["audio_start_ms"] < stopped["audio_end_ms"]
        assert s.until("input_audio_buffer.committed")["item_id"] == stopped["item_id"]
        created = s.until("response.created")["response"]
        done = s.until("response.done")["response"]
    assert created["status"] == "in_progress" and done["id"] == created["id"]
    assert done["status"] == "incomplete" and done["status_details"]["reason"] == "max_output_tokens"  # never stops
    assert done["usage"]["output_tokens"] == 24
    audio = b"".join(base64.b64decode(e["delta"]) for e in s.since(0, "response.audio.delta"))
    text = "".join(e["delta"] for e in s.since(0, "response.audio_transcript.delta"))
    assert len(audio) > 0 and len(audio) % 2 == 0 and np.abs(np.frombuffer(audio, "<i2")).max() > 0
    assert done["output"][0]["content"][0]["transcript"] == text
    assert [e["type"] for e in s.seen].count("response.done") == 1
    timings = done["vita_timings"]
    assert set(timings) == {f"{stage}_ms" for stage in STAGES}
    assert all(v is not None and v > 0 for v in timings.values()), timings
    assert timings["audio_encoded_ms"] < timings["first_text_token_ms"]
    assert timings["first_audio_codes_ms"] <= timings["first_sound_out_ms"]


def test_speech_during_an_answer_cancels_it(url, model_id, spoken):
    s = open_socket(url, model_id, max_response_output_tokens=20000, turn_detection={"silence_duration_ms": 400})
    with s.ws:
        s.speak(spoken)
        first = s.until("response.created")["response"]["id"]
        s.until("response.audio.delta")  # the answer is playing: the user speaks again
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # generation runs off the event loop
        s.speak(spoken)
        s.until("input_audio_buffer.speech_started")
        cancelled = s.until("response.done")["response"]
        assert cancelled["id"] == first and cancelled["status"] == "cancelled"
        assert cancelled["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        assert cancelled["vita_timings"]["first_sound_out_ms"] > 0
        second = s.until("response.created")["response"]["id"]  # the new utterance gets its own answer
        s.until("response.audio.delta")
        s.send("response.cancel")
        done = s.until("response.done")["response"]
    assert second != first and done["id"] == second and done["status_details"]["reason"] == "client_cancelled"


@pytest.mark.parametrize("manual", [None, {"type": "none"}])
def test_manual_commit_and_a_text_only_answer(url, model_id, spoken, manual):
    s = open_socket(url, model_id, modalities=["text"], max_response_output_tokens=12)
    s.send("session.update", session={"turn_detection": manual})
    assert s.until("session.updated")["session"]["turn_detection"] is None
    with s.ws:
        s.speak(spoken)
        s.send("input_audio_buffer.commit")
        s.until("input_audio_buffer.committed")
        s.send("response.create")
        done = s.until("response.done")["response"]
    assert not s.since(0, "input_audio_buffer.speech_started") and not s.since(0, "response.audio.delta")
    text = "".join(e["delta"] for e in s.since(0, "response.text.delta"))
    assert done["output"][0]["content"] == [{"type": "text", "text": text}] and done["usage"]["output_tokens"] == 12


@pytest.mark.parametrize("frame, code", [
    ("not json", "invalid_json"),
    (b"\x00\x01", "invalid_event"),
    ('{"type": "conversation.teleport"}', "invalid_event"),
    ('["input_audio_buffer.append"]', "invalid_event"),
    ('{"type": "input_audio_buffer.append", "audio": "%%%"}', "invalid_value"),
    ('{"type": "input_audio_buffer.commit"}', "input_audio_buffer_commit_empty"),
    ('{"type": "response.create"}', "input_audio_buffer_empty"),
    ('{"type": "response.cancel"}', "response_cancel_not_active"),
    ('{"type": "session.update", "session": {"mode": "warp"}}', "invalid_value"),
    ('{"type": "session.update", "session": {"turn_detection": {"threshold": 2}}}', "invalid_value"),
    ('{"type": "session.update", "session": {"output_audio_format": "g711_ulaw"}}', "invalid_value"),
])
def test_garbage_gets_an_error_event_and_the_socket_keeps_serving(url, model_id, frame, code):
    s = open_socket(url, model_id)
    with s.ws:
        s.ws.send(frame)
        error = s.until("error")["error"]
        assert error["code"] == code and "\n" not in error["message"]
        s.send("session.update", session={"voice": "alloy"})
        assert s.until("session.updated")["session"]["voice"] == "alloy"
    assert httpx.get(f"{url}/health").status_code == 200


def test_a_server_that_cannot_hear_or_another_model_is_refused(speech, model_id):
    with serving(create_app(replace(speech, encoder=None))) as base:
        with connect(f"{base.replace('http', 'ws')}/v1/realtime") as ws:
            assert json.loads(ws.recv(timeout=30))["error"]["code"] == "no_audio_input"
        with connect(f"{base.replace('http', 'ws')}/v1/realtime?model=gpt-realtime") as ws:
            assert json.loads(ws.recv(timeout=30))["error"]["code"] == "model_not_found"


def test_an_answer_past_the_request_timeout_is_incomplete(speech, model_id, spoken, monkeypatch):
    import vita_server.realtime

    class Held(vita_server.realtime.SpokenAnswer):
        def __iter__(self):
            threading.Event().wait(1.0)  # longer than the server's 0.2 s limit
            return super().__iter__()

    monkeypatch.setattr(vita_server.realtime, "SpokenAnswer", Held)
    with serving(create_app(speech, request_timeout=0.2)) as base:
        s = open_socket(base, model_id, turn_detection=None, max_response_output_tokens=12)
        with s.ws:
            s.speak(spoken)
            s.send("input_audio_buffer.commit")
            s.send("response.create")
            done = s.until("response.done")["response"]
    assert done["status"] == "incomplete" and done["status_details"]["reason"] == "request_timeout"


def test_a_socket_closed_mid_answer_frees_its_slot(speech, model_id, spoken):
    with serving(create_app(speech, max_queue=1)) as base:
        s = open_socket(base, model_id, max_response_output_tokens=20000)
        with s.ws:
            s.speak(spoken)
            s.until("response.audio.delta")  # the one slot is taken by this answer; the client goes away
        body = {"model": model_id, "voice": "default", "input": "Next.", "max_new_tokens": 12}
        for _ in range(200):
            r = httpx.post(f"{base}/v1/audio/speech", json=body, timeout=60)
            if r.status_code != 503:
                break
            threading.Event().wait(0.05)
    assert r.status_code == 200 and r.content[:4] == b"RIFF"


def test_input_audio_is_resampled_from_24_khz_in_any_chunking():
    from vita_server.audio import Pcm16In

    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(24000) * 3000).astype("<i2").tobytes()
    whole, pieces = Pcm16In(16000), Pcm16In(16000)
    cuts = [0, 1, 777, 4801, 30001, len(pcm)]  # odd byte counts split samples
    got = np.concatenate([pieces.push(pcm[a:b]) for a, b in zip(cuts, cuts[1:])])
    want = whole.push(pcm)
    n = min(len(got), len(want))
    assert n > 15000 and np.allclose(got[:n], want[:n], atol=1e-5)
    ref = soxr.resample(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, 24000, 16000)
    assert np.corrcoef(ref[1000:n - 1000], want[1000:n - 1000])[0, 1] > 0.99  # 16 kHz, in step with the input
