"""The taught model: predict a posted image (``/api/predict``), ``/api/finetune``, ``/api/evaluation``, the downloads
``/api/export/model.tflite`` and ``/api/export/labels.txt``, and ``/api/origin``: the model the session started
from, whose own classes a classifier's state may keep (``POST {"keep_classes": true}`` while it holds no class).

A fine-tune works on a copy of the head in a worker thread, so the stream and the predictions never wait for it.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lastlayer.errors import ConflictError
from lastlayer.model.labels import format_labels
from lastlayer.serve.context import WebContext
from lastlayer.serve.protocol import Body, Flag, Number, Whole
from lastlayer.serve.uploads import decode_upload

FINETUNE = Body(steps=Whole(1, 5000, 300), learning_rate=Number(0, 10, 0.1))
KEEP = Body(keep_classes=Flag())


def routes(web: WebContext) -> list[Any]:
    session = web.session

    async def predict(request: Request) -> JSONResponse:
        """The prediction for one posted image (the raw body, e.g. a JPEG frame of the browser's camera)."""
        body = await web.body(request)  # (before the turn: a slow sender holds no slot)
        async with web.heavy.turn():

            def predicted() -> Any:
                return session.predict(decode_upload(body, label="the frame", max_pixels=web.max_pixels), web.top_k)

            prediction = await run_in_threadpool(predicted)
        return JSONResponse({**prediction.to_dict(), "revision": prediction.revision})  # top: "unknown" when the rule says so

    async def finetune(request: Request) -> JSONResponse:
        fields = await FINETUNE.read(request)
        async with web.jobs.turn():
            result = await run_in_threadpool(session.finetune, fields["steps"], fields["learning_rate"])
        return JSONResponse({**result, "revision": web.changed()})

    async def evaluation(request: Request) -> JSONResponse:
        async with web.jobs.turn():
            result = await run_in_threadpool(session.evaluate)
        return JSONResponse(result.to_dict())

    async def export_model(request: Request) -> Response:
        async with web.jobs.turn():
            data = await run_in_threadpool(session.export_bytes)
        return Response(data, media_type="application/octet-stream",
                        headers={"content-disposition": 'attachment; filename="model.tflite"', "cache-control": "no-store"})

    async def export_labels(request: Request) -> Response:
        labels = await run_in_threadpool(lambda: session.labels)
        if not labels:
            raise ConflictError("nothing to export yet: add examples to a class first")
        return Response(format_labels(labels), media_type="text/plain; charset=utf-8",
                        headers={"content-disposition": 'attachment; filename="labels.txt"', "cache-control": "no-store"})

    async def origin(request: Request) -> JSONResponse:
        """The model the session started from, and the names of its own classes when they are kept."""

        def described() -> dict[str, Any]:
            return {**session.origin().to_dict(), "labels": [c.name for c in session.own_classes()]}

        return JSONResponse(await run_in_threadpool(described))

    async def keep_classes(request: Request) -> JSONResponse:
        """``{"keep_classes": true|false}``: keep the classifier's own classes (or stop), while the state holds no class."""
        keep = (await KEEP.read(request))["keep_classes"]
        result = await run_in_threadpool(session.keep_model_classes, keep)
        return JSONResponse({**result.to_dict(), "revision": web.changed()})

    return [
        Route("/api/origin", origin, methods=["GET"]),
        Route("/api/origin", keep_classes, methods=["POST"]),
        Route("/api/predict", predict, methods=["POST"]),
        Route("/api/finetune", finetune, methods=["POST"]),
        Route("/api/evaluation", evaluation, methods=["GET"]),
        Route("/api/export/model.tflite", export_model, methods=["GET"]),
        Route("/api/export/labels.txt", export_labels, methods=["GET"]),
    ]
