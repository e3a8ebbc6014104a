"""Heavy requests take turns, so the live view keeps its share of the CPU and a crowd gets 503s instead of a backlog.

Decoding photos, embedding them, fine-tuning, evaluating and exporting run in worker threads that compete
with the live loop (which predicts every frame on the same cores) and with the event loop that sends the
stream and the events. :class:`Turns` lets ``slots`` of them run at once; the others wait in line, and
beyond ``queue`` waiting a request is answered 503 at once (with ``Retry-After``), as is one that waited
``max_wait`` seconds without a turn: under any load the server does a bounded amount of bulk work at a
time, and a request either gets its turn soon or is told to retry. Waiting costs no thread. Works from any event loop (each waiter is woken on its own).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator

from lastlayer.serve.protocol import ApiError

RETRY_AFTER = 2  # seconds


class ServerBusyError(ApiError):
    """The server is doing as much heavy work as it takes, and enough requests already wait: 503, retry later."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 503)
        self.headers = {"retry-after": str(RETRY_AFTER)}


class Turns:
    """At most ``slots`` holders at once, at most ``queue`` waiting, none waiting longer than ``max_wait`` seconds
    (``None``: as long as it takes); beyond either, :class:`ServerBusyError`."""

    def __init__(self, slots: int, queue: int, max_wait: float | None = None) -> None:
        self.slots, self.queue, self.max_wait = max(1, slots), max(0, queue), max_wait
        self.running = 0
        self._lock = threading.Lock()
        self._waiting: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one slot for the block (waiting in line for it first)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.running < self.slots and not self._waiting:
                self.running += 1
                waiter = None
            elif len(self._waiting) >= self.queue:
                raise ServerBusyError(f"the server is busy ({self.running} heavy requests running, {len(self._waiting)} waiting); "
                                      f"retry in {RETRY_AFTER} s")
            else:
                waiter = (loop, loop.create_future())
                self._waiting.append(waiter)
        if waiter is not None:
            try:
                await asyncio.wait_for(waiter[1], self.max_wait)
            except BaseException as error:
                with self._lock:
                    if waiter in self._waiting:
                        self._waiting.remove(waiter)
                        waiter = None
                if waiter is not None and waiter[1].done() and not waiter[1].cancelled():
                    self._release()  # the slot was handed over just as this request went away
                if isinstance(error, asyncio.TimeoutError):
                    raise ServerBusyError(f"the server is busy: no turn for this request within {self.max_wait:g} s; "
                                          f"retry in {RETRY_AFTER} s") from None
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        """Hand the slot to the first in line, or free it."""
        with self._lock:
            if not self._waiting:
                self.running -= 1
                return
            loop, future = self._waiting.popleft()
        try:
            loop.call_soon_threadsafe(self._grant, future)
        except RuntimeError:  # that request's event loop is closed: pass the slot on
            self._release()

    def _grant(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            self._release()  # its request went away meanwhile
        else:
            future.set_result(None)
