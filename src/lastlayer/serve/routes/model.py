"""The taught model: predict a posted image (``/api/predict``), ``/api/finetune``, ``/api/evaluation``, and the downloads
``/api/export/model.tflite`` and ``/api/export/labels.txt``.

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
from lastlayer.serve.protocol import ApiError
from lastlayer.serve.uploads import decode_upload


def routes(web: WebContext) -> list[Any]:
    session = web.session

    async def predict(request: Request) -> JSONResponse:
        """The prediction for one posted image (the raw body, e.g. a JPEG frame of the browser's camera)."""
        body = await web.body(request)

        def predicted() -> Any:
            return session.predict(decode_upload(body, label="the frame", max_pixels=web.max_pixels), web.top_k)

        prediction = await run_in_threadpool(predicted)
        return JSONResponse({**prediction.to_dict(), "revision": prediction.revision})  # top: "unknown" when the rule says so

    async def finetune(request: Request) -> JSONResponse:
        data = await web.json(request)
        steps = web.whole_number(data, "steps", 300, 1, 5000)
        rate = data.get("learning_rate", 0.1)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 10:
            raise ApiError("learning_rate must be a number above 0 and at most 10")
        result = await run_in_threadpool(session.finetune, steps, float(rate))
        return JSONResponse({**result, "revision": web.changed()})

    async def evaluation(request: Request) -> JSONResponse:
        result = await run_in_threadpool(session.evaluate)
        return JSONResponse(result.to_dict())

    async def export_model(request: Request) -> Response:
        data = await run_in_threadpool(session.export_bytes)
        return Response(data, media_type="application/octet-stream",
                        headers={"content-disposition": 'attachment; filename="model.tflite"', "cache-control": "no-store"})

    async def export_labels(request: Request) -> Response:
        labels = await run_in_threadpool(lambda: session.labels)
        if not labels:
            raise ConflictError("nothing to export yet: add examples to a class first")
        return Response(format_labels(labels), media_type="text/plain; charset=utf-8",
                        headers={"content-disposition": 'attachment; filename="labels.txt"', "cache-control": "no-store"})

    return [
        Route("/api/predict", predict, methods=["POST"]),
        Route("/api/finetune", finetune, methods=["POST"]),
        Route("/api/evaluation", evaluation, methods=["GET"]),
        Route("/api/export/model.tflite", export_model, methods=["GET"]),
        Route("/api/export/labels.txt", export_labels, methods=["GET"]),
    ]
