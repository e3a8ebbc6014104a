"""The device's live view for the web app: one supervised :class:`LiveLoop`, fanned out to every client.

A pump thread takes each new :class:`~lastlayer.teach.live.LiveState` from the loop, encodes its
frame to JPEG once (every stream client sends the same bytes), keeps the last frames so a teach
request can add exactly the frame the page showed, and wakes the waiting clients (asyncio events
set through ``call_soon_threadsafe``). When the loop stops (camera unplugged, stream stalled, file
ended) the pump reports the error and reopens the source with back-off: ``retries`` attempts,
the delay doubling from ``first_delay``; after that it waits for :meth:`Feed.retry`.

:class:`Revision` counts the changes to the session; predictions are tagged with the revision they
were computed at, so a client can tell the first prediction that uses a new example.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from lastlayer.images import encode_jpeg
from lastlayer.teach.live import LiveLoop, LiveState
from lastlayer.teach.session import Prediction, TeachingSession

JPEG_QUALITY = 80
KEEP_FRAMES = 90  # frames kept for "add the frame I saw" (6 s at 15 fps)


class Revision:
    """A counter of the session's changes (thread-safe)."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    @property
    def value(self) -> int:
        return self._value

    def bump(self) -> int:
        with self._lock:
            self._value += 1
            return self._value


class TaggedPredictor:
    """Wraps a session's ``predict``: remembers the revision each prediction was made at.

    A live loop keeps the :class:`Prediction` object it got in its state, so :meth:`tag` finds the
    revision by identity, whatever the loop passes in (frames or resized pixels).
    """

    def __init__(self, session: TeachingSession, revision: Revision, keep: int = 64) -> None:
        self.session, self.revision = session, revision
        self._recent: deque[tuple[Prediction, int]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    @property
    def input_size(self) -> tuple[int, int]:
        """The model's input (width, height): a live loop may resize frames ahead of :meth:`predict`."""
        return self.session.input_size

    def predict(self, image: Any, top_k: int = 3) -> Prediction:
        tag = self.revision.value  # read before predicting: the prediction uses at least this revision
        prediction = self.session.predict(image, top_k)
        with self._lock:
            self._recent.append((prediction, tag))
        return prediction

    def tag(self, prediction: Prediction) -> int | None:
        """The revision ``prediction`` was made at (``None`` if it did not come from here recently)."""
        with self._lock:
            for made, tag in reversed(self._recent):
                if made is prediction:
                    return tag
        return None


@dataclass(frozen=True)
class Snapshot:
    """One streamed frame: the live state, its JPEG, the session revision of its prediction, a sequence number."""

    state: LiveState
    jpeg: bytes
    revision: int | None
    sequence: int

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
    """

    def __init__(self, live: LiveLoop | None, opener: Callable[[], LiveLoop] | None = None, *, name: str | None = None,
                 retries: int = 5, first_delay: float = 1.0, max_delay: float = 16.0,
                 log: Callable[[str], None] = print) -> None:
        self.live, self.opener = live, opener
        self.name = name
        self.retries, self.first_delay, self.max_delay = retries, first_delay, max_delay
        self.log = log
        self.status = "starting" if live is not None or opener is not None else "none"
        self.error: str | None = None
        self.attempt = 0
        self._snapshot: Snapshot | None = None
        self._frames: deque[tuple[int, np.ndarray]] = deque(maxlen=KEEP_FRAMES)
        self._sequence = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._retry = threading.Event()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._thread: threading.Thread | None = None

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
        return self

    def stop(self) -> None:
        self._stop.set()
        self._retry.set()
        if self.live is not None:
            self.live.stop()
        if self._thread is not None:
            self._thread.join(5.0)
        self.notify()

    def retry(self) -> None:
        """Reopen the source now (after the automatic attempts gave up)."""
        self.attempt = 0
        self._retry.set()

    # ----------------------------------------------------------------- pump
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
        jpeg = encode_jpeg(state.frame.pixels, JPEG_QUALITY)
        tagger = getattr(self.live, "predictor", None)
        revision = tagger.tag(state.prediction) if isinstance(tagger, TaggedPredictor) else None
        with self._cond:
            self._sequence += 1
            self._snapshot = Snapshot(state, jpeg, revision, self._sequence)
            self._frames.append((state.frame.index, state.frame.pixels))
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
            reason = str(dead.error) if dead.error is not None else f"source {self.name} ended"
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
                    self.error = str(error) or type(error).__name__
                self.log(f"source error: {self.error}")
                self.notify()

    # ----------------------------------------------------------------- readers
    def snapshot(self) -> Snapshot | None:
        with self._cond:
            return self._snapshot

    def status_dict(self) -> dict[str, Any]:
        """``{"kind", "name", "status", "error"}`` for the page (kind ``"device"`` or ``None``)."""
        return {"kind": "device" if self.attached else None, "name": self.name, "status": self.status, "error": self.error,
                "attempt": self.attempt, "retries": self.retries}

    def frame(self, index: int | None = None) -> tuple[int, np.ndarray] | None:
        """The kept frame with ``index`` (when still kept), else the newest; ``None`` before the first."""
        with self._cond:
            if index is not None:
                for kept in reversed(self._frames):
                    if kept[0] == index:
                        return kept
            return self._frames[-1] if self._frames else None

    def next_frames(self, count: int, timeout: float) -> list[np.ndarray]:
        """The next ``count`` new frames (blocking, from a worker thread); fewer if ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        frames: list[np.ndarray] = []
        with self._cond:
            seen = self._sequence
            while len(frames) < count and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait_for(lambda last=seen: self._sequence > last or self._stop.is_set(), left):
                    break
                if self._sequence > seen and self._frames:
                    seen = self._sequence
                    frames.append(self._frames[-1][1])
        return frames

    # ----------------------------------------------------------------- async waiting
    async def wait(self, after: int, timeout: float) -> Snapshot | None:
        """The newest snapshot once its sequence is above ``after`` (``None`` on timeout)."""
        snapshot = self.snapshot()
        if snapshot is not None and snapshot.sequence > after:
            return snapshot
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._cond:
            self._waiters.add(waiter)
        try:
            snapshot = self.snapshot()
            if snapshot is None or snapshot.sequence <= after:
                try:
                    await asyncio.wait_for(waiter[1].wait(), timeout)
                except asyncio.TimeoutError:
                    return None
            snapshot = self.snapshot()
            return snapshot if snapshot is not None and snapshot.sequence > after else None
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
        """Wake every waiting client (after a frame, a status change, or a change of the session)."""
        with self._cond:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that client's event loop is closed
                loop.call_soon_threadsafe(event.set)

