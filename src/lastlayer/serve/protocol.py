"""The HTTP side of the web API: errors answered with the status of their kind, and request bodies read within limits.

Nothing here imports Starlette (requests only pass through), so the status table is cheap to read and test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lastlayer.errors import BusyError, ConflictError, LastLayerError, NotFoundError, StorageError

if TYPE_CHECKING:
    from starlette.requests import Request

# The HTTP status of each kind of library error (the one table; a new kind that needs a status is one row
# here): the twin of the command line's exit codes, where every kind exits 1 with its one-line message.
# Other errors answer their own ``status``, else 400.
STATUS_BY_KIND: tuple[tuple[type[Exception], int], ...] = (
    (NotFoundError, 404),  # a class or example that does not exist (any more)
    (ConflictError, 409),  # a name taken, a class that takes no examples, nothing to export yet
    (BusyError, 503),  # another process held the write lock past the busy timeout: retry
    (StorageError, 507),  # disk full, state read-only, database deleted: nothing was stored
)


def status_of(error: Exception) -> int:
    """The HTTP status answering ``error`` (see :data:`STATUS_BY_KIND`)."""
    for kind, status in STATUS_BY_KIND:
        if isinstance(error, kind):
            return status
    return int(getattr(error, "status", 400))


class ApiError(LastLayerError):
    """An error answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, subject="web")
        self.status = status


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole request body, refused with 413 beyond ``limit`` bytes (declared or counted while it arrives)."""
    declared = request.headers.get("content-length")
    too_big = f"more than the {limit / 2**20:.3g} MiB allowed; send fewer or smaller photos"
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(f"the request is {int(declared) / 2**20:.1f} MiB, {too_big}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(f"the request is {too_big}", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def query_int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ApiError(f"{name} must be a positive whole number")
    return int(value)
