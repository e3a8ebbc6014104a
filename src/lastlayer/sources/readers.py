"""Background readers over any source: :class:`LatestFrameReader` (newest frame only) and :class:`PrefetchReader`.

:class:`LatestFrameReader` captures on a background thread and hands out only the newest frame (for
live sources, when inference is slower than the camera); :class:`PrefetchReader` decodes a few frames
ahead on a background thread (for files, so decoding overlaps inference). Both are sources
themselves (they say what the source they read is), stop their thread on close and raise the
thread's error in the consumer.
"""

from __future__ import annotations

import queue
import threading
from abc import abstractmethod
from typing import Any

from lastlayer.errors import LastLayerError
from lastlayer.sources.base import POLL, Frame, FrameSource, SourceError


def _raise_from_thread(name: str, error: BaseException) -> None:
    if isinstance(error, LastLayerError):
        raise error
    raise SourceError(f"capturing from {name} failed: {type(error).__name__}: {error}") from error


class _ThreadedReader(FrameSource):
    """Base of the background readers: a thread that owns ``source`` and closes it when done."""

    def __init__(self, source: FrameSource) -> None:
        super().__init__(source.name)
        self.source = source
        self.live = source.live
        self.recorded = source.recorded
        self._thread = threading.Thread(target=self._guarded, name=f"lastlayer-read {source.name}", daemon=True)
        self._thread.start()

    @property
    def fps(self) -> float | None:
        return self.source.fps

    @property
    def paced(self) -> bool:
        return self.source.paced

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self._failed(exc)
        finally:
            self.source.close()
            self._done()

    @abstractmethod
    def _run(self) -> None: ...

    @abstractmethod
    def _failed(self, error: BaseException) -> None: ...

    def _done(self) -> None:  # noqa: B027 - optional hook
        """Called on the thread after it closed the source."""

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread (waiting up to ``timeout`` s) and close the source."""
        super().close()
        self.source.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


class LatestFrameReader(_ThreadedReader):
    """Reads ``source`` on a background thread and hands out only the newest frame.

    For live sources when inference is slower than capture: stale frames are dropped (counted in
    :attr:`dropped`), so each :meth:`read` returns the most recent frame not yet handed out, waiting
    for one when needed. An error on the thread is raised by the next :meth:`read`.
    """

    def __init__(self, source: FrameSource) -> None:
        self._ready = threading.Condition()
        self._latest: Frame | None = None
        self._error: BaseException | None = None
        self._ended = False
        self.captured = 0
        self.dropped = 0
        super().__init__(source)

    def _run(self) -> None:
        while not self.closed:
            frame = self.source.read()
            if frame is None:
                return
            with self._ready:
                if self._latest is not None:
                    self.dropped += 1
                self._latest = frame
                self.captured += 1
                self._ready.notify_all()

    def _failed(self, error: BaseException) -> None:
        with self._ready:
            self._error = error

    def _done(self) -> None:
        with self._ready:
            self._ended = True
            self._ready.notify_all()

    def read(self) -> Frame | None:
        with self._ready:
            while self._latest is None and self._error is None and not self._ended and not self.closed:
                self._ready.wait(POLL)
            if self._latest is not None and not self.closed:
                frame, self._latest = self._latest, None
                return frame
            if self._error is not None:
                error, self._error = self._error, None
                _raise_from_thread(self.name, error)
            return None

    def close(self, timeout: float = 2.0) -> None:
        super().close(timeout)
        with self._ready:
            self._ready.notify_all()


class _End:
    """Marks the end of the source in a :class:`PrefetchReader` queue."""


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class PrefetchReader(_ThreadedReader):
    """Reads up to ``depth`` frames ahead of the consumer on a background thread (a bounded queue).

    For files and folders, so decoding overlaps inference; no frame is dropped. An error on the
    thread is raised by :meth:`read` after the frames read before it.
    """

    def __init__(self, source: FrameSource, depth: int = 4) -> None:
        if depth < 1:
            raise SourceError(f"prefetch depth must be at least 1, got {depth}")
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._finished = False
        super().__init__(source)

    def _put(self, item: Any) -> bool:
        while not self.closed:
            try:
                self._queue.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        while not self.closed:
            frame = self.source.read()
            if not self._put(_End() if frame is None else frame) or frame is None:
                return

    def _failed(self, error: BaseException) -> None:
        self._put(_Failure(error))

    def read(self) -> Frame | None:
        while not (self.closed or self._finished):
            try:
                item = self._queue.get(timeout=POLL)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self._finished = True
                continue
            if isinstance(item, _End):
                self._finished = True
            elif isinstance(item, _Failure):
                self._finished = True
                _raise_from_thread(self.name, item.error)
            else:
                return item
        return None
