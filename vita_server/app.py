"""The FastAPI app: one loaded SpeechModel behind OpenAI's audio routes.

Generation runs in one worker thread (requests wait their turn, in order, at most `max_queue` of them
running or waiting; more get 503), so the event loop stays free: /health answers while the model
works, and audio reaches the client as the codec decodes it.
The audio goes through vita_core's own sinks (`StreamSink` for wav/pcm, the WAV header with an
open length exactly as `vita tts --out -` writes it), and an upload goes through `vita asr`'s own
`transcribe`, so the server and the CLI give the same bytes and the same text.
"""

from __future__ import annotations

import asyncio
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, AsyncIterator, Literal

import numpy as np
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from vita_core.errors import InputError
from vita_core.sinks import StreamSink, flac_bytes
from vita_core.speech import SpeechModel
from vita_server import errors, web
from vita_server.errors import ApiError

if TYPE_CHECKING:
    from vita_core.generate import Sampling

MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac"}
TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


class SpeechRequest(BaseModel):
    """OpenAI's speech body, plus vita's own generation fields (`mode`, `temperature`, `seed`, `max_new_tokens`)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    input: str
    voice: str
    response_format: Literal["wav", "pcm", "flac"] = "wav"
    speed: float = 1.0
    stream_format: Literal["audio"] = "audio"
    mode: str | None = None
    temperature: float | None = None
    seed: int | None = None
    max_new_tokens: int = 1024


class _Cancelled(Exception):
    """The client went away: the worker stops generating at its next audio chunk."""


class _QueueStream:
    """A binary stream for `StreamSink` whose writes go, in order, to an asyncio queue on the server's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, cancelled: threading.Event) -> None:
        self._loop, self._queue, self._cancelled = loop, queue, cancelled

    def write(self, data: bytes) -> int:
        if self._cancelled.is_set():
            raise _Cancelled
        self._loop.call_soon_threadsafe(self._queue.put_nowait, bytes(data))
        return len(data)

    def flush(self) -> None:
        """Every write is handed over at once; nothing is buffered."""


def _speech_job(speech: SpeechModel, req: SpeechRequest) -> tuple[SpeechModel, Sampling]:
    """Check every field a client can get wrong, before any byte is sent (so the answer can still be a 400)."""
    from vita_core.schedule import get_mode

    if req.speed != 1.0:
        raise ApiError(400, f"speed {req.speed}: vita speaks at the model's own pace; leave speed at 1.0", "speed")
    if not req.input.strip():
        raise ApiError(400, "input is empty: give the text to speak", "input")
    if req.max_new_tokens < 1:
        raise ApiError(400, f"max_new_tokens {req.max_new_tokens} must be at least 1", "max_new_tokens")
    given = {"temperature": req.temperature, "seed": req.seed}
    try:
        sampling = replace(speech.sampling, **{k: v for k, v in given.items() if v is not None})
    except InputError as exc:
        raise ApiError(400, str(exc), "temperature") from None
    if req.mode is not None:
        try:
            speech = replace(speech, mode=get_mode(req.mode))  # shares the loaded model; only the schedule differs
        except InputError as exc:
            raise ApiError(400, f"mode: {exc}", "mode") from None
    return speech, sampling


def check_limits(max_queue: int, max_upload_mb: float) -> None:
    """The server's limits must let at least one request in (checked by `vita serve` before the model loads)."""
    if max_queue < 1:
        raise InputError(f"--max-queue {max_queue} must be at least 1")
    if max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb {max_upload_mb} must be above 0")


def create_app(speech: SpeechModel, model_id: str | None = None, max_queue: int = 8,
               max_upload_mb: float = 25.0) -> FastAPI:
    """The server for one loaded speech model, known to clients as `model_id` (default: its folder's name).

    `max_queue` bounds the requests running or waiting for the model; `max_upload_mb` the audio uploaded.
    """
    if speech.decoder is None:
        raise InputError("vita serve needs the speech decoder: pass --decoder-dir or set VITA_AUDIO_DECODER")
    check_limits(max_queue, max_upload_mb)
    model_id = model_id or speech.folder.name
    created = int(speech.folder.stat().st_mtime)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vita-generate")
    queued = [0]  # requests running or waiting in `worker`; only the event loop's thread touches it

    def take_slot() -> None:
        if queued[0] >= max_queue:
            raise ApiError(503, f"the server is busy ({queued[0]} requests running or waiting, --max-queue "
                                f"{max_queue}); retry shortly", code="queue_full", headers={"Retry-After": "1"})
        queued[0] += 1

    def free_slot() -> None:
        queued[0] -= 1

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        worker.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(title="vita", summary="OpenAI-compatible speech server over vita_core", lifespan=lifespan)
    errors.install(app)
    web.install(app)

    def model_card() -> dict:
        return {"id": model_id, "object": "model", "created": created, "owned_by": "vita"}

    def check_model(name: str) -> None:
        if name != model_id:
            raise ApiError(404, f"model {name!r} does not exist; this server serves {model_id!r} (GET /v1/models)",
                           "model", "model_not_found")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_id}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str) -> dict:
        check_model(name)
        return model_card()

    @app.post("/v1/audio/speech")
    async def audio_speech(req: SpeechRequest) -> StreamingResponse:
        from vita_core.tts import synthesize

        check_model(req.model)
        job_speech, sampling = _speech_job(speech, req)
        rate = int(speech.decoder.sample_rate)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        done = object()

        def run() -> None:
            outcome: object = done
            try:
                if cancelled.is_set():
                    return
                if req.response_format == "flac":  # FLAC needs its sizes up front: sent whole once generated
                    chunks: list[np.ndarray] = []
                    synthesize(job_speech, req.input, chunks.append, sampling=sampling,
                               max_new_tokens=req.max_new_tokens)
                    wav = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
                    _QueueStream(loop, queue, cancelled).write(flac_bytes(wav, rate))
                else:
                    sink = StreamSink(_QueueStream(loop, queue, cancelled), rate, req.response_format)
                    synthesize(job_speech, req.input, sink.write, sampling=sampling,
                               max_new_tokens=req.max_new_tokens)
                    sink.close()
            except _Cancelled:
                pass
            except BaseException as exc:  # handed to the response, which ends the stream early
                outcome = exc
            finally:  # the slot is free before the client sees the end, so its next request finds it free
                loop.call_soon_threadsafe(free_slot)
                loop.call_soon_threadsafe(queue.put_nowait, outcome)

        async def body() -> AsyncIterator[bytes]:
            try:
                while (item := await queue.get()) is not done:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                cancelled.set()  # a client that disconnects stops its generation

        take_slot()
        worker.submit(run)
        return StreamingResponse(body(), media_type=MEDIA_TYPES[req.response_format])

    @app.post("/v1/audio/transcriptions")
    async def audio_transcriptions(file: UploadFile = File(...), model: str = Form(...),
                                   language: str = Form("auto"), response_format: str = Form("json")) -> Response:
        from vita_core.asr import render, transcribe
        from vita_core.speech import read_audio

        check_model(model)
        if response_format not in TRANSCRIPT_FORMATS:
            raise ApiError(400, f"response_format {response_format!r}: choose {', '.join(TRANSCRIPT_FORMATS)}",
                           "response_format")
        if not speech.hears:
            raise ApiError(400, "this server has no audio input: start vita serve with --tokenizer-dir "
                                "(or VITA_AUDIO_TOKENIZER) to transcribe", "file")
        name = file.filename or "the upload"
        data = await file.read()
        if len(data) > max_upload_mb * 2**20:
            raise ApiError(413, f"{name} is {len(data) / 2**20:.1f} MB, over the server's --max-upload-mb "
                                f"{max_upload_mb:g}; upload a shorter recording", "file", "file_too_large")
        if not data:
            raise ApiError(400, f"{name} is empty (0 bytes): upload a wav, flac or ogg recording", "file")
        rate = speech.input_rate
        wav = read_audio(io.BytesIO(data), rate, name=name)
        take_slot()
        try:
            t = await asyncio.wrap_future(worker.submit(transcribe, speech, wav, rate, name, None, language or "auto"))
        finally:
            free_slot()
        if response_format == "text":
            return PlainTextResponse(t.text + "\n")
        if response_format == "json":
            return JSONResponse({"text": t.text})
        if response_format == "verbose_json":
            segments = [{"id": 0, "start": 0.0, "end": round(t.duration, 3), "text": t.text}]
            return JSONResponse({"task": "transcribe", "language": t.language, "duration": round(t.duration, 3),
                                 "text": t.text, "segments": segments})
        return PlainTextResponse(render(t, response_format), media_type="text/plain")

    return app
