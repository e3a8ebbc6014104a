"""The page: ``GET /`` and the static files it loads (plain HTML, CSS and JS shipped with the package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lastlayer.serve.context import WebContext

STATIC = Path(__file__).resolve().parents[1] / "static"


def routes(web: WebContext) -> list[Any]:
    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    return [
        Route("/", index, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
