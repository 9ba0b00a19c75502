"""The browser client at `/` in a real headless Chromium (Debian chromium + chromium-driver, via Selenium).

Chromium's fake microphone reads a real spoken recording (pocketsphinx-testdata); the page's own
counters (elements with ids, raw numbers in data-value) say what it received and played.
Until /v1/realtime lands, the conversation test serves a small stand-in speaking the OpenAI Realtime
events for one turn (an energy VAD on the appended audio, a tone as the answer).
"""

import asyncio
import base64
import time
from pathlib import Path

import re

import numpy as np
import pytest
import soundfile as sf
from fastapi import WebSocket, WebSocketDisconnect
from fastapi.testclient import TestClient

from test_serve import SPOKEN, TEXT, library_wav, serving, speech, speech_tokenizer_dir  # noqa: F401 (fixtures)
from vita_server import create_app
from vita_server.web import STATIC

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM.is_file() and DRIVER.is_file() and SPOKEN.is_file()),
                                   reason="apt-get install chromium chromium-driver pocketsphinx-testdata")
RATE = 24000  # the Realtime protocol's pcm16 rate
TONE = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype("<i2")  # the stand-in's 1 s answer
WAIT = 30  # seconds any one step may take on a busy 2-core machine


@pytest.fixture(scope="module")
def fake_mic(tmp_path_factory):
    """The spoken sentence between silences, as the 16-bit PCM wav Chromium's fake microphone loops."""
    spoken, rate = sf.read(SPOKEN, dtype="int16")
    silence = np.zeros(rate, dtype=np.int16)
    path = tmp_path_factory.mktemp("mic") / "sentence.wav"
    sf.write(path, np.concatenate([silence[: rate // 2], spoken, silence, silence, silence]), rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def browser(fake_mic):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={fake_mic}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, for failure messages
    driver = webdriver.Chrome(options=options, service=Service(str(DRIVER)))
    yield driver
    driver.quit()


class FakeRealtime:
    """/v1/realtime for one turn: speech_started/stopped from the audio's loudness, then a tone answer.

    It records what the page sent (its session.update and the seconds of speech it heard), and sends
    response.done with the stage times it measured itself (ms after it detected the end of speech).
    """

    FRAME = RATE // 50  # 20 ms

    def __init__(self) -> None:
        self.sessions: list[dict] = []
        self.heard_ms: int | None = None

    async def __call__(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"type": "session.created", "session": {"id": "sess_1", "object": "realtime.session"}})
        pending, seen, start, quiet = np.zeros(0, np.float32), 0, None, 0
        try:
            while True:
                event = await websocket.receive_json()
                if event["type"] == "session.update":
                    self.sessions.append(event["session"])
                    await websocket.send_json({"type": "session.updated", "session": event["session"]})
                elif event["type"] == "input_audio_buffer.append" and self.heard_ms is None:
                    pcm = np.frombuffer(base64.b64decode(event["audio"]), "<i2").astype(np.float32) / 32768
                    pending = np.concatenate([pending, pcm])
                    while len(pending) >= self.FRAME and self.heard_ms is None:
                        frame, pending = pending[: self.FRAME], pending[self.FRAME:]
                        seen += 20
                        loud = float(np.sqrt(np.mean(frame**2))) > 0.015
                        if start is None and loud:
                            start = seen - 20
                            await websocket.send_json({"type": "input_audio_buffer.speech_started",
                                                       "audio_start_ms": start, "item_id": "item_1"})
                        elif start is not None:
                            quiet = 0 if loud else quiet + 20
                            if quiet >= 500:
                                self.heard_ms = seen - quiet - start
                                await self.answer(websocket, seen - quiet)
        except WebSocketDisconnect:
            return

    @staticmethod
    async def answer(websocket: WebSocket, end_ms: int) -> None:
        stopped = time.perf_counter()
        since = lambda: round(1000 * (time.perf_counter() - stopped), 1)  # noqa: E731
        ids = {"response_id": "resp_1", "item_id": "item_2", "output_index": 0, "content_index": 0}
        await websocket.send_json({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms,
                                   "item_id": "item_1"})
        await websocket.send_json({"type": "input_audio_buffer.committed", "item_id": "item_1"})
        stages = {"audio_encoded": since()}
        await websocket.send_json({"type": "response.created",
                                   "response": {"id": "resp_1", "object": "realtime.response", "status": "in_progress"}})
        await websocket.send_json({"type": "response.audio_transcript.delta", **ids, "delta": "A tone "})
        stages["first_text_token"] = since()
        for i, chunk in enumerate(np.array_split(TONE, 10)):
            stages.setdefault("first_audio_codes", since())
            await websocket.send_json({"type": "response.audio.delta", **ids,
                                       "delta": base64.b64encode(chunk.tobytes()).decode()})
            stages.setdefault("first_sound_out", since())
            await asyncio.sleep(0.05)  # 100 ms of audio every 50 ms, as a generator streams it
        await websocket.send_json({"type": "response.audio_transcript.delta", **ids, "delta": "for you."})
        await websocket.send_json({"type": "response.audio.done", **ids})
        await websocket.send_json({"type": "response.done", "response": {
            "id": "resp_1", "object": "realtime.response", "status": "completed", "stages_ms": stages}})


def stat(driver, element_id: str, attribute: str = "value") -> str:
    return driver.find_element("id", element_id).get_attribute(f"data-{attribute}")


def wait_for(driver, condition, what: str):
    """Poll until `condition(driver)`; on timeout, fail with the page's counters, error line and console."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(condition)
    except TimeoutException:
        shown = {el.get_attribute("id"): el.text for el in driver.find_elements("css selector", "output[id]")}
        console = [entry["message"] for entry in driver.get_log("browser")]
        pytest.fail(f"{what}; page: {shown}; console: {console}; transcript: "
                    f"{driver.find_element('id', 'transcript').text!r}")


def open_page(driver, base: str) -> None:
    driver.get(base + "/")
    wait_for(driver, lambda d: stat(d, "model"), "the page never listed the server's model")


def test_the_page_and_every_file_it_loads_come_from_vita(speech):
    with TestClient(create_app(speech)) as local:
        page = local.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        wanted, seen = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text), set()
        while wanted:  # the page's files, then every module they import
            path = wanted.pop()
            seen.add(path)
            r = local.get(path)
            assert r.status_code == 200, path
            kind = {"js": "text/javascript", "css": "text/css"}[path.rsplit(".", 1)[1]]
            assert r.headers["content-type"].startswith(kind), path
            imported = re.findall(r"from '\./([\w.]+)'|addModule\('/static/([\w.]+)'\)", r.text)
            wanted += [f"/static/{name}" for pair in imported for name in pair if name and f"/static/{name}" not in seen]
    assert seen == {f"/static/{f.name}" for f in STATIC.iterdir() if f.suffix in (".js", ".css")}
    for f in STATIC.iterdir():
        assert not re.search(r"https?://", f.read_text()), f"{f.name} names an outside address"


@needs_browser
def test_tts_box_streams_and_plays_the_served_audio(browser, speech, tmp_path):
    wav, result = library_wav(speech)
    with serving(create_app(speech)) as base:
        open_page(browser, base)
        text = browser.find_element("id", "tts-text")
        text.clear()
        text.send_keys(TEXT)
        for field, value in (("tts-max-tokens", "12"), ("tts-seed", "0")):
            browser.find_element("id", field).clear()
            browser.find_element("id", field).send_keys(value)
        browser.find_element("id", "tts-speak").click()
        wait_for(browser, lambda d: stat(d, "tts-state") in ("played", "error"), "the TTS audio never finished playing")
        browser.save_screenshot(str(tmp_path / "tts.png"))
    assert stat(browser, "tts-state") == "played", browser.find_element("id", "error").text
    samples = int(stat(browser, "tts-received", "samples"))
    assert samples == (len(wav) - 44) // 2 == result.samples > 0  # every sample the server streamed
    received_ms, played_ms = int(stat(browser, "tts-received")), int(stat(browser, "tts-played"))
    assert received_ms == round(1000 * samples / speech.decoder.sample_rate) and abs(played_ms - received_ms) <= 2
    assert stat(browser, "tts-first-audio") != ""
    assert (tmp_path / "tts.png").stat().st_size > 0


@needs_browser
def test_conversation_hears_the_microphone_and_plays_the_answer(browser, speech, tmp_path):
    fake = FakeRealtime()
    app = create_app(speech)
    app.add_api_websocket_route("/v1/realtime", fake)
    with serving(app) as base:
        open_page(browser, base)
        browser.find_element("css selector", "#mode option[value=turbo]").click()
        browser.find_element("id", "talk-connect").click()
        row = "#latency tbody tr[data-turn='1']"
        wait_for(browser, lambda d: d.find_elements("css selector", f"{row}[data-complete=yes]"),
                 "the first turn never completed (heard, answered and played)")
        browser.save_screenshot(str(tmp_path / "conversation.png"))
        cells = {td.get_attribute("data-key"): td.get_attribute("data-value")
                 for td in browser.find_elements("css selector", f"{row} td")}
        print(f"\nbrowser latency panel, turn 1: {cells}")
        browser.find_element("id", "talk-connect").click()  # disconnect
    assert fake.sessions and fake.sessions[-1]["mode"] == "turbo"
    assert fake.sessions[-1]["turn_detection"]["type"] == "server_vad"
    spoken = sf.info(SPOKEN).duration
    assert abs(fake.heard_ms / 1000 - spoken) < 0.8  # the page sent the sentence at 24 kHz, in time
    assert int(stat(browser, "talk-received", "samples")) == len(TONE)
    assert abs(int(stat(browser, "talk-played")) - 1000) <= 2  # the whole answer was played
    for key in ("audio_encoded", "first_text_token", "first_audio_codes", "first_sound_out", "first_heard"):
        assert float(cells[key]) >= 0, key
    assert int(cells["underruns"]) == int(stat(browser, "talk-underruns")) >= 0
    assert "A tone for you." in browser.find_element("id", "transcript").text
    assert (tmp_path / "conversation.png").stat().st_size > 0
