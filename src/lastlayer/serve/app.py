"""The ASGI application: a JSON API over one :class:`TeachingSession`, a live stream, and the static page.

Routes (all under the :mod:`lastlayer.serve.security` rules; errors are ``{"error": "..."}``):

=======  =====================================  ==================================================
GET      /                                      the page (``static/index.html``)
GET      /api/state                             classes (+ newest example ids), revision, source, live, origin
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
GET      /api/origin                            the model the session started from (+ its kept classes' names)
POST     /api/origin                            ``{"keep_classes"}``: keep a classifier's own classes (no class yet)
GET      /api/stream.mjpg                       the live frames (multipart/x-mixed-replace JPEG)
GET      /api/events                            Server-Sent Events: ``live``, ``changed``, ``source``, ``uncertain``
POST     /api/source/retry                      reopen the device's source now
GET      /api/uncertain                         the frames the live view was unsure about, and the unknown rule
GET      /api/uncertain/{id}/thumbnail.jpg      an uncertain frame's thumbnail
POST     /api/uncertain/{id}/teach              ``{"class_id"}`` or ``{"name"}`` -> the frame added to that class
DELETE   /api/uncertain/{id}                    dismiss an uncertain frame
=======  =====================================  ==================================================

The handlers live in :mod:`lastlayer.serve.routes`, one module per resource (:data:`RESOURCES`; a new
one is a module there plus its name here). Every input is checked by the one validation layer of
:mod:`lastlayer.serve.protocol` (ids in paths, counts in queries, JSON bodies and their fields), so a bad
input is a 4xx with a sentence; an unexpected error is a 500 with a sentence (its traceback goes to the
log), and neither closes the connection. Every change returns only after the session committed it
to the state folder. Every session call runs in a worker thread, so the event loop (static files, the
stream, events) never waits for the disk, another process's lock or a fine-tune. Library errors answer
with the status of their kind (:data:`lastlayer.serve.protocol.STATUS_BY_KIND`); the handlers do not
check the session's rules themselves, so a race with another client or process gets the same answer as
a plain mistake.
"""

from __future__ import annotations

import importlib
import json
import traceback
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from lastlayer.errors import LastLayerError
from lastlayer.serve import missing_web
from lastlayer.serve.context import WebContext
from lastlayer.serve.feed import Feed
from lastlayer.serve.protocol import register_id_convertor, status_of
from lastlayer.serve.security import AccessGuard, SecurityHeaders
from lastlayer.serve.uploads import DEFAULT_MAX_PIXELS, UploadError
from lastlayer.sources.base import redact
from lastlayer.teach.live import LiveLoop, Predictor
from lastlayer.teach.session import TeachingSession

try:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
except ImportError as _error:
    raise missing_web(_error) from None

# The resources of the API, each a module of lastlayer.serve.routes with routes(web) -> list of routes.
RESOURCES = ("page", "classes", "examples", "model", "live", "uncertain")
SourceOpener = Callable[[Predictor], LiveLoop]


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
        log: where messages go (source errors, internal errors with their traceback), credentials masked.

    ``app.state.feed`` is the :class:`~lastlayer.serve.feed.Feed`; it stops on the app's shutdown.
    """
    log = _masked(log)
    opener = None if source is None else (lambda: source(session))
    feed = Feed(live, opener, name=source_name, retries=retries, first_delay=retry_delay, log=log, session=session)
    if live is None and opener is not None:
        try:
            feed.live = opener()
        except Exception as error:  # reported on the page; the feed keeps trying to open it
            feed.error = redact(str(error) or type(error).__name__)
            log(f"source error: {feed.error}")
    web = WebContext(session, feed, token=token, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, top_k=top_k, log=log)
    register_id_convertor()
    routes = [route for name in RESOURCES for route in importlib.import_module(f"lastlayer.serve.routes.{name}").routes(web)]

    async def known_error(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": str(error) or type(error).__name__}, status_code=status_of(error),
                            headers=getattr(error, "headers", None))

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        detail = error.detail if isinstance(error.detail, str) else "request refused"
        if error.status_code == 404 and detail == "Not Found":
            detail = f"there is no {request.url.path}"
        return JSONResponse({"error": detail}, status_code=error.status_code, headers=error.headers)

    async def disconnected(request: Request, error: Exception) -> Response:
        return JSONResponse({"error": "the client went away before the upload finished; nothing was added"}, status_code=400)


    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(feed.stop)

    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders), Middleware(InternalErrors, log=log), Middleware(AccessGuard, token=token)],
        exception_handlers={LastLayerError: known_error, UploadError: known_error, HTTPException: http_error,
                            ClientDisconnect: disconnected},
        lifespan=lifespan,
    )
    app.state.feed, app.state.web = feed, web
    feed.start()
    return app


def _masked(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` with the credentials of every URL in a line masked (a source's password never reaches a log)."""
    return lambda line: log(redact(line))


class InternalErrors:
    """ASGI middleware answering an unexpected exception with a 500 and a sentence (the traceback goes to ``log``),
    without re-raising it: the server keeps the connection open (Starlette's own handler re-raises, and uvicorn
    then closes it). An error after the response started can only end that response."""

    def __init__(self, app: Any, log: Callable[[str], None]) -> None:
        self.app, self.log = app, log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as error:
            trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            self.log(f"internal error on {scope.get('method')} {scope.get('path')}:\n{trace}")
            if started:
                raise
            body = json.dumps({"error": "internal error; the server log has the details"}).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
