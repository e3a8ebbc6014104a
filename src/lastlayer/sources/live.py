"""Live sources: cameras and network streams read through OpenCV, with a stall watchdog and reconnects.

Blocking OpenCV calls run on a helper thread (:class:`CallThread`) so that :meth:`close` and the
stall timeout never wait for a stuck driver or network. Streams reconnect with exponential back-off
by default, cameras only with ``reconnect=True``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
import threading
import time
import warnings
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lastlayer.sources.base import (
    DEFAULT_STALL_TIMEOUT,
    POLL,
    Frame,
    FrameSource,
    SourceError,
    SourceWarning,
    redact,
    url_scheme,
)
from lastlayer.sources.opencv import QuietOpenCV, bgr_to_rgb, require_opencv

if TYPE_CHECKING:
    from lastlayer.sources.base import SourceOptions, Target

STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp"})


class CallThread:
    """Runs blocking OpenCV calls on one daemon thread, so the caller can stop waiting for them.

    A call that outlives its timeout keeps running; calls queued after it (the final release) run
    when it returns. The thread owns the capture object: nothing else touches it concurrently.
    """

    def __init__(self, name: str) -> None:
        self._tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            future, function = task
            try:
                result = function()
            except BaseException as exc:  # handed to the caller
                if future is not None:
                    future.set_exception(exc)
            else:
                if future is not None:
                    future.set_result(result)

    def call(self, function: Callable[[], Any], timeout: float | None, stop: threading.Event) -> Any:
        """``function()``'s result; raises ``TimeoutError`` after ``timeout`` s, returns None once ``stop`` is set."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._tasks.put((future, function))
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = POLL if deadline is None else min(POLL, max(0.0, deadline - time.monotonic()))
            try:
                return future.result(timeout=wait)
            except concurrent.futures.TimeoutError:
                if stop.is_set():
                    return None
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError from None

    def finish(self, function: Callable[[], Any] | None = None) -> None:
        """Run ``function`` after the queued calls, then end the thread (without waiting)."""
        if function is not None:
            self._tasks.put((None, function))
        self._tasks.put(None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def _retries(options: SourceOptions) -> dict[str, Any]:
    return {"max_retries": options.max_retries, "retry_delay": options.retry_delay, "max_delay": options.max_delay,
            "stall_timeout": options.stall_timeout}


class _LiveSource(FrameSource):
    """A camera or stream read through OpenCV on a helper thread, with a stall watchdog and reconnects."""

    live = True
    kind = "source"

    def __init__(
        self,
        name: str,
        *,
        stall_timeout: float | None,
        reconnect: bool,
        max_retries: int,
        retry_delay: float,
        max_delay: float,
    ) -> None:
        super().__init__(name)
        self._cv2 = require_opencv(name)
        self.stall_timeout = stall_timeout
        self.reconnect = reconnect
        self.max_retries = max(0, int(max_retries))
        self.retry_delay = max(0.0, float(retry_delay))
        self.max_delay = max(self.retry_delay, float(max_delay))
        self.reconnects = 0
        self._count = 0
        self._capture: Any = None
        self._worker = CallThread(f"lastlayer-capture {name}")
        self._rate: float | None = None
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    @property
    def fps(self) -> float | None:
        return self._rate

    # Subclasses: open the capture (runs on the helper thread) and describe failures.
    @abstractmethod
    def _open_capture(self) -> Any: ...

    @abstractmethod
    def _open_error(self) -> str: ...

    def _lost_error(self) -> str:
        return f"{self.kind} {self.name} stopped delivering frames after frame {self._count} (disconnected?); check the cable/stream"

    def _open_timeout(self) -> float:
        return (self.stall_timeout or 30.0) + 2.0

    def _connect(self) -> None:
        """Open the capture or raise :class:`SourceError`."""
        try:
            capture = self._worker.call(self._open_capture, self._open_timeout(), self._stop)
        except TimeoutError:
            raise SourceError(f"opening {self.kind} {self.name} took over {self._open_timeout():.0f} s; {self._hint()}") from None
        if capture is None:  # closed meanwhile
            return
        if not capture.isOpened():
            self._worker.call(capture.release, 5.0, self._stop)
            raise SourceError(self._open_error())
        self._capture = capture
        rate = float(capture.get(self._cv2.CAP_PROP_FPS) or 0.0)
        self._rate = rate if 0 < rate < 1000 else None
        self._since = time.monotonic()

    def _hint(self) -> str:
        return "check the cable/stream"

    def _stalled(self) -> SourceError:
        return SourceError(f"no frame from {self.name} for {self.stall_timeout:g} s; {self._hint()}")

    def read(self) -> Frame | None:
        while not self.closed:
            if self._capture is None:
                return None
            timeout = None if self.stall_timeout is None else max(0.0, self._since + self.stall_timeout - time.monotonic())
            try:
                result = self._worker.call(self._capture.read, timeout, self._stop)
            except TimeoutError:
                raise self._stalled() from None
            if result is None:  # closed while waiting
                return None
            ok, pixels = result
            now = time.monotonic()
            if ok and pixels is not None:
                self._since = now
                frame = Frame(bgr_to_rgb(self._cv2, pixels), self._count, now)
                self._count += 1
                return frame
            if self.stall_timeout is not None and now - self._since >= self.stall_timeout:
                raise self._stalled()
            self._recover()
        return None

    def _drop_capture(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            with contextlib.suppress(TimeoutError):  # a stuck helper thread releases it when it returns
                self._worker.call(capture.release, 5.0, threading.Event())

    def _recover(self) -> None:
        """Reconnect with exponential back-off after a failed read, or raise :class:`SourceError`."""
        self._drop_capture()
        if not self.reconnect or self.max_retries == 0:
            raise SourceError(self._lost_error() + ("" if self.reconnect else " (reconnect=True retries)"))
        reason = "the connection dropped or the stream ended"
        for attempt in range(1, self.max_retries + 1):
            delay = min(self.max_delay, self.retry_delay * 2 ** (attempt - 1))
            self.reconnects += 1
            warnings.warn(
                f"lost {self.kind} {self.name} after frame {self._count} ({reason}); "
                f"reconnecting in {delay:.3g} s (attempt {attempt}/{self.max_retries})",
                SourceWarning,
                stacklevel=3,
            )
            if self._stop.wait(delay):
                return
            try:
                self._connect()
                return
            except SourceError as error:
                reason = str(error).split(";")[0]
        raise SourceError(f"lost {self.kind} {self.name} and could not reconnect in {self.max_retries} attempts ({reason}); {self._hint()}")

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        capture, self._capture = self._capture, None
        self._worker.finish(capture.release if capture is not None else None)
        self._worker.join(0.5)


class CameraSource(_LiveSource):
    """A camera by index (``0``) or device path (``/dev/video0``); ``width``/``height``/``fps`` are requests.

    Does not reconnect unless ``reconnect=True``: a camera that disconnects raises :class:`SourceError`.
    """

    kind = "camera"

    @classmethod
    def claim(cls, spec: Target) -> Target | None:
        """A camera index (``0``, ``"0"``) or a device path (``/dev/video0``)."""
        if isinstance(spec, int):
            if spec < 0:
                raise SourceError(f"camera index {spec} is negative; use 0 for the first camera")
            return spec
        if spec.isdigit():
            return int(spec)
        return spec if spec.startswith("/dev/") else None

    @classmethod
    def from_options(cls, target: Target, options: SourceOptions) -> CameraSource:
        return cls(target, width=options.width, height=options.height, fps=options.fps, reconnect=bool(options.reconnect),
                   **_retries(options))

    def __init__(
        self,
        device: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
        reconnect: bool = False,
        max_retries: int = 5,
        retry_delay: float = 0.5,
        max_delay: float = 10.0,
    ) -> None:
        self.device = device
        self.request = (width, height, fps)
        if isinstance(device, str) and not Path(device).exists():
            raise SourceError(f"camera device {device} does not exist; check the cable and the path (ls /dev/video*)")
        super().__init__(str(device), stall_timeout=stall_timeout, reconnect=reconnect, max_retries=max_retries,
                         retry_delay=retry_delay, max_delay=max_delay)

    def _open_capture(self) -> Any:
        cv2 = self._cv2
        with QuietOpenCV(cv2):
            capture = cv2.VideoCapture(self.device)
        if capture.isOpened():
            width, height, fps = self.request
            for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height), (cv2.CAP_PROP_FPS, fps)):
                if value:
                    capture.set(prop, float(value))
        return capture

    def _open_error(self) -> str:
        return (f"camera {self.name} is not available (no such camera, or another program is using it); "
                "check the cable and the index (ls /dev/video* on Linux)")

    def _hint(self) -> str:
        return "check the cable and that no other program took the camera"


class StreamSource(_LiveSource):
    """A network stream (``rtsp://``, ``http(s)://`` MJPEG...) read with OpenCV's FFmpeg backend.

    When it drops, it reconnects up to ``max_retries`` times, waiting ``retry_delay`` s and doubling
    up to ``max_delay`` s, with a :class:`SourceWarning` per attempt; the counter resets once frames
    flow again. A URL that cannot be opened at all fails at once (a typo should not be retried).
    """

    kind = "stream"

    @classmethod
    def claim(cls, spec: Target) -> Target | None:
        """A URL whose scheme is one of :data:`STREAM_SCHEMES`."""
        return spec if isinstance(spec, str) and url_scheme(spec) in STREAM_SCHEMES else None

    @classmethod
    def from_options(cls, target: Target, options: SourceOptions) -> StreamSource:
        return cls(str(target), reconnect=options.reconnect is not False, **_retries(options))

    def __init__(
        self,
        url: str,
        *,
        stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
        reconnect: bool = True,
        max_retries: int = 5,
        retry_delay: float = 0.5,
        max_delay: float = 10.0,
    ) -> None:
        self.url = url
        super().__init__(redact(url), stall_timeout=stall_timeout, reconnect=reconnect, max_retries=max_retries,
                         retry_delay=retry_delay, max_delay=max_delay)

    def _open_capture(self) -> Any:
        cv2 = self._cv2
        # FFmpeg's own timeouts end a blocked call a little after our watchdog, freeing the helper thread.
        timeout_ms = int(self._open_timeout() * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        with QuietOpenCV(cv2):
            return cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)

    def _open_error(self) -> str:
        return f"cannot open stream {self.name} (unreachable, wrong URL, or not a video stream); check the URL, the network and that the camera is on"

    def _hint(self) -> str:
        return "check the stream, the network and that the camera is on"
