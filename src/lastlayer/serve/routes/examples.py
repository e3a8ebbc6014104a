"""Teaching: add the live frame or a burst (``/api/classes/{id}/frames``), upload photos (``/api/classes/{id}/examples``),
an example's thumbnail and removal (``/api/examples/{id}``), and ``/api/undo``.

Every addition returns only after the session committed it to the state folder.
"""

from __future__ import annotations

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
from lastlayer.serve.protocol import ApiError
from lastlayer.serve.uploads import decode_upload

MAX_BURST = 50
MAX_FILES = 32


def routes(web: WebContext) -> list[Any]:
    session = web.session

    async def teach(class_id: int, images: list[np.ndarray], embeddings: list[np.ndarray | None] | None = None) -> JSONResponse:
        """Add the images to the class (one call: all or nothing) and answer once they are stored."""

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
        data = await web.json(request)
        count = web.whole_number(data, "count", 1, 1, MAX_BURST)
        index = web.whole_number(data, "frame", None, 0, 2**62)
        if not web.feed.attached:
            raise ConflictError("there is no device camera; teach with photos or the browser's camera")
        if count == 1:
            kept = web.feed.frame(index)
            if kept is None:
                raise ConflictError("no live frame yet; wait for the camera or check the source error")
            frames = [kept]
        else:
            frames = await run_in_threadpool(web.feed.next_frames, count, 2.0 + count * 0.5)
            if len(frames) < count:
                raise ApiError(f"the camera delivered {len(frames)} of {count} frames in time; nothing was added", 503)
        return await teach(class_id, [f.pixels for f in frames], [f.embedding for f in frames])

    async def uploaded_images(request: Request) -> list[np.ndarray]:
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
            blobs = [await upload.read() for upload in files]
        finally:
            await form.close()
        return await run_in_threadpool(decode_all, blobs)

    def decode_all(blobs: list[bytes]) -> list[np.ndarray]:
        many = len(blobs) > 1
        return [decode_upload(blob, label=f"photo {number}" if many else "the photo", max_pixels=web.max_pixels)
                for number, blob in enumerate(blobs, 1)]

    async def upload(request: Request) -> JSONResponse:
        """Photos uploaded as multipart files: each decoded and checked, then all added at once."""
        images = await uploaded_images(request)
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
        Route("/api/classes/{class_id:int}/examples", upload, methods=["POST"]),
        Route("/api/classes/{class_id:int}/frames", add_frames, methods=["POST"]),
        Route("/api/examples/{example_id:int}/thumbnail.jpg", thumbnail, methods=["GET"]),
        Route("/api/examples/{example_id:int}", delete_example, methods=["DELETE"]),
        Route("/api/undo", undo, methods=["POST"]),
    ]
