"""vita serve: the app on a real uvicorn server on 127.0.0.1, driven by the official `openai` client.

The tiny checkpoint and the tiny GLM-4-Voice decoder folder are loaded once; every answer is compared
with what vita_core's `synthesize` gives for the same request, byte for byte.
"""

import io
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import vita_core.tts
from vita_core.schedule import get_mode
from vita_core.sinks import StreamSink
from vita_core.asr import render, transcribe
from vita_core.speech import load_speech_model, read_audio
from vita_core.tiny.glm4voice_tokenizer import build_tiny_glm4voice_tokenizer
from vita_cli.main import app
from vita_core.tts import synthesize
from vita_server import create_app

TEXT = "Hello there."
BUDGET = {"max_new_tokens": 12, "seed": 0}  # tiny random models never stop by themselves


SPOKEN = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav")


@pytest.fixture(scope="module")
def speech_tokenizer_dir(tmp_path_factory):
    return build_tiny_glm4voice_tokenizer(tmp_path_factory.mktemp("serve_enc") / "glm-4-voice-tokenizer")


@pytest.fixture(scope="module")
def speech(tiny_checkpoint_f32, decoder_dir, speech_tokenizer_dir):
    return load_speech_model(tiny_checkpoint_f32, speech_tokenizer_dir, decoder_dir, device="cpu",
                             need_encoder=True, need_decoder=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app):
    """`app` served by uvicorn in a thread on 127.0.0.1, as `vita serve` runs it; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def url(speech):
    with serving(create_app(speech)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def model_id(tiny_checkpoint_f32):
    return tiny_checkpoint_f32.name


def library_wav(speech, mode=None, text=TEXT, budget=BUDGET["max_new_tokens"]):
    """`vita tts --out -`'s bytes for `text` with BUDGET (or `budget` tokens), through vita_core directly."""
    out = io.BytesIO()
    sink = StreamSink(out, int(speech.decoder.sample_rate), "wav")
    chosen = replace(speech, mode=get_mode(mode)) if mode else speech
    result = synthesize(chosen, text, sink.write, sampling=replace(speech.sampling, seed=0), max_new_tokens=budget)
    return out.getvalue(), result


@pytest.fixture(scope="module")
def expected(speech):
    return library_wav(speech)


def speak(client, model_id, **kw):
    args = {"model": model_id, "voice": "default", "input": TEXT, "response_format": "wav", "extra_body": BUDGET}
    args.update(kw)
    with client.audio.speech.with_streaming_response.create(**args) as response:
        return response.headers, b"".join(response.iter_bytes())


def test_health_and_models(client, url, model_id):
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "model": model_id}
    assert [m.id for m in client.models.list().data] == [model_id]
    assert client.models.retrieve(model_id).owned_by == "vita"


def test_speech_streams_the_wav_vita_core_generates(client, model_id, expected, speech):
    wav, result = expected
    headers, data = speak(client, model_id)
    assert headers["content-type"] == "audio/wav" and headers["transfer-encoding"] == "chunked"
    assert data == wav
    assert data[:4] == b"RIFF" and data[40:44] == b"\xff\xff\xff\xff"  # open length, as `vita tts --out -`
    samples, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == 22050 and len(samples) == result.samples == speech.decoder.samples_for(result.num_codes) > 0
    assert np.abs(samples).max() > 0


def test_speech_pcm_and_flac_hold_the_same_samples(client, model_id, expected):
    wav, _ = expected
    _, pcm = speak(client, model_id, response_format="pcm")
    assert pcm == wav[44:]
    headers, flac = speak(client, model_id, response_format="flac")
    assert headers["content-type"] == "audio/flac"
    samples, _ = sf.read(io.BytesIO(flac), dtype="int16")
    assert samples.astype("<i2").tobytes() == pcm


def test_speech_mode_field_picks_the_schedule(client, model_id, speech):
    wav, result = library_wav(speech, "vanilla")
    _, data = speak(client, model_id, extra_body={**BUDGET, "mode": "vanilla"})
    assert data == wav and result.mode == "vanilla"


def test_health_answers_while_a_generation_runs(client, url, model_id, expected, monkeypatch):
    gate, real = threading.Event(), vita_core.tts.synthesize

    def held(*args, **kwargs):
        assert gate.wait(30), "the test never released the generation"
        return real(*args, **kwargs)

    monkeypatch.setattr(vita_core.tts, "synthesize", held)
    args = {"model": model_id, "voice": "default", "input": TEXT, "response_format": "wav", "extra_body": BUDGET}
    with client.audio.speech.with_streaming_response.create(**args) as response:
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # the worker is still held at the gate
        gate.set()
        assert b"".join(response.iter_bytes()) == expected[0]


def test_a_client_that_leaves_stops_its_generation(client, url, model_id, expected, monkeypatch):
    gate, started, finished, outcome = threading.Event(), threading.Event(), threading.Event(), []
    real = vita_core.tts.synthesize

    def held(*args, **kwargs):
        started.set()
        gate.wait(30)
        try:
            return real(*args, **kwargs)
        except BaseException as exc:
            outcome.append(type(exc).__name__)
            raise
        finally:
            finished.set()

    monkeypatch.setattr(vita_core.tts, "synthesize", held)
    with httpx.stream("POST", f"{url}/v1/audio/speech", json={"model": model_id, "voice": "default",
                      "input": TEXT, "response_format": "pcm", "max_new_tokens": 400}) as response:
        assert response.status_code == 200
        assert started.wait(30), "the generation never started"  # leave mid-generation, not while it waits
    gate.set()  # the client has gone: the worker's first audio chunk finds the request cancelled
    assert finished.wait(60) and outcome == ["Cancelled"]
    monkeypatch.setattr(vita_core.tts, "synthesize", real)
    assert speak(client, model_id)[1] == expected[0]  # the server keeps serving


def test_eight_concurrent_requests_each_get_their_own_answer(client, model_id, speech):
    """Eight at once (the server's default --max-queue): four texts, each with two token budgets."""
    asks = [(text, budget) for text in ("One.", "Two words.", "Three small words.", "Zebra") for budget in (12, 16)]
    wanted = [library_wav(speech, text=text, budget=budget)[0] for text, budget in asks]
    with ThreadPoolExecutor(len(asks)) as pool:
        got = list(pool.map(lambda ask: speak(client, model_id, input=ask[0], extra_body={
            **BUDGET, "max_new_tokens": ask[1]})[1], asks))
    assert len(set(wanted)) == len(asks) and got == wanted


@pytest.fixture
def batches(monkeypatch):
    """Holds the first speech request on the model thread until `release()`; records each batch's size."""
    import vita_server.batch
    from vita_core.generate import Engine

    gate, sizes, jobs = threading.Event(), [], []
    real_synthesize, real_batch, real_start = vita_core.tts.synthesize, Engine.generate_batch, \
        vita_server.batch.SpeechBatcher.start

    def held(*args, **kwargs):
        assert gate.wait(30), "the test never released the generation"
        return real_synthesize(*args, **kwargs)

    def counted(self, requests):
        sizes.append(len(requests))
        return real_batch(self, requests)

    def start(self, rt, task):
        jobs.append(real_start(self, rt, task))  # queued: from here on a batch can find it
        return jobs[-1]

    monkeypatch.setattr(vita_core.tts, "synthesize", held)
    monkeypatch.setattr(Engine, "generate_batch", counted)
    monkeypatch.setattr(vita_server.batch.SpeechBatcher, "start", start)
    return gate, sizes, jobs


def wait_for(condition):
    for _ in range(3000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("the server never got there")


def test_speech_requests_that_wait_together_run_as_one_batch(client, model_id, speech, batches):
    gate, sizes, jobs = batches
    texts = ["One.", "Two words.", "Three small words.", "Zebra"]
    with ThreadPoolExecutor(len(texts)) as pool:
        first = pool.submit(speak, client, model_id, input=texts[0])
        wait_for(lambda: len(jobs) == 1)
        rest = [pool.submit(speak, client, model_id, input=t) for t in texts[1:]]
        wait_for(lambda: len(jobs) == len(texts))
        gate.set()
        got = [first.result()[1]] + [f.result()[1] for f in rest]
    wanted = [library_wav(speech, text=t)[0] for t in texts]
    assert sizes[:2] == [1, 3] and got == wanted  # one batch of three, each answer the bytes it gets alone


def test_a_client_that_leaves_drops_out_of_its_batch(client, url, model_id, speech, batches):
    gate, sizes, jobs = batches
    texts = ["One.", "Two words.", "Zebra"]
    with ThreadPoolExecutor(len(texts)) as pool:
        first = pool.submit(speak, client, model_id, input=texts[0])
        wait_for(lambda: len(jobs) == 1)
        with httpx.stream("POST", f"{url}/v1/audio/speech", json={"model": model_id, "voice": "default",
                          "input": "Leaving now.", "max_new_tokens": 400}) as leaving:
            assert leaving.status_code == 200
        wait_for(lambda: len(jobs) == 2 and jobs[1].cancelled.is_set())
        rest = [pool.submit(speak, client, model_id, input=t) for t in texts[1:]]
        wait_for(lambda: len(jobs) == 4)
        gate.set()
        got = [first.result()[1]] + [f.result()[1] for f in rest]
    assert sizes[:2] == [1, 2] and got == [library_wav(speech, text=t)[0] for t in texts]


def test_a_full_queue_is_503_and_an_upload_over_the_limit_413(speech, model_id, expected, monkeypatch):
    gate, real = threading.Event(), vita_core.tts.synthesize
    monkeypatch.setattr(vita_core.tts, "synthesize", lambda *a, **k: (gate.wait(30), real(*a, **k))[1])
    body = {"model": model_id, "voice": "default", "input": TEXT, **BUDGET}
    with serving(create_app(speech, max_queue=1, max_upload_mb=0.05)) as base:
        with httpx.stream("POST", f"{base}/v1/audio/speech", json=body) as held:
            busy = httpx.post(f"{base}/v1/audio/speech", json=body)  # the one slot is taken
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["code"] == "queue_full" and "--max-queue 1" in busy.json()["error"]["message"]
            gate.set()
            assert held.read() == expected[0]
        assert httpx.post(f"{base}/v1/audio/speech", json=body).content == expected[0]  # the slot was freed
        big = httpx.post(f"{base}/v1/audio/transcriptions", data={"model": model_id},
                         files={"file": ("big.wav", bytes(60_000))})
    assert big.status_code == 413 and big.json()["error"]["code"] == "file_too_large"
    assert "--max-upload-mb 0.05" in big.json()["error"]["message"]


@pytest.mark.parametrize("kw, param, words", [
    ({"speed": 1.5}, "speed", "leave speed at 1.0"),
    ({"response_format": "mp3"}, "response_format", "'wav', 'pcm' or 'flac'"),
    ({"stream_format": "sse"}, "stream_format", "'audio'"),
    ({"input": "  "}, "input", "input is empty"),
    ({"extra_body": {"mode": "warp"}}, "mode", "mode"),
    ({"extra_body": {"temperature": -1}}, "temperature", "temperature -1"),
    ({"extra_body": {"max_new_tokens": 0}}, "max_new_tokens", "at least 1"),
    ({"extra_body": {"pitch": 3}}, "pitch", "unknown parameter 'pitch'"),
])
def test_bad_speech_parameters_are_400_with_one_message(client, model_id, kw, param, words):
    with pytest.raises(openai.BadRequestError) as err:
        speak(client, model_id, **kw)
    body = err.value.body
    assert err.value.status_code == 400 and body["type"] == "invalid_request_error" and body["param"] == param
    assert words in body["message"] and "\n" not in body["message"]


def test_unknown_model_and_route_are_404_in_openai_shape(client, url):
    with pytest.raises(openai.NotFoundError) as err:
        speak(client, "gpt-4o-mini-tts")
    assert err.value.body["code"] == "model_not_found" and "GET /v1/models" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    r = httpx.get(f"{url}/v1/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"


def test_malformed_json_is_400(url):
    r = httpx.post(f"{url}/v1/audio/speech", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "the request body is not valid JSON"


def test_serve_help_names_the_routes():
    r = CliRunner().invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "/v1/audio/speech" in r.stdout and "--port" in r.stdout


@pytest.mark.parametrize("flag, words", [("--max-queue=0", "--max-queue 0 must be at least 1"),
                                         ("--request-timeout=0", "--request-timeout 0.0 must be above 0")])
def test_limits_are_checked_before_loading(tiny_checkpoint_f32, decoder_dir, no_model_load, flag, words):
    r = CliRunner().invoke(app, ["serve", "--model", str(tiny_checkpoint_f32), "--decoder-dir", str(decoder_dir), flag])
    assert r.exit_code == 1 and words in r.stderr


def test_a_port_in_use_fails_before_loading(tiny_checkpoint_f32, decoder_dir, no_model_load):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = CliRunner().invoke(app, ["serve", "--model", str(tiny_checkpoint_f32), "--decoder-dir", str(decoder_dir),
                                     "--port", str(port)])
    assert r.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in r.stderr and "--port" in r.stderr


def test_vita_serve_command_answers_until_terminated(tiny_checkpoint_f32, decoder_dir, expected, clean_speech_env):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1",
           "VITA_AUDIO_DECODER": str(decoder_dir)}  # the decoder folder comes from the environment, as tts's
    proc = subprocess.Popen([sys.executable, "-m", "vita_cli", "serve", "--model", str(tiny_checkpoint_f32),
                             "--device", "cpu", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.ConnectError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        data = speak(client, tiny_checkpoint_f32.name)[1]
        assert data[:44] == expected[0][:44] and len(data) == len(expected[0])  # the same codes (floats may differ)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
    assert f"serving {tiny_checkpoint_f32.name} on {base}" in " ".join(out.split())


needs_speech = pytest.mark.skipif(not SPOKEN.is_file(), reason="apt-get install pocketsphinx-testdata")


@needs_speech
def test_transcription_is_what_vita_asr_writes(client, model_id, tiny_checkpoint_f32, speech_tokenizer_dir, tmp_path):
    r = CliRunner().invoke(app, ["asr", str(SPOKEN), "--output-dir", str(tmp_path), "--model",
                                 str(tiny_checkpoint_f32), "--tokenizer-dir", str(speech_tokenizer_dir),
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    written = (tmp_path / f"{SPOKEN.stem}.txt").read_text()
    with SPOKEN.open("rb") as f:
        assert client.audio.transcriptions.create(file=f, model=model_id).text + "\n" == written
    with SPOKEN.open("rb") as f:
        assert client.audio.transcriptions.create(file=f, model=model_id, response_format="text") == written


@needs_speech
def test_transcription_srt_and_verbose_json(client, model_id, speech):
    t = transcribe(speech, read_audio(SPOKEN, 16000), 16000, name=SPOKEN.name)
    with SPOKEN.open("rb") as f:
        assert client.audio.transcriptions.create(file=f, model=model_id, response_format="srt") == render(t, "srt")
    with SPOKEN.open("rb") as f:
        verbose = client.audio.transcriptions.create(file=f, model=model_id, response_format="verbose_json")
    assert verbose.text == t.text and verbose.duration == pytest.approx(t.duration, abs=1e-3)
    assert [(s.start, s.text) for s in verbose.segments] == [(0.0, t.text)]


@pytest.mark.parametrize("upload, kw, param, words", [
    (("empty.wav", b""), {}, "file", "empty (0 bytes)"),
    (("notes.wav", b"these are not audio samples"), {}, None, "cannot read notes.wav as audio"),
    (("x.wav", None), {"response_format": "tsv"}, "response_format", "choose json, text"),
    (("x.wav", None), {"language": "en"}, None, "VITA-Audio-Plus"),
])
def test_bad_uploads_are_400_with_one_message(client, model_id, speech, upload, kw, param, words):
    name, data = upload
    if data is None:
        rng = np.random.default_rng(0)
        buffer = io.BytesIO()
        sf.write(buffer, 0.1 * rng.standard_normal(16000).astype(np.float32), 16000, format="WAV")
        data = buffer.getvalue()
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(file=(name, data), model=model_id, **kw)
    body = err.value.body
    assert err.value.status_code == 400 and body["param"] == param and words in body["message"]
    assert "\n" not in body["message"]


def test_transcription_of_an_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.audio.transcriptions.create(file=("x.wav", b"RIFF"), model="whisper-1")
    assert err.value.body["code"] == "model_not_found"


def test_a_server_without_audio_input_says_how_to_get_it(speech, model_id):
    with TestClient(create_app(replace(speech, encoder=None))) as local:
        r = local.post("/v1/audio/transcriptions", data={"model": model_id}, files={"file": ("x.wav", b"RIFF")})
    assert r.status_code == 400 and "--tokenizer-dir" in r.json()["error"]["message"]
