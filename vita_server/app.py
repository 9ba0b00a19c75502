"""The FastAPI app: one loaded SpeechModel behind OpenAI's audio routes (chat and realtime in their own modules).

Generation runs in one worker thread (vita_server.jobs: requests wait their turn, in order, at most
`max_queue` of them running or waiting; more get 503), so the event loop stays free: /health answers
while the model works, and audio reaches the client as the codec decodes it. Speech requests that
wait together are generated in one batch (vita_server.batch), each with the codes it would get alone.
The audio goes through vita_core's own sinks (`StreamSink` for wav/pcm, the WAV header with an
open length exactly as `vita tts --out -` writes it), and an upload goes through `vita asr`'s own
`transcribe`, so the server and the CLI give the same bytes and the same text.
"""

from __future__ import annotations

import io
import logging
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, AsyncIterator, Literal

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from vita_core.errors import InputError
from vita_core.speech import SpeechModel
from vita_server import errors, web
from vita_server.errors import ApiError
from vita_server.batch import SpeechBatcher, SpeechTask
from vita_server.jobs import Job, Runtime, TimedOut, check_limits

if TYPE_CHECKING:
    from vita_core.generate import Sampling

MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac"}
TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
log = logging.getLogger("vita_server")


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


def create_app(speech: SpeechModel, model_id: str | None = None, max_queue: int = 8,
               max_upload_mb: float = 25.0, request_timeout: float | None = None) -> FastAPI:
    """The server for one loaded speech model, known to clients as `model_id` (default: its folder's name).

    `max_queue` bounds the requests running or waiting for the model, `max_upload_mb` the audio uploaded,
    `request_timeout` (seconds, None for none) how long one request may take.
    """
    from vita_server import chat_completions, realtime

    if speech.decoder is None:
        raise InputError("vita serve needs the speech decoder: pass --decoder-dir or set VITA_AUDIO_DECODER")
    check_limits(max_queue, max_upload_mb, request_timeout)
    rt = Runtime(speech, model_id or speech.folder.name, max_queue, max_upload_mb, request_timeout)
    model_id = rt.model_id
    batcher = SpeechBatcher(max_batch=max_queue)
    created = int(speech.folder.stat().st_mtime)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        rt.worker.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(title="vita", summary="OpenAI-compatible speech server over vita_core", lifespan=lifespan)
    errors.install(app)
    web.install(app)

    def model_card() -> dict:
        return {"id": model_id, "object": "model", "created": created, "owned_by": "vita"}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_id}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str) -> dict:
        check_model(rt, name)
        return model_card()

    @app.post("/v1/audio/speech")
    async def audio_speech(req: SpeechRequest) -> StreamingResponse:
        check_model(rt, req.model)
        job_speech, sampling = _speech_job(speech, req)

        async def body(job: Job) -> AsyncIterator[bytes]:
            try:
                async for item in job.items():
                    yield item
            except TimedOut as exc:  # the status line is long sent: the stream ends early (the log says why)
                log.warning("speech request stopped: %s", exc)
            finally:  # a client that disconnects stops its generation and frees its slot
                job.cancel()
                rt.release(job)

        job = batcher.start(rt, SpeechTask(job_speech, req.input, sampling, req.max_new_tokens, req.response_format))
        return StreamingResponse(body(job), media_type=MEDIA_TYPES[req.response_format])

    @app.post("/v1/audio/transcriptions")
    async def audio_transcriptions(file: UploadFile = File(...), model: str = Form(...),
                                   language: str = Form("auto"), response_format: str = Form("json")) -> Response:
        from vita_core.asr import render, transcribe
        from vita_core.speech import read_audio

        check_model(rt, model)
        if response_format not in TRANSCRIPT_FORMATS:
            raise ApiError(400, f"response_format {response_format!r}: choose {', '.join(TRANSCRIPT_FORMATS)}",
                           "response_format")
        if not speech.hears:
            raise ApiError(400, "this server has no audio input: start vita serve with --tokenizer-dir "
                                "(or VITA_AUDIO_TOKENIZER) to transcribe", "file")
        name = file.filename or "the upload"
        data = await file.read()
        check_upload(rt, len(data), name)
        if not data:
            raise ApiError(400, f"{name} is empty (0 bytes): upload a wav, flac or ogg recording", "file")
        rate = speech.input_rate
        wav = read_audio(io.BytesIO(data), rate, name=name)
        t = await rt.call(transcribe, speech, wav, rate, name, None, language or "auto")
        if response_format == "text":
            return PlainTextResponse(t.text + "\n")
        if response_format == "json":
            return JSONResponse({"text": t.text})
        if response_format == "verbose_json":
            segments = [{"id": 0, "start": 0.0, "end": round(t.duration, 3), "text": t.text}]
            return JSONResponse({"task": "transcribe", "language": t.language, "duration": round(t.duration, 3),
                                 "text": t.text, "segments": segments})
        return PlainTextResponse(render(t, response_format), media_type="text/plain")

    chat_completions.install(app, rt)
    realtime.install(app, rt)
    return app


def check_model(rt: Runtime, name: str) -> None:
    """404 for a model this server does not serve."""
    if name != rt.model_id:
        raise ApiError(404, f"model {name!r} does not exist; this server serves {rt.model_id!r} (GET /v1/models)",
                       "model", "model_not_found")


def check_upload(rt: Runtime, size: int, name: str) -> None:
    """413 for uploaded audio over --max-upload-mb."""
    if size > rt.max_upload_mb * 2**20:
        raise ApiError(413, f"{name} is {size / 2**20:.1f} MB, over the server's --max-upload-mb "
                            f"{rt.max_upload_mb:g}; upload a shorter recording", "file", "file_too_large")
