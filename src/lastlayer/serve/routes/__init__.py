"""The web app's endpoints, one module per resource, assembled by :func:`lastlayer.serve.app.create_app`.

Each module defines ``routes(web) -> list`` of Starlette routes whose handlers work on the shared
:class:`~lastlayer.serve.context.WebContext` (the session, the live feed, the limits). A new endpoint
is one handler and one ``Route`` in the module of its resource; a new resource is one module here plus
its name in :data:`lastlayer.serve.app.RESOURCES`. A handler checks no session rule itself: it calls the
session in a worker thread (``run_in_threadpool``) and lets library errors through, which answer with
the status of their kind (:data:`lastlayer.serve.protocol.STATUS_BY_KIND`, the one table); a bad request
raises :class:`~lastlayer.serve.protocol.ApiError` with its status. Every route passes the access rules
of :mod:`lastlayer.serve.security` first.

``page`` (the page and its static files), ``classes`` (state, classes), ``examples`` (teaching: live
frames, uploads, thumbnails, undo), ``model`` (predicting an image, fine-tuning, evaluating, exports),
``live`` (the live prediction, the MJPEG stream, Server-Sent Events, reopening the source), ``uncertain``
(the queue of frames the live view was unsure about: list, teach one to a class, dismiss).
"""
