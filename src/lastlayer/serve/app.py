"""The ASGI application: a JSON API over one :class:`TeachingSession`, a live stream, and the static page.

Routes (all under the :mod:`lastlayer.serve.security` rules; errors are ``{"error": "..."}``):

=======  =====================================  ==================================================
GET      /                                      the page (``static/index.html``)
GET      /api/state                             classes (+ newest example ids), revision, source, live
POST     /api/classes                           ``{"name"}`` -> new class (201)
PATCH    /api/classes/{id}                      ``{"name"}`` -> renamed class
DELETE   /api/classes/{id}                      delete the class and its examples
GET      /api/classes/{id}/examples             the class's examples
POST     /api/classes/{id}/frames               ``{"frame"?, "count"?}``: add the live frame (or a burst)
POST     /api/classes/{id}/examples             multipart photos (one or several files) -> examples
GET      /api/examples/{id}/thumbnail.jpg       an example's thumbnail
DELETE   /api/examples/{id}                     remove one example
POST     /api/undo                              forget the newest example
GET      /api/predictions                       the current live prediction
POST     /api/predict                           an image body (the browser's camera) -> prediction
POST     /api/finetune                          ``{"steps"?, "learning_rate"?}`` -> losses
GET      /api/evaluation                        leave-one-out accuracy per class + confusion matrix
GET      /api/export/model.tflite               download the taught model
GET      /api/export/labels.txt                 download its labels
GET      /api/stream.mjpg                       the live frames (multipart/x-mixed-replace JPEG)
GET      /api/events                            Server-Sent Events: ``live``, ``changed``, ``source``
POST     /api/source/retry                      reopen the device's source now
=======  =====================================  ==================================================

Every change returns only after the session committed it to the state folder. Every session call runs
in a worker thread, so the event loop (static files, the stream, events) never waits for the disk,
another process's lock or a fine-tune. Library errors answer with the status of their kind
(:data:`lastlayer.serve.protocol.STATUS_BY_KIND`); the handlers do not check the session's rules
themselves, so a race with another client or process gets the same answer as a plain mistake.
"""

from __future__ import annotations

import asyncio
import json
import threading
import traceback
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import numpy as np

from lastlayer.errors import ConflictError, LastLayerError, NotFoundError
from lastlayer.model.labels import format_labels
from lastlayer.serve import missing_web
from lastlayer.serve.feed import Feed
from lastlayer.serve.protocol import ApiError, query_int, read_limited, status_of
from lastlayer.serve.security import AccessGuard
from lastlayer.serve.uploads import DEFAULT_MAX_PIXELS, UploadError, decode_upload
from lastlayer.teach.live import LiveLoop, Predictor
from lastlayer.teach.session import TeachingSession

try:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ImportError as _error:
    raise missing_web(_error) from None

STATIC = Path(__file__).with_name("static")
MAX_BURST = 50
MAX_JSON = 64 * 1024
MAX_FILES = 32
RECENT_EXAMPLES = 24  # example ids per class in /api/state (thumbnails on the page)
BOUNDARY = "lastlayerframe"
KEEPALIVE = 15.0
SourceOpener = Callable[[Predictor], LiveLoop]
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; connect-src 'self'; "
     b"script-src 'self'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
]


class _SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, wrapped)


class WebTeacher:
    """The route handlers, over one session and one feed (see the module docstring for the routes)."""

    def __init__(self, session: TeachingSession, feed: Feed, *, token: str | None, max_upload_bytes: int, max_pixels: int,
                 top_k: int, log: Callable[[str], None]) -> None:
        self.session, self.feed = session, feed
        self.token, self.max_upload_bytes, self.max_pixels, self.top_k, self.log = token, max_upload_bytes, max_pixels, top_k, log
        self._listing: tuple[int, list[dict[str, Any]]] | None = None
        self._listing_lock = threading.Lock()

    # ----------------------------------------------------------------- helpers
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
    async def _json(request: Request) -> dict[str, Any]:
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
    def _int(data: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
        value = data.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or not low <= value <= high:
            raise ApiError(f"{key} must be a whole number from {low} to {high}")
        return int(value)

    async def _name(self, request: Request, what: str) -> str:
        name = (await self._json(request)).get("name")
        if not isinstance(name, str):
            raise ApiError(f"send {what} as {{\"name\": \"...\"}}")
        return name

    async def _body(self, request: Request) -> bytes:
        """The whole request body, refused with 413 beyond ``max_upload_bytes``."""
        return await read_limited(request, self.max_upload_bytes)

    # ----------------------------------------------------------------- state and classes
    async def state(self, request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(self._state))

    def _state(self) -> dict[str, Any]:
        revision, listing = self.class_listing()
        snapshot = self.feed.snapshot()
        return {"classes": listing, "revision": revision, "labels": self.session.labels,
                "source": self.feed.status_dict(), "live": snapshot.to_dict() if snapshot else None,
                "token_required": self.token is not None, "max_upload_bytes": self.max_upload_bytes,
                "input_size": list(self.session.input_size)}

    async def list_classes(self, request: Request) -> JSONResponse:
        return JSONResponse({"classes": (await run_in_threadpool(self.class_listing))[1]})

    async def create_class(self, request: Request) -> JSONResponse:
        info = await run_in_threadpool(self.session.add_class, await self._name(request, "the new class's name"))
        return JSONResponse({"class": info.to_dict(), "revision": self.changed()}, status_code=201)

    async def rename_class(self, request: Request) -> JSONResponse:
        name = await self._name(request, "the new name")
        info = await run_in_threadpool(self.session.rename_class, request.path_params["class_id"], name)
        return JSONResponse({"class": info.to_dict(), "revision": self.changed()})

    async def delete_class(self, request: Request) -> JSONResponse:
        class_id = request.path_params["class_id"]
        await run_in_threadpool(self.session.remove_class, class_id)
        return JSONResponse({"deleted": class_id, "revision": self.changed()})

    async def class_examples(self, request: Request) -> JSONResponse:
        examples = await run_in_threadpool(self.session.examples, request.path_params["class_id"])
        return JSONResponse({"examples": [e.to_dict() for e in examples]})

    # ----------------------------------------------------------------- teaching
    async def _teach(self, class_id: int, images: list[np.ndarray], embeddings: list[np.ndarray | None] | None = None) -> JSONResponse:
        """Add the images to the class (one call: all or nothing) and answer once they are stored."""

        def teach() -> tuple[list[Any], Any]:
            added = self.session.add_examples(class_id, images, embeddings=embeddings)
            return added, self.session.class_info(class_id)

        added, klass = await run_in_threadpool(teach)
        return JSONResponse({"added": [e.to_dict() for e in added], "class": klass.to_dict(), "revision": self.changed()},
                            status_code=201)

    async def add_frames(self, request: Request) -> JSONResponse:
        """Add the live frame the page showed (``frame``: its index, when still kept), or a burst of ``count`` new frames.

        A kept frame carries the embedding its prediction computed, so it is not embedded again.
        """
        class_id = request.path_params["class_id"]
        data = await self._json(request)
        count = self._int(data, "count", 1, 1, MAX_BURST)
        index = self._int(data, "frame", None, 0, 2**62)
        if not self.feed.attached:
            raise ConflictError("there is no device camera; teach with photos or the browser's camera")
        if count == 1:
            kept = self.feed.frame(index)
            if kept is None:
                raise ConflictError("no live frame yet; wait for the camera or check the source error")
            frames = [kept]
        else:
            frames = await run_in_threadpool(self.feed.next_frames, count, 2.0 + count * 0.5)
            if len(frames) < count:
                raise ApiError(f"the camera delivered {len(frames)} of {count} frames in time; nothing was added", 503)
        return await self._teach(class_id, [f.pixels for f in frames], [f.embedding for f in frames])

    async def upload(self, request: Request) -> JSONResponse:
        """Photos uploaded as multipart files: each decoded and checked, then all added at once."""
        images = await self._uploaded_images(request)
        return await self._teach(request.path_params["class_id"], images)

    async def _uploaded_images(self, request: Request) -> list[np.ndarray]:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ApiError("upload the photos as multipart/form-data (a form with file fields)", 415)
        body = await self._body(request)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=MAX_FILES, max_fields=MAX_FILES)
        except HTTPException as error:
            raise ApiError(f"cannot read the upload: {error.detail}") from None
        try:
            files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
            if not files:
                raise ApiError("the upload holds no file; choose one or more photos")
            blobs = [await upload.read() for upload in files]
        finally:
            await form.close()
        return await run_in_threadpool(self._decode_all, blobs)

    def _decode_all(self, blobs: list[bytes]) -> list[np.ndarray]:
        many = len(blobs) > 1
        return [decode_upload(blob, label=f"photo {number}" if many else "the photo", max_pixels=self.max_pixels)
                for number, blob in enumerate(blobs, 1)]

    async def thumbnail(self, request: Request) -> Response:
        data = await run_in_threadpool(self.session.thumbnail, request.path_params["example_id"])
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=86400"})

    async def delete_example(self, request: Request) -> JSONResponse:
        example_id = request.path_params["example_id"]
        await run_in_threadpool(self.session.remove_example, example_id)
        return JSONResponse({"deleted": example_id, "revision": self.changed()})

    async def undo(self, request: Request) -> JSONResponse:
        undone = await run_in_threadpool(self.session.undo)
        return JSONResponse({"undone": None if undone is None else undone.to_dict(), "revision": self.changed()})

    # ----------------------------------------------------------------- predicting, refining, exporting
    async def predictions(self, request: Request) -> JSONResponse:
        snapshot = self.feed.snapshot()
        return JSONResponse({"live": snapshot.to_dict() if snapshot else None, "source": self.feed.status_dict()})

    async def predict(self, request: Request) -> JSONResponse:
        """The prediction for one posted image (the raw body, e.g. a JPEG frame of the browser's camera)."""
        body = await self._body(request)

        def predict() -> Any:
            return self.session.predict(decode_upload(body, label="the frame", max_pixels=self.max_pixels), self.top_k)

        prediction = await run_in_threadpool(predict)
        top = prediction.top
        return JSONResponse({**prediction.to_dict(), "top": None if top is None else {"label": top[0], "score": round(top[1], 6)},
                             "revision": prediction.revision})

    async def finetune(self, request: Request) -> JSONResponse:
        data = await self._json(request)
        steps = self._int(data, "steps", 300, 1, 5000)
        rate = data.get("learning_rate", 0.1)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 10:
            raise ApiError("learning_rate must be a number above 0 and at most 10")
        result = await run_in_threadpool(self.session.finetune, steps, float(rate))
        return JSONResponse({**result, "revision": self.changed()})

    async def evaluation(self, request: Request) -> JSONResponse:
        result = await run_in_threadpool(self.session.evaluate)
        return JSONResponse(result.to_dict())

    async def export_model(self, request: Request) -> Response:
        data = await run_in_threadpool(self.session.export_bytes)
        return Response(data, media_type="application/octet-stream",
                        headers={"content-disposition": 'attachment; filename="model.tflite"', "cache-control": "no-store"})

    async def export_labels(self, request: Request) -> Response:
        labels = await run_in_threadpool(lambda: self.session.labels)
        if not labels:
            raise ConflictError("nothing to export yet: add examples to a class first")
        return Response(format_labels(labels), media_type="text/plain; charset=utf-8",
                        headers={"content-disposition": 'attachment; filename="labels.txt"', "cache-control": "no-store"})

    async def retry_source(self, request: Request) -> JSONResponse:
        if not self.feed.attached:
            raise ConflictError("there is no device source to reopen")
        self.feed.retry()
        return JSONResponse({"source": self.feed.status_dict()})

    # ----------------------------------------------------------------- streams
    async def stream(self, request: Request) -> StreamingResponse:
        """The live frames as MJPEG; ``?max_frames=N`` ends after N frames (tests, benchmarks)."""
        if not self.feed.attached:
            raise NotFoundError("there is no device camera; the page can use the browser's camera or photos")
        limit = query_int(request, "max_frames")

        async def frames() -> AsyncIterator[bytes]:
            yield f"--{BOUNDARY}\r\n".encode()
            sequence, sent = -1, 0
            while limit is None or sent < limit:
                snapshot = await self.feed.wait(sequence, KEEPALIVE)
                if snapshot is None:
                    continue
                sequence, sent = snapshot.sequence, sent + 1
                head = f"Content-Type: image/jpeg\r\nContent-Length: {len(snapshot.jpeg)}\r\nX-Frame: {snapshot.state.frame.index}\r\n\r\n"
                yield head.encode() + snapshot.jpeg + f"\r\n--{BOUNDARY}\r\n".encode()

        return StreamingResponse(frames(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def events(self, request: Request) -> StreamingResponse:
        """Server-Sent Events: ``live`` (each prediction), ``changed`` (revision), ``source`` (status); ``?max_events=N``."""
        limit = query_int(request, "max_events")

        async def messages() -> AsyncIterator[str]:
            waiter = (asyncio.get_running_loop(), asyncio.Event())
            self.feed.add_waiter(waiter)
            sent, revision, source, sequence = 0, -1, None, -1
            try:
                yield "retry: 1000\n\n"
                while limit is None or sent < limit:
                    waiter[1].clear()
                    batch = []
                    if self.session.revision != revision:
                        revision = self.session.revision
                        batch.append(("changed", {"revision": revision}))
                    status = self.feed.status_dict()
                    if status != source:
                        source = status
                        batch.append(("source", status))
                    snapshot = self.feed.snapshot()
                    if snapshot is not None and snapshot.sequence > sequence:
                        sequence = snapshot.sequence
                        batch.append(("live", snapshot.to_dict()))
                    for name, data in batch:
                        yield f"event: {name}\ndata: {json.dumps(data)}\n\n"
                        sent += 1
                    if not batch:
                        try:
                            await asyncio.wait_for(waiter[1].wait(), KEEPALIVE)
                        except asyncio.TimeoutError:
                            yield ": keep-alive\n\n"
            finally:
                self.feed.remove_waiter(waiter)

        return StreamingResponse(messages(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    # ----------------------------------------------------------------- page
    async def index(self, request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


def create_app(session: TeachingSession, live: LiveLoop | None = None, *, token: str | None = None,
               source: SourceOpener | None = None, source_name: str | None = None,
               max_upload_bytes: int = 10 * 2**20, max_pixels: int = DEFAULT_MAX_PIXELS, top_k: int = 3,
               retries: int = 5, retry_delay: float = 1.0, log: Callable[[str], None] = print) -> Starlette:
    """The Starlette app teaching ``session`` from a browser.

    Args:
        session: the session every client teaches.
        live: the device's live loop (started here unless running), or ``None``.
        token: the access token every request must carry, or ``None`` (only for loopback: the
            caller decides; see :mod:`lastlayer.serve.security`).
        source: opens the device's loop for a predictor (``source(predictor) -> LiveLoop``, not
            started): used for the first loop when ``live`` is None, and to reopen it after a failure.
        source_name: the source's name for the page.
        max_upload_bytes: the largest request body of an upload (413 above).
        max_pixels: the largest photo, in pixels (413 above).
        top_k: how many classes a posted image's prediction lists.
        retries, retry_delay: reopening attempts after a source failure, and the first delay (doubling).
        log: where messages go (source errors, internal errors with their traceback).

    ``app.state.feed`` is the :class:`~lastlayer.serve.feed.Feed`; it stops on the app's shutdown.
    """
    opener = None if source is None else (lambda: source(session))
    feed = Feed(live, opener, name=source_name, retries=retries, first_delay=retry_delay, log=log, session=session)
    if live is None and opener is not None:
        try:
            feed.live = opener()
        except Exception as error:  # reported on the page; the feed keeps trying to open it
            feed.error = str(error) or type(error).__name__
            log(f"source error: {feed.error}")
    teacher = WebTeacher(session, feed, token=token, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, top_k=top_k, log=log)
    t = teacher
    routes = [
        Route("/", t.index, methods=["GET"]),
        Route("/api/state", t.state, methods=["GET"]),
        Route("/api/classes", t.list_classes, methods=["GET"]),
        Route("/api/classes", t.create_class, methods=["POST"]),
        Route("/api/classes/{class_id:int}", t.rename_class, methods=["PATCH"]),
        Route("/api/classes/{class_id:int}", t.delete_class, methods=["DELETE"]),
        Route("/api/classes/{class_id:int}/examples", t.class_examples, methods=["GET"]),
        Route("/api/classes/{class_id:int}/examples", t.upload, methods=["POST"]),
        Route("/api/classes/{class_id:int}/frames", t.add_frames, methods=["POST"]),
        Route("/api/examples/{example_id:int}/thumbnail.jpg", t.thumbnail, methods=["GET"]),
        Route("/api/examples/{example_id:int}", t.delete_example, methods=["DELETE"]),
        Route("/api/undo", t.undo, methods=["POST"]),
        Route("/api/predictions", t.predictions, methods=["GET"]),
        Route("/api/predict", t.predict, methods=["POST"]),
        Route("/api/finetune", t.finetune, methods=["POST"]),
        Route("/api/evaluation", t.evaluation, methods=["GET"]),
        Route("/api/export/model.tflite", t.export_model, methods=["GET"]),
        Route("/api/export/labels.txt", t.export_labels, methods=["GET"]),
        Route("/api/stream.mjpg", t.stream, methods=["GET"]),
        Route("/api/events", t.events, methods=["GET"]),
        Route("/api/source/retry", t.retry_source, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    async def known_error(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": str(error) or type(error).__name__}, status_code=status_of(error))

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        detail = error.detail if isinstance(error.detail, str) else "request refused"
        if error.status_code == 404 and detail == "Not Found":
            detail = f"there is no {request.url.path}"
        return JSONResponse({"error": detail}, status_code=error.status_code, headers=error.headers)

    async def disconnected(request: Request, error: Exception) -> Response:
        return JSONResponse({"error": "the client went away before the upload finished; nothing was added"}, status_code=400)

    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log(f"internal error on {request.method} {request.url.path}:\n{''.join(traceback.format_exception(type(error), error, error.__traceback__))}")
        return JSONResponse({"error": "internal error; the server log has the details"}, status_code=500)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(feed.stop)

    app = Starlette(
        routes=routes,
        middleware=[Middleware(_SecurityHeaders), Middleware(AccessGuard, token=token)],
        exception_handlers={LastLayerError: known_error, UploadError: known_error, HTTPException: http_error,
                            ClientDisconnect: disconnected, Exception: internal_error},
        lifespan=lifespan,
    )
    app.state.feed, app.state.teacher = feed, teacher
    feed.start()
    return app
