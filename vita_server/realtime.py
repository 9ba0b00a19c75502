"""WebSocket /v1/realtime: OpenAI's Realtime event protocol for one spoken conversation, over vita chat's parts.

The client appends base64 PCM16 at 24 kHz (`input_audio_buffer.append`); it is resampled to 16 kHz
and, with `turn_detection` server_vad (the default), cut by the same silero segmenter as `vita
chat` (`input_audio_buffer.speech_started` / `speech_stopped`, then `committed`, then a response).
With `turn_detection: null` the client commits and asks for the response itself. Answers are
`SpokenAnswer`s of the session's `Conversation` (the exact token history, as `vita chat` keeps it),
generated on the server's model thread and sent as `response.audio.delta` (PCM16, 24 kHz) and
`response.audio_transcript.delta` (`response.text.delta` for a text-only session). Speech heard
during an answer cancels it (barge-in) and `response.cancel` does too: `response.done` says
`cancelled`. Every `response.done` carries vita's stage timings under `response.vita_timings`
(ms after the end of the user's speech, as the `vita chat` panel: audio encoded, first text token,
first audio code, first sound out = first audio delta sent). A frame that is not a valid event is
answered with an `error` event and the session goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect

from vita_core.chat.answer import STAGES, SpokenAnswer
from vita_core.chat.loop import DEFAULT_SYSTEM_PROMPT, Conversation
from vita_core.chat.vad import RATE, SileroSegmenter, SpeechStart, Utterance
from vita_core.errors import VitaError
from vita_server.audio import Pcm16In, Pcm16Out, b64, b64decode
from vita_server.errors import ApiError
from vita_server.jobs import Job, Runtime, TimedOut
from vita_server.realtime_session import DEFAULT_VAD, INF_TOKENS, Refused, check_modalities, updated

log = logging.getLogger("vita_server")
FRAME = 512  # silero's frame at 16 kHz
MIN_COMMIT = RATE // 10  # OpenAI refuses to commit less than 100 ms


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass
class _Done:
    stop_reason: str
    input_tokens: int
    output_tokens: int


@dataclass
class _Response:
    id: str
    item_id: str
    since: float  # perf_counter at the end of the user's speech
    spoken: bool
    job: Job | None = None
    task: asyncio.Task | None = None
    text: str = ""
    sent_audio: bool = False
    usage: dict[str, int] = field(default_factory=dict)
    stages_ms: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(STAGES))


class RealtimeSession:
    """One WebSocket's conversation: its settings, input buffer, segmenter and the answer in flight."""

    def __init__(self, rt: Runtime, ws: WebSocket) -> None:
        self.rt, self.ws, self.speech = rt, ws, rt.speech
        self.out: asyncio.Queue = asyncio.Queue()
        self.sent = 0
        self.session: dict[str, Any] = {
            "id": _new_id("sess"), "object": "realtime.session", "model": rt.model_id,
            "modalities": ["text", "audio"], "voice": "default", "instructions": DEFAULT_SYSTEM_PROMPT,
            "input_audio_format": "pcm16", "output_audio_format": "pcm16", "turn_detection": dict(DEFAULT_VAD),
            "temperature": self.speech.sampling.temperature, "max_response_output_tokens": "inf",
            "mode": self.speech.mode.name}
        self.conversation = Conversation(self.speech, DEFAULT_SYSTEM_PROMPT)
        self.answered = 0
        self.resampler = Pcm16In(RATE)
        self.buffer: list[np.ndarray] = []  # 16 kHz audio since the last commit
        self.rest = np.zeros(0, np.float32)  # appended samples not yet a whole VAD frame
        self.fed = 0  # samples given to the segmenter in all
        self.segmenter: SileroSegmenter | None = None
        self.speech_item: str | None = None
        self.last_item: str | None = None
        self.pending: tuple[np.ndarray, float] | None = None  # committed audio and when it ended
        self.active: _Response | None = None

    # ---- sending ----

    def emit(self, kind: str, **fields: Any) -> None:
        self.sent += 1
        self.out.put_nowait({"event_id": f"event_{self.sent}", "type": kind, **fields})

    def refuse(self, exc: Refused, event_id: Any = None) -> None:
        self.emit("error", error={"type": "invalid_request_error", "code": exc.code, "message": exc.message,
                                  "param": exc.param, "event_id": event_id})

    async def _sender(self) -> None:
        try:
            while True:
                event = await self.out.get()
                await self.ws.send_text(json.dumps(event))
        except (WebSocketDisconnect, RuntimeError):  # the client left: the receiving side ends the session
            pass

    # ---- the session ----

    async def run(self) -> None:
        """Serve the socket until the client leaves; an answer in flight is cancelled then."""
        self.segmenter = await asyncio.to_thread(self._segmenter, self.session["turn_detection"])
        sender = asyncio.create_task(self._sender())
        self.emit("session.created", session=self.session)
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self.handle(message.get("text"))
        except WebSocketDisconnect:
            pass
        finally:
            if self.active is not None and self.active.job is not None:
                self.active.job.cancel()
                self.rt.release(self.active.job)
            sender.cancel()

    async def handle(self, text: str | None) -> None:
        """One client frame: a JSON event, or an `error` event back."""
        event: Any = None
        try:
            if text is None:
                raise Refused("invalid_event", "binary frames are not events: send JSON text frames")
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                raise Refused("invalid_json", "the frame is not valid JSON: send one JSON event per frame") from None
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                raise Refused("invalid_event", "an event is a JSON object with a string \"type\"", "type")
            handler = self.handlers.get(event["type"])
            if handler is None:
                raise Refused("invalid_event", f"unknown event type {event['type']!r}; vita takes "
                                               f"{', '.join(self.handlers)}", "type")
            await handler(self, event)
        except Refused as exc:
            self.refuse(exc, event.get("event_id") if isinstance(event, dict) else None)

    async def session_update(self, event: dict[str, Any]) -> None:
        given = event.get("session")
        if not isinstance(given, dict):
            raise Refused("invalid_value", "session.update needs a \"session\" object", "session")
        new, speech = updated(self.session, given, self.speech, self.answered)
        if new["turn_detection"] != self.session["turn_detection"]:
            self.segmenter = await asyncio.to_thread(self._segmenter, new["turn_detection"])
            self.rest, self.fed, self.speech_item = np.zeros(0, np.float32), 0, None
        if new["instructions"] != self.session["instructions"]:
            self.conversation = Conversation(self.speech, new["instructions"] or None)
        self.session, self.speech = new, speech
        self.emit("session.updated", session=self.session)

    @staticmethod
    def _segmenter(vad: dict[str, Any] | None) -> SileroSegmenter | None:
        if vad is None:
            return None
        return SileroSegmenter(threshold=vad["threshold"], min_silence_ms=vad["silence_duration_ms"],
                               speech_pad_ms=vad["prefix_padding_ms"])

    # ---- input audio ----

    async def append(self, event: dict[str, Any]) -> None:
        data = b64decode(event.get("audio"))
        if data is None:
            raise Refused("invalid_value", "input_audio_buffer.append needs \"audio\": base64 PCM16, 24 kHz mono",
                          "audio")
        wav = self.resampler.push(data)
        self.buffer.append(wav)
        if self.segmenter is not None:
            for segment, at in await asyncio.to_thread(self._feed, wav):
                await self._segment(segment, at)

    def _feed(self, wav: np.ndarray) -> list[tuple[SpeechStart | Utterance, int]]:
        """Whole 512-sample frames through the segmenter (off the event loop); what it found and where."""
        audio, found = np.concatenate([self.rest, wav]), []
        whole = audio.size - audio.size % FRAME
        for start in range(0, whole, FRAME):
            self.fed += FRAME
            segment = self.segmenter.feed(audio[start:start + FRAME])
            if segment is not None:
                found.append((segment, self.fed))
        self.rest = audio[whole:]
        return found

    async def _segment(self, segment: SpeechStart | Utterance, at: int) -> None:
        vad = self.session["turn_detection"]
        if isinstance(segment, SpeechStart):
            self.speech_item = _new_id("item")
            self.emit("input_audio_buffer.speech_started", audio_start_ms=1000 * at // RATE, item_id=self.speech_item)
            if self.active is not None and vad["interrupt_response"]:
                self.cancel_active("turn_detected")
            return
        item = self.speech_item or _new_id("item")
        self.emit("input_audio_buffer.speech_stopped", audio_end_ms=1000 * at // RATE, item_id=item)
        self.buffer, self.speech_item = [], None
        self._commit(segment.audio, segment.end_time, item)
        if vad["create_response"] and self.active is None:
            self.start_response()

    def _commit(self, audio: np.ndarray, end: float, item: str) -> None:
        self.emit("input_audio_buffer.committed", previous_item_id=self.last_item, item_id=item)
        self.emit("conversation.item.created", previous_item_id=self.last_item, item={
            "id": item, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}]})
        self.last_item = item
        held = self.pending[0] if self.pending is not None else np.zeros(0, np.float32)
        self.pending = (np.concatenate([held, audio]), end)

    async def commit(self, _event: dict[str, Any]) -> None:
        audio = np.concatenate(self.buffer) if self.buffer else np.zeros(0, np.float32)
        if audio.size < MIN_COMMIT:
            raise Refused("input_audio_buffer_commit_empty", f"the input audio buffer holds "
                          f"{1000 * audio.size // RATE} ms; append at least 100 ms of audio before committing")
        self._reset_input()
        self._commit(audio, time.perf_counter(), _new_id("item"))

    async def clear(self, _event: dict[str, Any]) -> None:
        self._reset_input()
        self.emit("input_audio_buffer.cleared")

    def _reset_input(self) -> None:
        self.buffer, self.rest, self.speech_item = [], np.zeros(0, np.float32), None
        if self.segmenter is not None:
            self.segmenter.reset()

    # ---- responses ----

    async def response_create(self, event: dict[str, Any]) -> None:
        if self.active is not None:
            raise Refused("conversation_already_has_active_response",
                          f"response {self.active.id} is still in progress; wait for its response.done or cancel it")
        options = event.get("response") or {}
        if not isinstance(options, dict) or set(options) - {"modalities"}:
            raise Refused("invalid_value", "response.create takes only response.modalities in vita", "response")
        if self.pending is None:
            raise Refused("input_audio_buffer_empty", "nothing to answer: append audio and commit it (server VAD "
                                                      "commits by itself) before response.create")
        modalities = check_modalities(options.get("modalities", self.session["modalities"]), "response.modalities")
        self.start_response(modalities)

    async def response_cancel(self, _event: dict[str, Any]) -> None:
        if self.active is None:
            raise Refused("response_cancel_not_active", "there is no response in progress to cancel")
        self.cancel_active("client_cancelled")

    def start_response(self, modalities: list[str] | None = None) -> None:
        audio, since = self.pending
        spoken = "audio" in (modalities or self.session["modalities"])
        r = _Response(_new_id("resp"), _new_id("item"), since, spoken)
        try:
            r.job = self.rt.start(self._work(r, audio))
        except ApiError as exc:  # the queue is full: the audio stays committed for a later response.create
            self.refuse(Refused(exc.code or "server_error", exc.message))
            return
        self.pending, self.active, self.answered = None, r, self.answered + 1
        self.emit("response.created", response=self._response(r, "in_progress", None))
        self.emit("response.output_item.added", response_id=r.id, output_index=0, item=self._item(r, "in_progress"))
        r.task = asyncio.create_task(self._forward(r))

    def _work(self, r: _Response, audio: np.ndarray):
        speech, conversation = self.speech, self.conversation
        tokens = self.session["max_response_output_tokens"]
        budget = INF_TOKENS if tokens == "inf" else tokens
        sampling = replace(speech.sampling, temperature=self.session["temperature"])

        def run(job: Job) -> None:
            part = speech.audio_part(audio, RATE, f"item {r.item_id}")
            r.stages_ms["audio_encoded"] = 1000 * (time.perf_counter() - r.since)
            prompt = conversation.prompt(part)
            answer = SpokenAnswer(speech, prompt, conversation.embeds(prompt, part), sampling, budget, since=r.since,
                                  spoken=r.spoken, stages_ms=r.stages_ms)
            out = Pcm16Out(int(speech.decoder.sample_rate))
            try:
                for step in answer:
                    data = out.push(step.pcm, last=step.final) if r.spoken and (step.pcm.size or step.final) else b""
                    if step.text or data:
                        job.put((step.text, data))
                    else:
                        job.check()
            finally:  # the history holds what was said, however the answer ended (as vita chat's)
                conversation.commit(prompt, part, answer.ids)
            job.put(_Done(answer.stop_reason, len(prompt), len(answer.ids)))

        return run

    async def _forward(self, r: _Response) -> None:
        """The job's steps as response events; the end as response.done (unless it was cancelled meanwhile)."""
        kind = "response.audio_transcript.delta" if r.spoken else "response.text.delta"
        common = {"response_id": r.id, "item_id": r.item_id, "output_index": 0, "content_index": 0}
        try:
            async for item in r.job.items():
                if r.job.cancelled.is_set():
                    return
                if isinstance(item, _Done):
                    r.usage = {"input_tokens": item.input_tokens, "output_tokens": item.output_tokens,
                               "total_tokens": item.input_tokens + item.output_tokens}
                    self.finish(r, "completed" if item.stop_reason == "stop" else "incomplete", "max_output_tokens")
                    return
                text, data = item
                if text:
                    r.text += text
                    self.emit(kind, delta=text, **common)
                if data:
                    if not r.sent_audio:
                        r.sent_audio = True
                        r.stages_ms["first_sound_out"] = 1000 * (time.perf_counter() - r.since)
                    self.emit("response.audio.delta", delta=b64(data), **common)
        except TimedOut:
            if not r.job.cancelled.is_set():
                self.finish(r, "incomplete", "request_timeout")
        except VitaError as exc:  # e.g. a commit too short to give any speech codes
            if not r.job.cancelled.is_set():
                self.finish(r, "failed", "error", str(exc))
        except Exception as exc:
            log.exception("realtime response %s failed", r.id)
            if not r.job.cancelled.is_set():
                self.finish(r, "failed", "error", f"the server failed generating the answer ({type(exc).__name__})")

    def cancel_active(self, reason: str) -> None:
        r = self.active
        r.job.cancel()
        self.rt.release(r.job)
        self.finish(r, "cancelled", reason)

    def finish(self, r: _Response, status: str, reason: str | None = None, message: str | None = None) -> None:
        """Close response r: its done events, in OpenAI's order, with vita's stage timings."""
        if self.active is r:
            self.active = None
        common = {"response_id": r.id, "item_id": r.item_id, "output_index": 0, "content_index": 0}
        if r.spoken:
            self.emit("response.audio.done", **common)
            self.emit("response.audio_transcript.done", transcript=r.text, **common)
        else:
            self.emit("response.text.done", text=r.text, **common)
        item = self._item(r, "completed" if status == "completed" else "incomplete")
        self.emit("response.output_item.done", response_id=r.id, output_index=0, item=item)
        details = None if status == "completed" else {"type": status, "reason": reason}
        if message is not None:
            details["error"] = {"type": "server_error", "message": message}
        self.emit("response.done", response=self._response(r, status, details, [item]))

    def _item(self, r: _Response, status: str) -> dict[str, Any]:
        content = {"type": "audio", "transcript": r.text} if r.spoken else {"type": "text", "text": r.text}
        return {"id": r.item_id, "object": "realtime.item", "type": "message", "role": "assistant", "status": status,
                "content": [content] if r.text or r.sent_audio else []}

    @staticmethod
    def _response(r: _Response, status: str, details: dict | None, output: list | None = None) -> dict[str, Any]:
        timings = {f"{k}_ms": None if v is None else round(v, 1) for k, v in r.stages_ms.items()}
        return {"id": r.id, "object": "realtime.response", "status": status, "status_details": details,
                "output": output or [], "usage": r.usage or None, "vita_timings": timings}

    handlers = {"session.update": session_update, "input_audio_buffer.append": append,
                "input_audio_buffer.commit": commit, "input_audio_buffer.clear": clear,
                "response.create": response_create, "response.cancel": response_cancel}


def install(app: FastAPI, rt: Runtime) -> None:
    """Add the /v1/realtime WebSocket to the app (needs an audio input: the speech tokenizer)."""

    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket, model: str | None = None) -> None:
        offered = ws.scope.get("subprotocols") or []
        await ws.accept(subprotocol="realtime" if "realtime" in offered else None)
        problem = None
        if model is not None and model != rt.model_id:
            problem = ("model_not_found", f"model {model!r} does not exist; this server serves {rt.model_id!r}")
        elif not rt.speech.hears:
            problem = ("no_audio_input", "this server has no audio input: start vita serve with --tokenizer-dir "
                                         "(or VITA_AUDIO_TOKENIZER) for /v1/realtime")
        if problem is not None:
            await ws.send_text(json.dumps({"event_id": "event_1", "type": "error", "error": {
                "type": "invalid_request_error", "code": problem[0], "message": problem[1], "param": None,
                "event_id": None}}))
            await ws.close(code=1008)
            return
        await RealtimeSession(rt, ws).run()
