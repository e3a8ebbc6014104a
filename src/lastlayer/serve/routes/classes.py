"""The state and the classes: ``/api/state``, ``/api/classes`` (list, create), ``/api/classes/{id}`` (rename, delete, examples)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lastlayer.serve.context import WebContext
from lastlayer.serve.protocol import Body, Text

NEW_CLASS = Body(name=Text("the new class's name"))
RENAMED = Body(name=Text("the new name"))


def routes(web: WebContext) -> list[Any]:
    session = web.session

    def current_state() -> dict[str, Any]:
        revision, listing = web.class_listing()
        snapshot = web.feed.snapshot()
        return {"classes": listing, "revision": revision, "labels": session.labels, "origin": session.origin().to_dict(),
                "source": web.feed.status_dict(), "live": snapshot.to_dict() if snapshot else None,
                "token_required": web.token is not None, "max_upload_bytes": web.max_upload_bytes,
                "input_size": list(session.input_size)}

    async def state(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(current_state))

    async def list_classes(request: Request) -> JSONResponse:
        return JSONResponse({"classes": (await run_in_threadpool(web.class_listing))[1]})

    async def create_class(request: Request) -> JSONResponse:
        info = await run_in_threadpool(session.add_class, (await NEW_CLASS.read(request))["name"])
        return JSONResponse({"class": info.to_dict(), "revision": web.changed()}, status_code=201)

    async def rename_class(request: Request) -> JSONResponse:
        name = (await RENAMED.read(request))["name"]
        info = await run_in_threadpool(session.rename_class, request.path_params["class_id"], name)
        return JSONResponse({"class": info.to_dict(), "revision": web.changed()})

    async def delete_class(request: Request) -> JSONResponse:
        class_id = request.path_params["class_id"]
        await run_in_threadpool(session.remove_class, class_id)
        return JSONResponse({"deleted": class_id, "revision": web.changed()})

    async def class_examples(request: Request) -> JSONResponse:
        examples = await run_in_threadpool(session.examples, request.path_params["class_id"])
        return JSONResponse({"examples": [e.to_dict() for e in examples]})

    return [
        Route("/api/state", state, methods=["GET"]),
        Route("/api/classes", list_classes, methods=["GET"]),
        Route("/api/classes", create_class, methods=["POST"]),
        Route("/api/classes/{class_id:id}", rename_class, methods=["PATCH"]),
        Route("/api/classes/{class_id:id}", delete_class, methods=["DELETE"]),
        Route("/api/classes/{class_id:id}/examples", class_examples, methods=["GET"]),
    ]
