"""``lastlayer teach --web``: teach a session from any browser (a JSON API, a live stream and one static page).

:func:`lastlayer.serve.server.serve` runs the server; :func:`lastlayer.serve.app.create_app` builds the
ASGI application (for tests and embedding). Both need the optional ``web`` extra
(Starlette, uvicorn, python-multipart), imported only when a server is built: importing this
package needs nothing beyond lastlayer itself.
"""

from __future__ import annotations

from lastlayer.errors import LastLayerError

# Plain package names: they install the same whether lastlayer came from a wheel, a checkout or an index.
WEB_PACKAGES = ("starlette", "uvicorn", "python-multipart")
WEB_EXTRA_HINT = f"the web page needs lastlayer's 'web' extra: pip install {' '.join(WEB_PACKAGES)}"


def missing_web(error: ImportError) -> LastLayerError:
    """The error to raise when an import of the ``web`` extra failed."""
    name = getattr(error, "name", None) or str(error)
    return LastLayerError(f"{WEB_EXTRA_HINT} (cannot import {name})", subject="web")


def require_web() -> None:
    """Raise :class:`~lastlayer.errors.LastLayerError` naming the extra unless its packages import."""
    try:
        import python_multipart  # noqa: F401  (Starlette's form parser)
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise missing_web(error) from None
