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
from contextlib import contextmanager

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


def mic_file(folder: Path, silence_after: float) -> Path:
    """Half a second of silence, the spoken sentence, `silence_after` seconds of silence: the 16-bit PCM wav
    Chromium's fake microphone plays, over and over."""
    spoken, rate = sf.read(SPOKEN, dtype="int16")
    path = folder / f"sentence_{silence_after:g}s.wav"
    sf.write(path, np.concatenate([np.zeros(rate // 2, np.int16), spoken, np.zeros(round(rate * silence_after), np.int16)]),
             rate, subtype="PCM_16")
    return path


@contextmanager
def chromium(mic: Path):
    """Headless Debian Chromium whose microphone plays `mic` (and which grants the page its use)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={mic}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, for failure messages
    driver = webdriver.Chrome(options=options, service=Service(str(DRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One sentence, then 12 s of silence: a turn is over long before the recording speaks again."""
    with chromium(mic_file(tmp_path_factory.mktemp("mic"), 12.0)) as driver:
        yield driver


class FakeRealtime:
    """/v1/realtime speaking the OpenAI Realtime events, answering each turn with a tone of `answers[i]` seconds.

    A turn ends where its energy VAD hears the end of speech (server_vad), or, without turn detection
    (push-to-talk), at input_audio_buffer.commit + response.create. Speech that starts during an answer
    cancels it (barge-in). It records what the page sent (session.update, the speech its VAD cut, the
    audio committed) and sends response.done with the stage times it measured (ms after the end of speech).
    """

    FRAME = RATE // 50  # 20 ms

    def __init__(self, answers: tuple[float, ...] = (1.0,)) -> None:
        self.answers = answers
        self.sessions: list[dict] = []
        self.heard_ms: list[int] = []  # length of each utterance the VAD cut
        self.committed_ms: float | None = None  # audio in the buffer when the page committed it
        self.cancelled: list[str] = []
        self.pending, self.seen, self.start, self.quiet = np.zeros(0, np.float32), 0, None, 0
        self.responses: list[asyncio.Task] = []
        self.barge_in = asyncio.Event()

    async def __call__(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"type": "session.created", "session": {"id": "sess_1", "object": "realtime.session"}})
        buffered = 0
        try:
            while True:
                event = await websocket.receive_json()
                kind = event["type"]
                if kind == "session.update":
                    self.sessions.append(event["session"])
                    await websocket.send_json({"type": "session.updated", "session": event["session"]})
                elif kind == "input_audio_buffer.append" and len(self.responses) < len(self.answers):
                    pcm = np.frombuffer(base64.b64decode(event["audio"]), "<i2").astype(np.float32) / 32768
                    buffered += len(pcm)
                    if self.sessions[-1]["turn_detection"]:
                        await self.detect(websocket, pcm)
                elif kind == "input_audio_buffer.clear":
                    buffered = 0
                    await websocket.send_json({"type": "input_audio_buffer.cleared"})
                elif kind == "input_audio_buffer.commit":
                    self.committed_ms, buffered = 1000 * buffered / RATE, 0
                    await websocket.send_json({"type": "input_audio_buffer.committed", "item_id": "item_1"})
                elif kind == "response.create":
                    self.respond(websocket)
                elif kind == "response.cancel":
                    self.barge_in.set()
        except WebSocketDisconnect:
            for task in self.responses:
                task.cancel()

    def respond(self, websocket: WebSocket) -> None:
        if len(self.responses) < len(self.answers):
            self.barge_in.clear()
            n = len(self.responses)
            self.responses.append(asyncio.create_task(self.answer(websocket, f"resp_{n + 1}", self.answers[n])))

    async def detect(self, websocket: WebSocket, pcm: np.ndarray) -> None:
        """Loud 20 ms frames start speech (cancelling an answer), 500 ms of quiet ends it and starts one."""
        self.pending = np.concatenate([self.pending, pcm])
        while len(self.pending) >= self.FRAME:
            frame, self.pending = self.pending[: self.FRAME], self.pending[self.FRAME:]
            self.seen += 20
            loud = float(np.sqrt(np.mean(frame**2))) > 0.015
            if self.start is None and loud:
                self.start, self.quiet = self.seen - 20, 0
                self.barge_in.set()
                await websocket.send_json({"type": "input_audio_buffer.speech_started",
                                           "audio_start_ms": self.start, "item_id": "item_1"})
            elif self.start is not None:
                self.quiet = 0 if loud else self.quiet + 20
                if self.quiet >= 500:
                    end = self.seen - self.quiet
                    self.heard_ms.append(end - self.start)
                    self.start = None
                    await websocket.send_json({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end,
                                               "item_id": "item_1"})
                    await websocket.send_json({"type": "input_audio_buffer.committed", "item_id": "item_1"})
                    self.respond(websocket)

    async def answer(self, websocket: WebSocket, rid: str, seconds: float) -> None:
        stopped = time.perf_counter()
        since = lambda: round(1000 * (time.perf_counter() - stopped), 1)  # noqa: E731
        ids = {"response_id": rid, "item_id": f"item_{rid}", "output_index": 0, "content_index": 0}
        stages = {"audio_encoded": since()}
        await websocket.send_json({"type": "response.created",
                                   "response": {"id": rid, "object": "realtime.response", "status": "in_progress"}})
        await websocket.send_json({"type": "response.audio_transcript.delta", **ids, "delta": "A tone "})
        stages["first_text_token"] = since()
        status = "completed"
        for chunk in np.array_split(np.resize(TONE, round(seconds * RATE)), round(seconds * 10)):
            if self.barge_in.is_set():
                status = "cancelled"
                self.cancelled.append(rid)
                break
            stages.setdefault("first_audio_codes", since())
            await websocket.send_json({"type": "response.audio.delta", **ids,
                                       "delta": base64.b64encode(chunk.tobytes()).decode()})
            stages.setdefault("first_sound_out", since())
            await asyncio.sleep(0.05)  # 100 ms of audio every 50 ms, as a generator streams it
        else:
            await websocket.send_json({"type": "response.audio_transcript.delta", **ids, "delta": "for you."})
            await websocket.send_json({"type": "response.audio.done", **ids})
        await websocket.send_json({"type": "response.done", "response": {
            "id": rid, "object": "realtime.response", "status": status,
            "vita_timings": {f"{k}_ms": v for k, v in stages.items()}}})


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


def finished_turn(driver, index: int = 1) -> dict[str, str | None]:
    """The latency panel's row of turn `index` once the page heard, answered and played it."""
    row = f"#latency tbody tr[data-turn='{index}']"
    wait_for(driver, lambda d: d.find_elements("css selector", f"{row}[data-complete=yes]"),
             f"turn {index} never completed (heard, answered and played)")
    cells = {td.get_attribute("data-key"): td.get_attribute("data-value")
             for td in driver.find_elements("css selector", f"{row} td")}
    print(f"\nbrowser latency panel, turn {index}: {cells}")
    return cells


def check_answer_played(driver, cells: dict[str, str | None]) -> None:
    """The stand-in's whole tone was received and played, and the latency panel filled."""
    assert int(stat(driver, "talk-received", "samples")) == len(TONE)
    assert abs(int(stat(driver, "talk-played")) - 1000) <= 2
    for key in ("audio_encoded", "first_text_token", "first_audio_codes", "first_sound_out", "first_heard"):
        assert float(cells[key]) >= 0, key
    assert int(cells["underruns"]) == int(stat(driver, "talk-underruns"))
    assert "A tone for you." in driver.find_element("id", "transcript").text


def realtime_app(speech, fake: FakeRealtime):
    """vita's app with `fake` as its /v1/realtime (in place of vita's own, where the server has one)."""
    app = create_app(speech)
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/v1/realtime"]
    app.add_api_websocket_route("/v1/realtime", fake)
    return app


@needs_browser
def test_conversation_hears_the_microphone_and_plays_the_answer(browser, speech, tmp_path):
    fake = FakeRealtime()
    with serving(realtime_app(speech, fake)) as base:
        open_page(browser, base)
        browser.find_element("css selector", "#mode option[value=turbo]").click()
        browser.find_element("id", "talk-max-tokens").send_keys("40")
        browser.find_element("id", "talk-connect").click()
        cells = finished_turn(browser)
        browser.save_screenshot(str(tmp_path / "conversation.png"))
        check_answer_played(browser, cells)
        browser.find_element("id", "talk-connect").click()  # disconnect
    session = fake.sessions[-1]
    assert session["mode"] == "turbo" and session["turn_detection"]["type"] == "server_vad"
    assert session["max_response_output_tokens"] == 40
    [heard_ms] = fake.heard_ms
    assert abs(heard_ms / 1000 - sf.info(SPOKEN).duration) < 0.8  # the page sent the sentence at 24 kHz
    assert float(cells["spoke"]) == heard_ms / 1000 and fake.committed_ms is None
    assert (tmp_path / "conversation.png").stat().st_size > 0


@needs_browser
def test_push_to_talk_commits_what_was_held_and_plays_the_answer(browser, speech, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    fake = FakeRealtime()
    with serving(realtime_app(speech, fake)) as base:
        open_page(browser, base)
        browser.find_element("css selector", "input[name=turns][value=ptt]").click()
        browser.find_element("id", "talk-connect").click()
        wait_for(browser, lambda d: stat(d, "talk-state") == "connected", "the conversation never connected")
        hold = browser.find_element("id", "talk-hold")
        ActionChains(browser).click_and_hold(hold).perform()
        wait_for(browser, lambda d: int(stat(d, "talk-sent")) >= 1500, "the held microphone was never sent")
        ActionChains(browser).release(hold).perform()
        cells = finished_turn(browser)
        check_answer_played(browser, cells)
        browser.save_screenshot(str(tmp_path / "push_to_talk.png"))
    assert fake.sessions[-1]["turn_detection"] is None and fake.heard_ms == []
    assert fake.sessions[-1]["max_response_output_tokens"] == "inf" and "mode" not in fake.sessions[-1]
    assert fake.committed_ms == pytest.approx(int(stat(browser, "talk-sent")), abs=0.5)  # all held audio, no more
    assert float(cells["spoke"]) >= 1.5


@needs_browser
def test_speech_during_an_answer_cuts_it(speech, tmp_path):
    fake = FakeRealtime(answers=(10.0, 1.0))  # the long answer still streams when the recording speaks again
    with chromium(mic_file(tmp_path, 2.0)) as browser, serving(realtime_app(speech, fake)) as base:
        open_page(browser, base)
        browser.find_element("id", "talk-connect").click()
        first = finished_turn(browser, 1)
        finished_turn(browser, 2)
        browser.save_screenshot(str(tmp_path / "barge_in.png"))
        answers = browser.find_elements("css selector", "#transcript p.assistant")
        assert [a.get_attribute("class") for a in answers] == ["assistant interrupted", "assistant"]
        assert answers[1].text == "A tone for you."
        received, played = int(stat(browser, "talk-received")), int(stat(browser, "talk-played"))
    assert fake.cancelled == ["resp_1"] and len(fake.heard_ms) == 2
    assert received < 11000 and played < received - 1000  # what was queued of the cut answer was dropped
    assert first["first_heard"] is not None and first["underruns"] is not None


@needs_browser
def test_conversation_with_vitas_own_realtime_endpoint(browser, speech, tmp_path):
    """The same turn against vita's /v1/realtime (silero VAD, the tiny model's answer) where the server has it."""
    app = create_app(speech)
    if not any(getattr(route, "path", None) == "/v1/realtime" for route in app.routes):
        pytest.skip("this vita serve has no /v1/realtime yet (it lands with the realtime branch)")
    with serving(app) as base:
        open_page(browser, base)
        browser.find_element("css selector", "#mode option[value=turbo]").click()
        browser.find_element("id", "talk-max-tokens").send_keys("40")  # tiny random models never stop by themselves
        browser.find_element("id", "talk-connect").click()
        cells = finished_turn(browser)
        browser.save_screenshot(str(tmp_path / "vita_realtime.png"))
        browser.find_element("id", "talk-connect").click()
    assert browser.find_element("id", "error").text == ""
    assert abs(float(cells["spoke"]) - sf.info(SPOKEN).duration) < 0.8  # silero heard the sentence at 24 kHz
    samples = int(stat(browser, "talk-received", "samples"))
    assert samples > 0 and abs(int(stat(browser, "talk-played")) - round(1000 * samples / RATE)) <= 2
    for key in ("audio_encoded", "first_text_token", "first_audio_codes", "first_sound_out", "first_heard"):
        assert float(cells[key]) > 0, key
