"""The browser client: static files shipped in vita_server/static/, served at `/` with no build step.

Everything the page needs (HTML, CSS, JS modules, AudioWorklet processors) comes from this folder,
so the page works offline. It is mounted under /static rather than at `/` so that a catch-all
mount never shadows the API's routes or the realtime WebSocket.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Serve the page at `/` and its files under `/static/`."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
