"""What every route of the web app shares: the session, the live feed, the limits, and reading a request's JSON.

A route module (:mod:`lastlayer.serve.routes`) builds its handlers over one :class:`WebContext`.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

from lastlayer.serve.feed import Feed
from lastlayer.serve.protocol import read_limited
from lastlayer.serve.turns import Turns
from lastlayer.teach.session import TeachingSession

try:
    from starlette.requests import Request
except ImportError as _error:
    from lastlayer.serve import missing_web

    raise missing_web(_error) from None

RECENT_EXAMPLES = 24  # example ids per class in /api/state (thumbnails on the page)
HEAVY_SLOTS = max(1, (os.cpu_count() or 2) - 1)  # photo requests decoding at once: a core stays for the live loop
HEAVY_QUEUE = 64  # photo requests waiting for a turn, beyond which 503
HEAVY_WAIT = 2.0  # seconds a photo request waits for its turn, beyond which 503 (a late prediction is no use)
JOB_SLOTS = 1  # fine-tunes, evaluations and exports at once (each may take seconds to minutes)
JOB_QUEUE = 8  # of them waiting, beyond which 503


class WebContext:
    """The session every client teaches, the device's feed, the server's limits, and helpers the routes share.

    ``heavy``: the :class:`~lastlayer.serve.turns.Turns` that requests decoding and embedding photos (uploads,
    predictions of a posted image) take; ``jobs``: the ones fine-tuning, evaluating and exporting take. Two
    lines, so a photo never waits for a minute-long fine-tune, and the live view keeps its share of the CPU.
    """

    def __init__(self, session: TeachingSession, feed: Feed, *, token: str | None, max_upload_bytes: int, max_pixels: int,
                 top_k: int, log: Callable[[str], None], heavy: Turns | None = None,
                 jobs: Turns | None = None) -> None:
        self.session, self.feed = session, feed
        self.token, self.max_upload_bytes, self.max_pixels, self.top_k, self.log = token, max_upload_bytes, max_pixels, top_k, log
        self.heavy = heavy if heavy is not None else Turns(HEAVY_SLOTS, HEAVY_QUEUE, HEAVY_WAIT)
        self.jobs = jobs if jobs is not None else Turns(JOB_SLOTS, JOB_QUEUE)
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

    async def body(self, request: Request) -> bytes:
        """The whole request body, refused with 413 beyond ``max_upload_bytes``."""
        return await read_limited(request, self.max_upload_bytes)
