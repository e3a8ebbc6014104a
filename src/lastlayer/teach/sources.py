"""Frame sources for a live loop: cameras, video files, network streams and image folders.

:func:`open_source` picks the implementation from a spec and returns a :class:`FrameSource`: a
context manager and an iterator of :class:`Frame` objects (RGB uint8 pixels, an index and a
timestamp in seconds)::

    with open_source(0, latest=True) as frames:          # camera 0, always the newest frame
        for frame in frames:
            scores = interpreter.run(resize_array(frame.pixels, interpreter.input_size))

Specs: a camera index (``0``, ``"0"``) or device (``/dev/video0``); a video file (whatever OpenCV's
FFmpeg decodes: .mp4, .avi, .mkv, .mov, .webm...); a stream URL (``rtsp://``, ``http(s)://``
MJPEG...), which reconnects with exponential back-off when it drops; a folder of images, a glob
pattern (``frames/*.jpg``) or one image file. Cameras, files and streams need OpenCV
(``pip install 'lastlayer[camera]'``), imported only when such a source is opened; image folders
need only Pillow.

:class:`LatestFrameReader` captures on a background thread and hands out only the newest frame
(for live sources, when inference is slower than the camera); :class:`PrefetchReader` decodes a
few frames ahead on a background thread (for files, so decoding overlaps inference). Both stop
their thread on close and raise the thread's error in the consumer.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import glob as globbing
import os
import queue
import re
import threading
import time
import urllib.parse
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from lastlayer.errors import ImageError, LastLayerError
from lastlayer.images import IMAGE_EXTENSIONS, is_image_file, load_image

MISSING_OPENCV = "reading video or cameras needs OpenCV: pip install 'lastlayer[camera]' (or opencv-python-headless)"
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp"})
DEFAULT_FPS = 30.0  # timestamps and pacing of image folders, and of videos that do not say their rate
DEFAULT_STALL_TIMEOUT = 10.0
SourceSpec = Union[str, int, "os.PathLike[str]"]
_POLL = 0.05  # seconds between checks for close() while waiting


class SourceError(LastLayerError, RuntimeError):
    """A frame source cannot be opened or stopped delivering frames (one-line message with the fix)."""


class SourceWarning(UserWarning):
    """A source skipped a frame or lost its connection and is reconnecting."""


@dataclass(frozen=True)
class Frame:
    """One frame: ``pixels`` HxWx3 uint8 RGB, ``index`` counting from 0 (across loops), ``timestamp``.

    ``timestamp`` is in seconds: ``time.monotonic()`` at capture for cameras and streams, the
    position in the video for files (growing across loops), ``index / fps`` for image folders.
    ``path`` is the image file for folder sources, else None.
    """

    pixels: np.ndarray
    index: int
    timestamp: float
    path: Optional[str] = None


class FrameSource(ABC):
    """A source of :class:`Frame` objects: iterate it, and close it (or use ``with``).

    Iteration ends (``StopIteration``) at the end of a file or folder, or after :meth:`close`.
    Failures raise :class:`SourceError`. :meth:`close` may be called from another thread: a
    blocked :meth:`read` then returns None soon after.
    """

    live: bool = False  # True for cameras and streams: frames arrive in real time and can be dropped
    _pacer: _Pacer | None = None  # files and folders played in real time wait on it before each frame

    def __init__(self, name: str) -> None:
        self.name = name
        self._stop = threading.Event()

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or None at the end (or once closed)."""

    @property
    def fps(self) -> float | None:
        """Nominal frames per second, when known."""
        return None

    @property
    def paced(self) -> bool:
        """Whether frames come at the source's own rate (a camera, a stream, a file played in real time)
        rather than as fast as they are read."""
        return self.live or self._pacer is not None

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Stop reading and free the device or file; safe to call twice and from another thread."""
        self._stop.set()

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        frame = self.read()
        if frame is None:
            raise StopIteration
        return frame

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}{' closed' if self.closed else ''}>"


# --- helpers -------------------------------------------------------------------------------------


def require_opencv(name: str) -> Any:
    """Import ``cv2`` or raise :class:`SourceError` saying how to install it."""
    try:
        import cv2
    except ImportError:
        raise SourceError(f"cannot read {name}: {MISSING_OPENCV}") from None
    return cv2


class _QuietOpenCV:
    """Hide OpenCV's WARN lines (e.g. "can't open camera by index") while opening: our error says it."""

    _lock = threading.Lock()

    def __init__(self, cv2: Any) -> None:
        self.logging = getattr(getattr(cv2, "utils", None), "logging", None)
        self.saved: int | None = None

    def __enter__(self) -> None:
        if self.logging is not None and "OPENCV_LOG_LEVEL" not in os.environ:
            with self._lock:
                self.saved = self.logging.getLogLevel()
                self.logging.setLogLevel(min(self.saved, self.logging.LOG_LEVEL_ERROR))

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            with self._lock:
                self.logging.setLogLevel(self.saved)


def bgr_to_rgb(cv2: Any, pixels: np.ndarray) -> np.ndarray:
    """An OpenCV frame (BGR, BGRA or gray) as contiguous HxWx3 uint8 RGB."""
    if pixels.dtype != np.uint8:
        pixels = (pixels >> 8).astype(np.uint8) if pixels.dtype == np.uint16 else np.clip(pixels, 0, 255).astype(np.uint8)
    if pixels.ndim == 2 or pixels.shape[2] == 1:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    if pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (stream URLs often carry credentials)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _natural_key(path: Path) -> list[Any]:
    """Sort key putting frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _has_glob(text: str) -> bool:
    return any(char in text for char in "*?[")


def list_image_files(spec: str | os.PathLike[str]) -> list[Path]:
    """The image files of a folder (not recursive, hidden files ignored), of a glob pattern, or one image.

    Sorted naturally (``frame_2`` before ``frame_10``). Raises :class:`SourceError` when none is found.
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_file(p)]
        if not files:
            raise SourceError(f"folder {text} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); add frames or pass another folder")
    elif path.is_file():
        files = [path]
    else:
        files = [Path(p) for p in globbing.glob(os.path.expanduser(text), recursive=True)]
        files = [p for p in files if p.is_file() and is_image_file(p)]
        if not files:
            raise SourceError(f"no image files match {text}; check the pattern (e.g. 'frames/*.jpg') and quote it in a shell")
    return sorted(files, key=_natural_key)


class _Pacer:
    """Sleeps so that frame n is handed out n / fps seconds after the first (real-time playback).

    A consumer that falls more than half a second behind is re-anchored instead of being sent a burst.
    """

    def __init__(self, fps: float, stop: threading.Event) -> None:
        self.period = 1.0 / fps
        self.stop = stop
        self.start: float | None = None
        self.count = 0

    def wait(self) -> None:
        now = time.monotonic()
        if self.start is None or now - (self.start + self.count * self.period) > 0.5:
            self.start = now - self.count * self.period
        due = self.start + self.count * self.period
        self.count += 1
        if due > now:
            self.stop.wait(due - now)


# --- image folders (Pillow only) ----------------------------------------------------------------


class ImageFolderSource(FrameSource):
    """Plays image files in order as frames (a folder, a glob pattern, one image, or a list of paths).

    Needs no OpenCV. ``fps`` sets the timestamps (``index / fps``, default 30) and, with
    ``realtime`` (default: on when ``fps`` is given), the pace. ``loop`` starts over at the end.
    Unreadable images are skipped with a :class:`SourceWarning`.
    """

    def __init__(
        self,
        spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        fps: float | None = None,
        loop: bool = False,
        realtime: bool | None = None,
    ) -> None:
        if isinstance(spec, (str, os.PathLike)):
            super().__init__(os.fspath(spec))
            self.paths = list_image_files(spec)
        else:
            self.paths = [Path(p) for p in spec]
            super().__init__(f"{len(self.paths)} image files")
            if not self.paths:
                raise SourceError("no image files given; pass a folder, a glob pattern or image paths")
        self._fps = float(fps or DEFAULT_FPS)
        self.loop = loop
        self._pacer = _Pacer(self._fps, self._stop) if (fps is not None if realtime is None else realtime) else None
        self._position = 0
        self._count = 0
        self._good_in_pass = 0
        self._bad: set[Path] = set()

    @property
    def fps(self) -> float:
        return self._fps

    def _next_path(self) -> Path | None:
        if self._position >= len(self.paths):
            if self._good_in_pass == 0:
                raise SourceError(f"none of the {len(self.paths)} images of {self.name} could be read; replace the files")
            if not self.loop:
                return None
            self._position, self._good_in_pass = 0, 0
        path = self.paths[self._position]
        self._position += 1
        return path

    def read(self) -> Frame | None:
        while not self.closed:
            path = self._next_path()
            if path is None:
                return None
            if path in self._bad:
                continue
            try:
                pixels = np.asarray(load_image(path))
            except ImageError as error:
                self._bad.add(path)
                warnings.warn(f"skipped unreadable frame: {error}", SourceWarning, stacklevel=2)
                continue
            self._good_in_pass += 1
            if self._pacer is not None:
                self._pacer.wait()
            frame = Frame(pixels, self._count, self._count / self._fps, path=str(path))
            self._count += 1
            return frame
        return None


# --- video files ----------------------------------------------------------------------------------


class VideoFileSource(FrameSource):
    """Decodes a video file with OpenCV (FFmpeg): every frame in order, RGB.

    ``realtime`` (default: on when ``fps`` is given) paces frames at ``fps`` or the file's own rate;
    otherwise frames come as fast as they decode. ``loop`` starts over at the end (timestamps keep
    growing).
    """

    def __init__(self, path: str | os.PathLike[str], *, loop: bool = False, fps: float | None = None, realtime: bool | None = None) -> None:
        super().__init__(os.fspath(path))
        self.path = Path(self.name).expanduser()
        if not self.path.exists():
            raise SourceError(f"video file {self.name} does not exist; check the path")
        if self.path.is_dir():
            raise SourceError(f"{self.name} is a folder; pass a video file (or open the folder as image frames)")
        self._cv2 = require_opencv(self.name)
        self._lock = threading.Lock()
        self.loop = loop
        self._capture = self._open()
        rate = float(self._capture.get(self._cv2.CAP_PROP_FPS) or 0.0)
        self.file_fps = rate if 0 < rate < 1000 else None
        count = int(self._capture.get(self._cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 else None
        self._rate = float(fps or self.file_fps or DEFAULT_FPS)
        self._pacer = _Pacer(self._rate, self._stop) if (fps is not None if realtime is None else realtime) else None
        self._count = 0
        self._in_pass = 0
        self._offset = 0.0  # seconds of video played in earlier loops
        self._last_position = 0.0
        self._pending = self._grab()
        if self._pending is None:
            self._release()
            raise SourceError(f"{self.name} has no frames OpenCV can decode; check the file or convert it (e.g. ffmpeg -i in.xyz out.mp4)")

    @property
    def fps(self) -> float:
        return self._rate

    def _open(self) -> Any:
        with _QuietOpenCV(self._cv2):
            capture = self._cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self.name} as a video (not a video, or a codec OpenCV cannot decode); convert it, e.g. to .mp4")
        return capture

    def _grab(self) -> Frame | None:
        ok, pixels = self._capture.read()
        if not ok or pixels is None:
            return None
        position = float(self._capture.get(self._cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
        if position <= 0.0 and self._in_pass > 0:  # backend without positions
            position = self._in_pass / self._rate
        self._in_pass += 1
        self._last_position = position
        frame = Frame(bgr_to_rgb(self._cv2, pixels), self._count, self._offset + position)
        self._count += 1
        return frame

    def _restart(self) -> bool:
        if not self.loop or self._in_pass == 0:
            return False
        self._capture.release()
        self._capture = self._open()
        self._offset += self._last_position + 1.0 / self._rate
        self._in_pass = 0
        return True

    def read(self) -> Frame | None:
        with self._lock:
            if self.closed:
                return None
            frame, self._pending = self._pending, None
            if frame is None:
                frame = self._grab()
                if frame is None and self._restart():
                    frame = self._grab()
        if frame is not None and self._pacer is not None:
            self._pacer.wait()
        return None if self.closed else frame

    def _release(self) -> None:
        self._capture.release()

    def close(self) -> None:
        super().close()
        with self._lock:
            self._release()


# --- cameras and streams --------------------------------------------------------------------------


class _CallThread:
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
            wait = _POLL if deadline is None else min(_POLL, max(0.0, deadline - time.monotonic()))
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
        self._worker = _CallThread(f"lastlayer-capture {name}")
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
        with _QuietOpenCV(cv2):
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
        with _QuietOpenCV(cv2):
            return cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)

    def _open_error(self) -> str:
        return f"cannot open stream {self.name} (unreachable, wrong URL, or not a video stream); check the URL, the network and that the camera is on"

    def _hint(self) -> str:
        return "check the stream, the network and that the camera is on"


# --- background readers ---------------------------------------------------------------------------


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
                self._ready.wait(_POLL)
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
                self._queue.put(item, timeout=_POLL)
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
                item = self._queue.get(timeout=_POLL)
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


# --- choosing a source ------------------------------------------------------------------------------

SpecKind = Tuple[str, Union[int, str]]


def classify_spec(spec: SourceSpec) -> SpecKind:
    """``(kind, target)`` for a source spec; kind is "camera", "stream", "video" or "images"."""
    if isinstance(spec, bool) or not isinstance(spec, (int, str, os.PathLike)):
        raise SourceError(f"source {spec!r} is not a camera index, path or URL")
    if isinstance(spec, int):
        if spec < 0:
            raise SourceError(f"camera index {spec} is negative; use 0 for the first camera")
        return "camera", spec
    text = os.fspath(spec).strip()
    if not text:
        raise SourceError("empty source; pass a camera index, a video file, an image folder or glob, or a stream URL")
    if text.isdigit():
        return "camera", int(text)
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme:
        name = scheme.group(1).lower()
        if name in STREAM_SCHEMES:
            return "stream", text
        if name != "file":
            raise SourceError(f"unsupported URL scheme {name}:// in {redact(text)}; use rtsp://, http(s)://, a file path or a camera index")
        text = urllib.parse.unquote(urllib.parse.urlsplit(text).path)
    if text.startswith("/dev/"):
        return "camera", text
    path = Path(text).expanduser()
    if path.is_dir() or (path.is_file() and is_image_file(path)):
        return "images", text
    if path.is_file():
        return "video", text
    if _has_glob(text):
        return "images", text
    raise SourceError(f"{text} does not exist; pass a video file, an image folder or glob, a camera index or a stream URL")


def open_source(
    spec: SourceSpec,
    *,
    loop: bool = False,
    fps: float | None = None,
    realtime: bool | None = None,
    prefetch: int = 0,
    latest: bool = False,
    width: int | None = None,
    height: int | None = None,
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
    reconnect: bool | None = None,
    max_retries: int = 5,
    retry_delay: float = 0.5,
    max_delay: float = 10.0,
) -> FrameSource:
    """Open a camera, video file, stream or image folder/glob as a :class:`FrameSource`.

    Options that do not apply to the kind of source are ignored, so a command line can pass all.

    Args:
        spec: camera index or ``/dev/videoN``; video file; ``rtsp://``/``http(s)://`` URL; image
            folder, glob pattern or single image.
        loop: files and folders start over at the end.
        fps: files and folders: playback rate (default: the file's rate; 30 for folders). Cameras:
            a requested rate.
        realtime: files and folders: pace frames at ``fps``; default on only when ``fps`` is given
            (otherwise frames come as fast as they decode).
        prefetch: read this many frames ahead on a background thread (:class:`PrefetchReader`).
        latest: hand out only the newest frame, capturing on a background thread
            (:class:`LatestFrameReader`); for live sources. Takes precedence over ``prefetch``.
        width, height: requested camera resolution (the camera may pick another).
        stall_timeout: cameras and streams: seconds without a frame before :class:`SourceError`;
            None waits forever.
        reconnect: retry after a disconnect; default on for streams, off for cameras.
        max_retries, retry_delay, max_delay: reconnect attempts, first delay and largest delay in
            seconds (the delay doubles after each failed attempt).
    """
    _check_options(fps=fps, prefetch=prefetch, width=width, height=height, stall_timeout=stall_timeout,
                   max_retries=max_retries, retry_delay=retry_delay, max_delay=max_delay)
    kind, target = classify_spec(spec)
    retries = {"max_retries": max_retries, "retry_delay": retry_delay, "max_delay": max_delay, "stall_timeout": stall_timeout}
    source: FrameSource
    if kind == "camera":
        source = CameraSource(target, width=width, height=height, fps=fps, reconnect=bool(reconnect), **retries)
    elif kind == "stream":
        source = StreamSource(str(target), reconnect=reconnect is not False, **retries)
    elif kind == "video":
        source = VideoFileSource(str(target), loop=loop, fps=fps, realtime=realtime)
    else:
        source = ImageFolderSource(str(target), fps=fps, loop=loop, realtime=realtime)
    if latest:
        return LatestFrameReader(source)
    return PrefetchReader(source, prefetch) if prefetch else source


def _check_options(**values: float | None) -> None:
    for name, value in values.items():
        if value is None:
            continue
        minimum = 0 if name in ("prefetch", "max_retries", "retry_delay") else 1e-9
        if value < minimum:
            raise SourceError(f"{name} must be {'at least 0' if minimum == 0 else 'positive'}, got {value}")


__all__: List[str] = [
    "DEFAULT_STALL_TIMEOUT",
    "MISSING_OPENCV",
    "CameraSource",
    "Frame",
    "FrameSource",
    "ImageFolderSource",
    "LatestFrameReader",
    "PrefetchReader",
    "SourceError",
    "SourceWarning",
    "StreamSource",
    "VideoFileSource",
    "classify_spec",
    "list_image_files",
    "open_source",
]
