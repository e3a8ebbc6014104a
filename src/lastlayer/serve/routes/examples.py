"""Teaching: add the live frame or a burst (``/api/classes/{id}/frames``), upload photos (``/api/classes/{id}/examples``),
an example's thumbnail and removal (``/api/examples/{id}``), and ``/api/undo``.

Every addition returns only after the session committed it to the state folder. A burst waits for the camera's
frames on the event loop (no worker thread is held) and fails at once when the camera stalls; uploads take a turn
among the heavy requests (:attr:`~lastlayer.serve.context.WebContext.heavy`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lastlayer.errors import ConflictError
from lastlayer.serve.context import WebContext
from lastlayer.serve.protocol import MAX_ID, ApiError, Body, Whole
from lastlayer.serve.uploads import decode_uploads

MAX_BURST = 50
MAX_FILES = 32
FRAMES = Body(count=Whole(1, MAX_BURST, 1), frame=Whole(0, MAX_ID))


def routes(web: WebContext) -> list[Any]:
    session = web.session

    async def teach(class_id: int, images: list[Any], embeddings: list[np.ndarray | None] | None = None) -> JSONResponse:
        """Add the images (arrays, or kept frames: anything with ``pixels``) to the class (one call: all or nothing) and
        answer once they are stored."""

        def add() -> tuple[list[Any], Any]:
            added = session.add_examples(class_id, images, embeddings=embeddings)
            return added, session.class_info(class_id)

        added, klass = await run_in_threadpool(add)
        return JSONResponse({"added": [e.to_dict() for e in added], "class": klass.to_dict(), "revision": web.changed()},
                            status_code=201)

    async def add_frames(request: Request) -> JSONResponse:
        """Add the live frame the page showed (``frame``: its index, when still kept), or a burst of ``count`` new frames.

        A kept frame carries the embedding its prediction computed, so it is not embedded again.
        """
        class_id = request.path_params["class_id"]
        fields = await FRAMES.read(request)
        count, index = fields["count"], fields["frame"]
        if not web.feed.attached:
            raise ConflictError("there is no device camera; teach with photos or the browser's camera")
        if count == 1:
            kept = web.feed.frame(index)
            if kept is None:
                raise ConflictError("no live frame yet; wait for the camera or check the source error")
            frames = [kept]
        else:
            frames = await web.feed.next_frames(count)
            if len(frames) < count:
                raise ApiError(f"the camera delivered {len(frames)} of {count} frames in time (it is {web.feed.status}); "
                               "nothing was added", 503)
        return await teach(class_id, frames, [f.embedding for f in frames])  # (decoded in the worker thread)

    async def uploaded_blobs(request: Request) -> list[bytes]:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ApiError("upload the photos as multipart/form-data (a form with file fields)", 415)
        body = await web.body(request)
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
            return [await upload.read() for upload in files]
        finally:
            await form.close()

    async def upload(request: Request) -> JSONResponse:
        """Photos uploaded as multipart files: each decoded and checked, then all added at once. The body is read before
        the request takes its turn, so a slow sender holds no decoding slot."""
        blobs = await uploaded_blobs(request)
        async with web.heavy.turn():
            images = await run_in_threadpool(partial(decode_uploads, blobs, max_pixels=web.max_pixels))
            return await teach(request.path_params["class_id"], images)

    async def thumbnail(request: Request) -> Response:
        data = await run_in_threadpool(session.thumbnail, request.path_params["example_id"])
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=86400"})

    async def delete_example(request: Request) -> JSONResponse:
        example_id = request.path_params["example_id"]
        await run_in_threadpool(session.remove_example, example_id)
        return JSONResponse({"deleted": example_id, "revision": web.changed()})

    async def undo(request: Request) -> JSONResponse:
        undone = await run_in_threadpool(session.undo)
        return JSONResponse({"undone": None if undone is None else undone.to_dict(), "revision": web.changed()})

    return [
        Route("/api/classes/{class_id:id}/examples", upload, methods=["POST"]),
        Route("/api/classes/{class_id:id}/frames", add_frames, methods=["POST"]),
        Route("/api/examples/{example_id:id}/thumbnail.jpg", thumbnail, methods=["GET"]),
        Route("/api/examples/{example_id:id}", delete_example, methods=["DELETE"]),
        Route("/api/undo", undo, methods=["POST"]),
    ]
