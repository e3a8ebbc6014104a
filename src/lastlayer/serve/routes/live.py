"""The device's live view: ``/api/predictions``, the MJPEG ``/api/stream.mjpg``, Server-Sent ``/api/events``, ``/api/source/retry``.

One JPEG encode per frame is shared by every client (:class:`~lastlayer.serve.feed.Feed`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from lastlayer.errors import ConflictError, NotFoundError
from lastlayer.serve.context import WebContext
from lastlayer.serve.protocol import query_count

BOUNDARY = "lastlayerframe"
KEEPALIVE = 15.0


def routes(web: WebContext) -> list[Any]:
    feed, session = web.feed, web.session

    async def predictions(request: Request) -> JSONResponse:
        snapshot = feed.snapshot()
        return JSONResponse({"live": snapshot.to_dict() if snapshot else None, "source": feed.status_dict()})

    async def stream(request: Request) -> StreamingResponse:
        """The live frames as MJPEG; ``?max_frames=N`` ends after N frames (tests, benchmarks)."""
        if not feed.attached:
            raise NotFoundError("there is no device camera; the page can use the browser's camera or photos")
        limit = query_count(request, "max_frames")

        async def frames() -> AsyncIterator[bytes]:
            yield f"--{BOUNDARY}\r\n".encode()
            sequence, sent = -1, 0
            while limit is None or sent < limit:
                snapshot = await feed.wait(sequence, KEEPALIVE)
                if snapshot is None:
                    continue
                sequence, sent = snapshot.sequence, sent + 1
                head = f"Content-Type: image/jpeg\r\nContent-Length: {len(snapshot.jpeg)}\r\nX-Frame: {snapshot.state.frame.index}\r\n\r\n"
                yield head.encode() + snapshot.jpeg + f"\r\n--{BOUNDARY}\r\n".encode()

        return StreamingResponse(frames(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def events(request: Request) -> StreamingResponse:
        """Server-Sent Events: ``live`` (each prediction, ``top`` "unknown" when the session's rule says so), ``changed``
        (revision), ``source`` (status), ``uncertain`` (the queue of uncertain frames changed: ``{"version", "count"}``);
        ``?max_events=N``."""
        limit = query_count(request, "max_events")

        async def messages() -> AsyncIterator[str]:
            waiter = (asyncio.get_running_loop(), asyncio.Event())
            feed.add_waiter(waiter)
            sent, revision, source, sequence, queued = 0, -1, None, -1, -1
            try:
                yield "retry: 1000\n\n"
                while limit is None or sent < limit:
                    waiter[1].clear()
                    batch = []
                    if session.revision != revision:
                        revision = session.revision
                        batch.append(("changed", {"revision": revision}))
                    status = feed.status_dict()
                    if status != source:
                        source = status
                        batch.append(("source", status))
                    if session.uncertain.version != queued:
                        queued = session.uncertain.version
                        batch.append(("uncertain", {"version": queued, "count": len(session.uncertain)}))
                    snapshot = feed.snapshot()
                    if snapshot is not None and snapshot.sequence > sequence:
                        sequence = snapshot.sequence
                        batch.append(("live", snapshot.event))  # (encoded once for every client)
                    for name, data in batch:
                        yield f"event: {name}\ndata: {data if isinstance(data, str) else json.dumps(data)}\n\n"
                        sent += 1
                    if not batch:
                        try:
                            await asyncio.wait_for(waiter[1].wait(), KEEPALIVE)
                        except asyncio.TimeoutError:
                            yield ": keep-alive\n\n"
            finally:
                feed.remove_waiter(waiter)

        return StreamingResponse(messages(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def retry_source(request: Request) -> JSONResponse:
        if not feed.attached:
            raise ConflictError("there is no device source to reopen")
        feed.retry()
        return JSONResponse({"source": feed.status_dict()})

    return [
        Route("/api/predictions", predictions, methods=["GET"]),
        Route("/api/stream.mjpg", stream, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
        Route("/api/source/retry", retry_source, methods=["POST"]),
    ]
