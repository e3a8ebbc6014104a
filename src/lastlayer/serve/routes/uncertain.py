"""The queue of frames the live view was unsure about (unknown, or two classes nearly tied): ``/api/uncertain``.

``GET /api/uncertain`` lists them (newest first) with the unknown rule the predictions apply;
``GET /api/uncertain/{id}/thumbnail.jpg`` is one's thumbnail; ``POST /api/uncertain/{id}/teach`` with
``{"class_id": N}`` or ``{"name": "..."}`` (a class created when new) adds it to a class with the embedding
its prediction computed; ``DELETE /api/uncertain/{id}`` dismisses it. The queue lives in the session's
memory (:attr:`lastlayer.teach.session.TeachingSession.uncertain`): a restart empties it.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lastlayer.errors import NotFoundError
from lastlayer.serve.context import WebContext
from lastlayer.serve.protocol import MAX_ID, ApiError, Whole, read_json


def routes(web: WebContext) -> list[Any]:
    session = web.session
    queue = session.uncertain

    async def listing(request: Request) -> JSONResponse:
        rule = await run_in_threadpool(session.unknown_rule)
        return JSONResponse({**queue.to_dict(), "rule": rule})

    async def thumbnail(request: Request) -> Response:
        data = queue.thumbnail(request.path_params["item_id"])
        if not data:
            raise NotFoundError("this uncertain frame has no thumbnail", subject="uncertain")
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})

    async def teach(request: Request) -> JSONResponse:
        data = await read_json(request)
        if "class_id" in data:
            ref: int | str = Whole(0, MAX_ID).value("class_id", data["class_id"])
        elif isinstance(data.get("name"), str):
            ref = data["name"]
        else:
            raise ApiError('send the class as {"class_id": N} or {"name": "..."}')
        item_id = request.path_params["item_id"]

        def add() -> tuple[list[Any], Any]:
            added = session.teach_uncertain(item_id, ref)
            return added, session.class_info(added[0].class_id)

        added, klass = await run_in_threadpool(add)
        return JSONResponse({"added": [e.to_dict() for e in added], "class": klass.to_dict(), "revision": web.changed()},
                            status_code=201)

    async def dismiss(request: Request) -> JSONResponse:
        item = session.dismiss_uncertain(request.path_params["item_id"])
        web.changed()
        return JSONResponse({"dismissed": item.id, "version": queue.version})

    return [
        Route("/api/uncertain", listing, methods=["GET"]),
        Route("/api/uncertain/{item_id:id}/thumbnail.jpg", thumbnail, methods=["GET"]),
        Route("/api/uncertain/{item_id:id}/teach", teach, methods=["POST"]),
        Route("/api/uncertain/{item_id:id}", dismiss, methods=["DELETE"]),
    ]
