"""The device's live view for the web app: one supervised :class:`LiveLoop`, fanned out to every client.

A pump thread takes each new :class:`~lastlayer.teach.live.LiveState` from the loop, shrinks its
frame to display size (at most :data:`DISPLAY_SIDE` pixels on its longer side) and encodes it to JPEG
once (every stream client sends the same bytes, every events client the same JSON), keeps the last
frames as those JPEGs with their embeddings, so a teach request can add exactly the frame the page
showed without embedding it again (memory stays a few megabytes whatever the camera's resolution),
and wakes the waiting clients (asyncio events set through ``call_soon_threadsafe``). When the loop
stops (camera unplugged, stream stalled, file ended) the pump reports the error and reopens the
source with back-off: ``retries`` attempts, the delay doubling from ``first_delay``; after that it
waits for :meth:`Feed.retry`. Every name and message the feed shows or logs has its credentials
masked (:func:`~lastlayer.sources.base.redact`: ``rtsp://admin:***@camera/...``).

A watch thread looks at the teaching state every :data:`WATCH_INTERVAL` seconds and wakes the
clients when any process changed it (the page's ``changed`` event). Predictions carry the state's
revision they were computed at, so a client can tell the first prediction that uses a new example.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from lastlayer.errors import LastLayerError
from lastlayer.images.decode import decode_image_bytes, encode_jpeg, resize_array
from lastlayer.sources.base import redact
from lastlayer.teach.live import LiveLoop, LiveState
from lastlayer.teach.session import TeachingSession

JPEG_QUALITY = 80
DISPLAY_SIDE = 640  # the longer side of a streamed (and kept) frame, at most
KEEP_FRAMES = 90  # frames kept for "add the frame I saw" (6 s at 15 fps)
WATCH_INTERVAL = 0.25  # seconds between two looks at the state for other processes' changes
FRAME_WAIT = 1.0  # seconds a burst waits for each next frame before it calls the camera stalled


class KeptFrame(NamedTuple):
    """A streamed frame kept for teaching: its index, its display-size JPEG, and its unit embedding (``None`` if unknown)."""

    index: int
    jpeg: bytes
    embedding: np.ndarray | None

    @property
    def pixels(self) -> np.ndarray:
        """The frame as display-size RGB pixels (decoded from the kept JPEG)."""
        return decode_image_bytes(self.jpeg, name=f"frame {self.index}")


def display_size(pixels: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """``pixels`` shrunk (aspect kept) so that the longer side is at most ``side``; as they are when already small."""
    height, width = pixels.shape[:2]
    if max(width, height) <= side:
        return pixels
    scale = side / max(width, height)
    return resize_array(pixels, (max(1, round(width * scale)), max(1, round(height * scale))))


@dataclass(frozen=True)
class Snapshot:
    """One streamed frame: the live state (its frame at display size), its JPEG, the state revision of its prediction, a
    sequence number, the frame kept for teaching, and its ``live`` event's JSON (encoded once for every client)."""

    state: LiveState
    jpeg: bytes
    revision: int | None
    sequence: int
    kept: KeptFrame | None = None
    event: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**self.state.to_dict(), "revision": self.revision, "sequence": self.sequence}


class Feed:
    """The live loop of the device's source, supervised and shared by all clients.

    Args:
        live: the loop (started here if not yet running), or ``None`` for no device source.
        opener: makes a new (unstarted) loop after the source failed, or ``None`` to never reopen.
        name: the source's name for the page.
        retries, first_delay, max_delay: reopening attempts and their back-off (seconds).
        log: where to report source failures and recoveries.
        session: the teaching session whose state is watched for other processes' changes, or ``None``.
    """

    def __init__(self, live: LiveLoop | None, opener: Callable[[], LiveLoop] | None = None, *, name: str | None = None,
                 retries: int = 5, first_delay: float = 1.0, max_delay: float = 16.0,
                 log: Callable[[str], None] = print, session: TeachingSession | None = None) -> None:
        self.live, self.opener, self.session = live, opener, session
        self.name = None if name is None else redact(name)
        self.retries, self.first_delay, self.max_delay = retries, first_delay, max_delay
        self.frame_wait = FRAME_WAIT
        self.log = lambda line: log(redact(line))
        self.status = "starting" if live is not None or opener is not None else "none"
        self.error: str | None = None
        self.attempt = 0
        self._snapshot: Snapshot | None = None
        self._frames: deque[KeptFrame] = deque(maxlen=KEEP_FRAMES)
        self._sequence = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._retry = threading.Event()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None

    @property
    def attached(self) -> bool:
        """Whether there is a device source at all."""
        return self.live is not None or self.opener is not None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Feed:
        if self.attached and self._thread is None:
            if self.live is not None and not self.live.running:
                self.live.start()
            self._thread = threading.Thread(target=self._pump, name="lastlayer-web-feed", daemon=True)
            self._thread.start()
        if self.session is not None and self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="lastlayer-web-state", daemon=True)
            self._watcher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._retry.set()
        if self.live is not None:
            self.live.stop()
        for thread in (self._thread, self._watcher):
            if thread is not None:
                thread.join(5.0)
        self.notify()

    def retry(self) -> None:
        """Reopen the source now (after the automatic attempts gave up)."""
        self.attempt = 0
        self._retry.set()

    # ----------------------------------------------------------------- threads
    def _watch(self) -> None:
        """Wake the clients whenever the state's revision moved (looked at every :data:`WATCH_INTERVAL`).

        Compared with the revision last announced, not with what this look found: a request of this
        server may have caught up with another process's change first.
        """
        assert self.session is not None
        announced, failing = self.session.revision, False
        while not self._stop.wait(WATCH_INTERVAL):
            try:
                self.session.refresh()
            except LastLayerError as error:  # e.g. the disk is failing: said once, and looked at again
                if not failing:
                    self.log(f"cannot read the state: {error}")
                failing = True
            else:
                failing = False
            if self.session.revision != announced:
                announced = self.session.revision
                self.notify()

    def _pump(self) -> None:
        processed = 0
        while not self._stop.is_set():
            live = self.live
            if live is None:  # the source could not be opened at start
                self._reopen(None)
                processed = 0
                continue
            state = live.wait_newer(processed, 0.5)
            if state is not None:
                processed = state.processed
                self._publish(state)
            elif not live.running and not self._stop.is_set():
                self._reopen(live)
                processed = 0

    def _publish(self, state: LiveState) -> None:
        shown = display_size(state.frame.pixels)
        jpeg = encode_jpeg(shown, JPEG_QUALITY)
        state = dataclasses.replace(state, frame=dataclasses.replace(state.frame, pixels=shown))  # no full-size frame is kept
        kept = KeptFrame(state.frame.index, jpeg, state.prediction.embedding)
        with self._cond:
            self._sequence += 1
            snapshot = Snapshot(state, jpeg, state.prediction.revision, self._sequence, kept)
            self._snapshot = dataclasses.replace(snapshot, event=json.dumps(snapshot.to_dict()))
            self._frames.append(kept)
            if self.status != "live":
                if self.status == "reconnecting":
                    self.log(f"source {self.name} is back")
                self.status, self.error, self.attempt = "live", None, 0
            self._cond.notify_all()
        self.notify()

    def _reopen(self, dead: LiveLoop | None) -> None:
        """Report why the loop ended and open the source again with back-off (or wait for :meth:`retry`)."""
        if dead is None:
            reason = self.error or f"source {self.name} could not be opened"
        else:
            reason = redact(str(dead.error)) if dead.error is not None else f"source {self.name} ended"
            dead.stop(1.0)
        with self._cond:
            self.status, self.error = "reconnecting", reason
        self.log(f"source error: {reason}")
        self.notify()
        while not self._stop.is_set():
            if self.opener is None or self.attempt >= self.retries:
                with self._cond:
                    self.status = "failed"
                self.notify()
                self.log("giving up on the source; uploads still work (the page's Retry button tries again)")
                self._retry.wait()
                self._retry.clear()
                if self._stop.is_set() or self.opener is None:
                    return
                with self._cond:
                    self.status = "reconnecting"
                self.notify()
            delay = min(self.max_delay, self.first_delay * 2 ** self.attempt)
            self.attempt += 1
            self.log(f"reopening source {self.name} in {delay:g} s (attempt {self.attempt}/{self.retries})")
            if self._stop.wait(delay):
                return
            try:
                self.live = self.opener().start()
                return
            except Exception as error:  # a failed reopen is reported and retried, never fatal
                with self._cond:
                    self.error = redact(str(error) or type(error).__name__)
                self.log(f"source error: {self.error}")
                self.notify()

    # ----------------------------------------------------------------- readers
    def snapshot(self) -> Snapshot | None:
        with self._cond:
            return self._snapshot

    def status_dict(self) -> dict[str, Any]:
        """``{"kind", "name", "status", "error"}`` for the page (kind ``"device"`` or ``None``), credentials masked."""
        return {"kind": "device" if self.attached else None, "name": self.name, "status": self.status,
                "error": None if self.error is None else redact(self.error),
                "attempt": self.attempt, "retries": self.retries}

    def frame(self, index: int | None = None) -> KeptFrame | None:
        """The kept frame with ``index`` (when still kept), else the newest; ``None`` before the first."""
        with self._cond:
            if index is not None:
                for kept in reversed(self._frames):
                    if kept.index == index:
                        return kept
            return self._frames[-1] if self._frames else None

    async def next_frames(self, count: int) -> list[KeptFrame]:
        """The next ``count`` new frames, waited for on the event loop (no thread is held); fewer when the source is not
        live, or no new frame came within :attr:`frame_wait` seconds (a stalled camera fails a burst fast)."""
        frames: list[KeptFrame] = []
        snapshot = self.snapshot()
        sequence = snapshot.sequence if snapshot is not None else 0
        while len(frames) < count and self.status == "live" and not self._stop.is_set():
            snapshot = await self.wait(sequence, self.frame_wait)
            if snapshot is None or snapshot.kept is None:
                break
            sequence = snapshot.sequence
            frames.append(snapshot.kept)
        return frames

    # ----------------------------------------------------------------- async waiting
    async def wait(self, after: int, timeout: float) -> Snapshot | None:
        """The newest snapshot once its sequence is above ``after`` (``None`` after ``timeout`` seconds without one)."""
        snapshot = self.snapshot()
        if snapshot is not None and snapshot.sequence > after:
            return snapshot
        loop = asyncio.get_running_loop()
        waiter = (loop, asyncio.Event())
        deadline = loop.time() + timeout
        with self._cond:
            self._waiters.add(waiter)
        try:
            while True:
                snapshot = self.snapshot()
                if snapshot is not None and snapshot.sequence > after:
                    return snapshot
                left = deadline - loop.time()
                if left <= 0:
                    return None
                waiter[1].clear()
                with contextlib.suppress(asyncio.TimeoutError):  # (woken by any change: look again)
                    await asyncio.wait_for(waiter[1].wait(), left)
        finally:
            with self._cond:
                self._waiters.discard(waiter)

    def add_waiter(self, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        """Have ``waiter``'s event set on every change of the feed (frames and status); see :meth:`notify`."""
        with self._cond:
            self._waiters.add(waiter)

    def remove_waiter(self, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._cond:
            self._waiters.discard(waiter)

    def notify(self) -> None:
        """Wake every waiting client (after a frame, a status change, or a change of the state)."""
        with self._cond:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that client's event loop is closed
                loop.call_soon_threadsafe(event.set)

