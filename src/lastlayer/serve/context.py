"""What every route of the web app shares: the session, the live feed, the limits, and reading a request's JSON.

A route module (:mod:`lastlayer.serve.routes`) builds its handlers over one :class:`WebContext`.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable

from lastlayer.serve.feed import Feed
from lastlayer.serve.protocol import ApiError, read_limited
from lastlayer.teach.session import TeachingSession

try:
    from starlette.requests import Request
except ImportError as _error:
    from lastlayer.serve import missing_web

    raise missing_web(_error) from None

MAX_JSON = 64 * 1024
RECENT_EXAMPLES = 24  # example ids per class in /api/state (thumbnails on the page)


class WebContext:
    """The session every client teaches, the device's feed, the server's limits, and helpers the routes share."""

    def __init__(self, session: TeachingSession, feed: Feed, *, token: str | None, max_upload_bytes: int, max_pixels: int,
                 top_k: int, log: Callable[[str], None]) -> None:
        self.session, self.feed = session, feed
        self.token, self.max_upload_bytes, self.max_pixels, self.top_k, self.log = token, max_upload_bytes, max_pixels, top_k, log
        self._listing: tuple[int, list[dict[str, Any]]] | None = None
        self._listing_lock = threading.Lock()

    def changed(self) -> int:
        """Wake the event streams after a change of this server; returns the state's revision."""
        self.feed.notify()
        return self.session.revision

    def class_listing(self) -> tuple[int, list[dict[str, Any]]]:
        """The revision, and every class at it with its example count and newest example ids (cached per revision;
        from a worker thread). A listing read while another process changes the state is tagged with the
        older revision, so the page still reloads at the next ``changed`` event."""
        with self._listing_lock:
            revision = self.session.revision
            classes = self.session.classes()  # (catches up with other processes first)
            if self._listing is not None and self._listing[0] == revision == self.session.revision:
                return self._listing
            recent: dict[int, list[int]] = {}
            for example in self.session.examples():
                recent.setdefault(example.class_id, []).append(example.id)
            listing = [{**info.to_dict(), "recent": recent.get(info.id, [])[-RECENT_EXAMPLES:][::-1]} for info in classes]
            self._listing = (revision, listing)
            return self._listing

    @staticmethod
    async def json(request: Request) -> dict[str, Any]:
        """The request's JSON object (``{}`` for an empty body); 400 for anything else, 413 beyond 64 KiB."""
        body = await read_limited(request, MAX_JSON)
        if not body:
            return {}
        try:
            data = json.loads(body)
        except ValueError:
            raise ApiError("the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError("the request body must be a JSON object")
        return data

    @staticmethod
    def whole_number(data: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
        """``data[key]`` as a whole number from ``low`` to ``high`` (``default`` when missing), else 400."""
        value = data.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or not low <= value <= high:
            raise ApiError(f"{key} must be a whole number from {low} to {high}")
        return int(value)

    async def name(self, request: Request, what: str) -> str:
        """The ``{"name": "..."}`` of the request."""
        name = (await self.json(request)).get("name")
        if not isinstance(name, str):
            raise ApiError(f"send {what} as {{\"name\": \"...\"}}")
        return name

    async def body(self, request: Request) -> bytes:
        """The whole request body, refused with 413 beyond ``max_upload_bytes``."""
        return await read_limited(request, self.max_upload_bytes)
