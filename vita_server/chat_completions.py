"""POST /v1/chat/completions with audio: OpenAI's chat format over vita chat's answer (`SpokenAnswer`).

User turns may hold text parts and `input_audio` parts (base64 wav/flac/ogg); the answer is the
checkpoint's interleaved text + speech. With `modalities: ["text", "audio"]` the message carries
the text both as `content` and as `audio.transcript`, and the speech as `audio.data` (24 kHz, in
`audio.format`); with `stream: true` the same arrives as SSE chunks (`delta.content`,
`delta.audio.transcript`, `delta.audio.data` as base64 PCM16) as it is generated, then `[DONE]`.
The speech tokenizer runs on the model thread too, so an unusable recording is still answered 400
before any chunk is sent.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Literal

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from vita_core.chat.answer import SpokenAnswer
from vita_core.chat.loop import DEFAULT_SYSTEM_PROMPT
from vita_core.errors import InputError, VitaError
from vita_core.speech import SpeechModel, read_audio
from vita_core.tokens import Message
from vita_server.audio import Pcm16Out, b64, b64decode, encode_file
from vita_server.errors import ApiError
from vita_server.jobs import Job, Runtime, TimedOut

AUDIO_EXPIRES_S = 3600  # OpenAI's audio.expires_at; vita keeps nothing, the field only says so to clients
NO_EARS = ("this server has no audio input: start vita serve with --tokenizer-dir (or VITA_AUDIO_TOKENIZER) "
           "to send input_audio parts")


class AudioParam(BaseModel):
    model_config = ConfigDict(extra="forbid")

    voice: str
    format: Literal["wav", "flac", "pcm16"] = "wav"


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """OpenAI's chat body (the fields vita honours), plus vita's `mode`."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[dict[str, Any]]
    modalities: list[Literal["text", "audio"]] = ["text"]
    audio: AudioParam | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    n: int = 1
    mode: str | None = None


@dataclass
class _Prompt:
    """The request as the model reads it; audio waveforms are turned into parts on the model thread."""

    messages: list[Message]
    audio: list[tuple[int, int, np.ndarray, str]]  # (message, part, 16 kHz waveform, where the client put it)


@dataclass
class _End:
    stop_reason: str
    prompt_tokens: int
    completion_tokens: int


def _content_parts(speech: SpeechModel, i: int, content: Any, audio: list, max_bytes: float) -> list[Any]:
    where = f"messages[{i}].content"
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise ApiError(400, f"{where} must be a string or a list of content parts", where)
    parts: list[Any] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind == "input_audio":
            if not speech.hears:
                raise ApiError(400, NO_EARS, f"{where}[{j}]")
            data = b64decode((part.get("input_audio") or {}).get("data"))
            if data is None:
                raise ApiError(400, f"{where}[{j}].input_audio.data must be base64 audio (a wav file)",
                               f"{where}[{j}].input_audio.data")
            if len(data) > max_bytes:
                raise ApiError(413, f"{where}[{j}] is {len(data) / 2**20:.1f} MB of audio, over the server's "
                                    f"--max-upload-mb; send a shorter recording", f"{where}[{j}]", "file_too_large")
            try:
                wav = read_audio(io.BytesIO(data), speech.input_rate, name=f"{where}[{j}]")
            except VitaError as exc:
                raise ApiError(400, str(exc), f"{where}[{j}].input_audio.data") from None
            audio.append((i, j, wav, f"{where}[{j}]"))
            parts.append(None)  # filled with the recording's part on the model thread
        else:
            raise ApiError(400, f"{where}[{j}]: vita takes parts of type text or input_audio", f"{where}[{j}]")
    return parts


def parse_messages(speech: SpeechModel, raw: list[dict[str, Any]], max_upload_mb: float) -> _Prompt:
    """OpenAI messages -> vita messages; the default system prompt when the client gives none."""
    if not raw:
        raise ApiError(400, "messages is empty: send at least one user message", "messages")
    messages: list[Message] = []
    audio: list[tuple[int, int, np.ndarray, str]] = []
    for i, m in enumerate(raw):
        role = {"developer": "system"}.get(m.get("role"), m.get("role"))
        if role not in ("system", "user", "assistant"):
            raise ApiError(400, f"messages[{i}].role {m.get('role')!r}: use system, user or assistant",
                           f"messages[{i}].role")
        if role == "assistant" and m.get("content") is None:
            raise ApiError(400, f"messages[{i}]: vita keeps no audio between requests; send the assistant's "
                                "earlier answer as text content (its transcript)", f"messages[{i}].content")
        messages.append(Message(role, _content_parts(speech, i, m.get("content"), audio, max_upload_mb * 2**20)))
    if messages[0].role != "system":
        messages.insert(0, Message("system", DEFAULT_SYSTEM_PROMPT))
        audio = [(i + 1, j, wav, name) for i, j, wav, name in audio]
    return _Prompt(messages, audio)


def _check(req: ChatRequest, speech: SpeechModel) -> tuple[SpeechModel, Any, int]:
    """Everything a client can get wrong without the model: (speech with the mode, sampling, token budget)."""
    from vita_core.schedule import get_mode

    if req.n != 1:
        raise ApiError(400, f"n {req.n}: vita answers one choice per request", "n")
    if "audio" in req.modalities:
        if "text" not in req.modalities:
            raise ApiError(400, 'modalities ["audio"] alone: vita speaks with its text, use ["text", "audio"]',
                           "modalities")
        if req.audio is None:
            raise ApiError(400, 'modalities with "audio" need the audio parameter, e.g. '
                                '{"voice": "default", "format": "wav"}', "audio")
        if req.stream and req.audio.format != "pcm16":
            raise ApiError(400, f"audio.format {req.audio.format!r} cannot be streamed; use pcm16 with stream",
                           "audio.format")
    budget = req.max_completion_tokens or req.max_tokens or 1024
    if budget < 1:
        raise ApiError(400, f"max_tokens {budget} must be at least 1", "max_tokens")
    given = {"temperature": req.temperature, "top_p": req.top_p, "seed": req.seed}
    try:
        sampling = replace(speech.sampling, **{k: v for k, v in given.items() if v is not None})
    except InputError as exc:
        raise ApiError(400, str(exc), next((k for k in given if str(exc).startswith(k)), None)) from None
    if req.mode is not None:
        try:
            speech = replace(speech, mode=get_mode(req.mode))
        except InputError as exc:
            raise ApiError(400, f"mode: {exc}", "mode") from None
    return speech, sampling, budget


def _work(speech: SpeechModel, prompt: _Prompt, sampling: Any, budget: int, spoken: bool):
    """The job: encode the recordings, then hand over (text, pcm16 bytes) per step and an _End."""

    def run(job: Job) -> None:
        messages = [Message(m.role, list(m.parts())) for m in prompt.messages]
        parts = []
        for i, j, wav, name in prompt.audio:
            part = speech.audio_part(wav, speech.input_rate, name)
            messages[i].content[j] = part
            parts.append(part)
        ids = speech.chat.encode(messages)
        job.put(len(ids))  # the prompt is good: the response can start
        answer = SpokenAnswer(speech, ids, speech.prompt_embeds(ids, parts), sampling, budget, spoken=spoken)
        out = Pcm16Out(int(speech.decoder.sample_rate))
        for step in answer:
            data = out.push(step.pcm, last=step.final) if spoken and (step.pcm.size or step.final) else b""
            if step.text or data:
                job.put((step.text, data))
            else:
                job.check()
        job.put(_End(answer.stop_reason or "length", len(ids), len(answer.ids)))

    return run


def install(app: FastAPI, rt: Runtime) -> None:
    """Add POST /v1/chat/completions to the app."""
    from vita_server.app import check_model

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest) -> Response:
        check_model(rt, req.model)
        speech, sampling, budget = _check(req, rt.speech)
        prompt = parse_messages(speech, req.messages, rt.max_upload_mb)
        spoken = "audio" in req.modalities
        job = rt.start(_work(speech, prompt, sampling, budget, spoken))
        items = job.items()
        try:
            await anext(items)  # the prompt encoded (or its error, answered with a status)
        except TimedOut as exc:
            rt.release(job)
            raise ApiError(504, str(exc), code="request_timeout") from None
        except BaseException:
            job.cancel()
            rt.release(job)
            raise
        ids = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": rt.model_id}
        audio_id = f"audio_{uuid.uuid4().hex}"
        if req.stream:
            usage = req.stream_options is not None and req.stream_options.include_usage
            return StreamingResponse(_sse(rt, job, items, ids, audio_id if spoken else None, usage),
                                     media_type="text/event-stream")
        text, pcm, end = "", bytearray(), None
        try:
            async for item in items:
                if isinstance(item, _End):
                    end = item
                else:
                    text += item[0]
                    pcm += item[1]
        except TimedOut as exc:
            raise ApiError(504, str(exc), code="request_timeout") from None
        finally:
            job.cancel()
            rt.release(job)
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if spoken:
            message["audio"] = {"id": audio_id, "data": b64(encode_file(bytes(pcm), req.audio.format)),
                                "transcript": text, "expires_at": int(time.time()) + AUDIO_EXPIRES_S}
        return JSONResponse({**ids, "object": "chat.completion", "choices": [
            {"index": 0, "message": message, "finish_reason": end.stop_reason if end.stop_reason == "length" else "stop",
             "logprobs": None}], "usage": _usage(end)})


def _usage(end: _End) -> dict[str, int]:
    return {"prompt_tokens": end.prompt_tokens, "completion_tokens": end.completion_tokens,
            "total_tokens": end.prompt_tokens + end.completion_tokens}


async def _sse(rt: Runtime, job: Job, items: AsyncIterator[Any], ids: dict[str, Any], audio_id: str | None,
               usage: bool) -> AsyncIterator[bytes]:
    """The answer as OpenAI's chat.completion.chunk events; a client that leaves cancels the job."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {**ids, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        return f"data: {json.dumps(body)}\n\n".encode()

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for item in items:
            if isinstance(item, _End):
                if audio_id is not None:  # OpenAI's last audio delta: only the id and its expiry
                    yield chunk({"audio": {"id": audio_id, "expires_at": int(time.time()) + AUDIO_EXPIRES_S}})
                yield chunk({}, item.stop_reason if item.stop_reason == "length" else "stop")
                if usage:
                    body = {**ids, "object": "chat.completion.chunk", "choices": [], "usage": _usage(item)}
                    yield f"data: {json.dumps(body)}\n\n".encode()
                continue
            text, data = item
            delta: dict[str, Any] = {"content": text} if text else {}
            if audio_id is not None:
                delta["audio"] = {"id": audio_id, **({"transcript": text} if text else {}),
                                  **({"data": b64(data)} if data else {})}
            yield chunk(delta)
        yield b"data: [DONE]\n\n"
    except TimedOut as exc:  # OpenAI's clients raise an APIError for an error event in the stream
        error = {"message": str(exc), "type": "server_error", "param": None, "code": "request_timeout"}
        yield f"data: {json.dumps({'error': error})}\n\n".encode()
    finally:
        job.cancel()
        rt.release(job)
