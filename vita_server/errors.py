"""Every error the server answers has OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

OpenAI's clients read `error.message` and map the status to their exception classes, so a vita
error keeps vita's one-line message and gets the status a client expects (400 for what the
request got wrong, 404 for an unknown route or model, 413 for an upload over the limit, 503 with
Retry-After when the queue is full).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from vita_core.errors import VitaError


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON body OpenAI's API answers an error with."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


class ApiError(Exception):
    """An error a handler raises to answer `status` with `message` (and which parameter caused it)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """One line for the first thing wrong in the request body, naming the field."""
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    if first.get("type") == "extra_forbidden":
        return f"unknown parameter {field!r}", field
    return (f"{field}: {first.get('msg')}" if field else str(first.get("msg"))), field


def install(app: FastAPI) -> None:
    """Route vita's, FastAPI's and Starlette's errors through `error_response`."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(VitaError)
    async def vita_error(_request: Request, exc: VitaError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        return error_response(400, message, field)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(404, f"no route {request.method} {request.url.path}; see GET /health, GET /v1/models, "
                                       "POST /v1/audio/speech, POST /v1/audio/transcriptions, POST /v1/chat/completions, "
                                       "WebSocket /v1/realtime", code="unknown_url")
        if exc.status_code == 405:
            return error_response(405, f"{request.url.path} does not take {request.method}",
                                  code="method_not_allowed")
        return error_response(exc.status_code, str(exc.detail))
