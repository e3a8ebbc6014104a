"""The frame-source contract: :class:`Frame`, :class:`FrameSource`, the options every kind is opened with, the errors.

A source kind subclasses :class:`FrameSource`, implements :meth:`~FrameSource.read`, says what it is
(:attr:`~FrameSource.live`, :attr:`~FrameSource.paced`, :attr:`~FrameSource.recorded`) and, to be
opened by :func:`lastlayer.sources.open_source`, implements the two class methods
:meth:`~FrameSource.claim` (which specs it opens) and :meth:`~FrameSource.from_options`; one line in
:mod:`lastlayer.sources.registry` registers it.
"""

from __future__ import annotations

import os
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Iterator, Optional, Union

import numpy as np

from lastlayer.errors import LastLayerError

DEFAULT_FPS = 30.0  # timestamps and pacing of image folders, and of videos that do not say their rate
DEFAULT_STALL_TIMEOUT = 10.0
POLL = 0.05  # seconds between checks for close() while waiting
SourceSpec = Union[str, int, "os.PathLike[str]"]
Target = Union[int, str]  # what a kind claimed from a spec: a camera index, a path, a URL


_USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/?#@:]*)(?P<password>:[^\s/?#]*)?@")
_SECRET_QUERY = re.compile(r"(?i)(?P<name>[?&;](?:password|passwd|pwd|pass|token|access_token|key|apikey|api_key|secret|auth|sig|signature)=)"
                           r"[^&#\s]*")


def redact(text: str) -> str:
    """``text`` (a source spec, a message, a log line) with the credentials of every URL in it masked.

    ``rtsp://admin:secret@camera/live`` becomes ``rtsp://admin:***@camera/live``; a user name alone
    (``https://TOKEN@host``, often a token) becomes ``***``; a secret query parameter
    (``?password=``, ``&token=``, ``key``, ``auth``, ``sig``...) keeps its name only.
    """
    def masked(found: re.Match[str]) -> str:
        user = f"{found['user']}:***" if found["password"] is not None else "***"
        return f"{found['scheme']}{user}@"

    return _SECRET_QUERY.sub(lambda found: f"{found['name']}***", _USER_INFO.sub(masked, text))


def url_scheme(text: str) -> str | None:
    """The lower-case scheme of a ``scheme://`` spec, or None."""
    found = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    return found.group(1).lower() if found else None


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


@dataclass(frozen=True)
class SourceOptions:
    """Everything :func:`~lastlayer.sources.open_source` accepts; each kind takes what applies to it and ignores the rest."""

    loop: bool = False
    fps: float | None = None
    realtime: bool | None = None
    width: int | None = None
    height: int | None = None
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT
    reconnect: bool | None = None
    max_retries: int = 5
    retry_delay: float = 0.5
    max_delay: float = 10.0

    def check(self) -> None:
        """Raise :class:`SourceError` for a negative or zero value where that makes no sense."""
        for name in ("fps", "width", "height", "stall_timeout", "max_retries", "retry_delay", "max_delay"):
            value = getattr(self, name)
            if value is None:
                continue
            minimum = 0 if name in ("max_retries", "retry_delay") else 1e-9
            if value < minimum:
                raise SourceError(f"{name} must be {'at least 0' if minimum == 0 else 'positive'}, got {value}")


class FrameSource(ABC):
    """A source of :class:`Frame` objects: iterate it, and close it (or use ``with``).

    Iteration ends (``StopIteration``) at the end of a file or folder, or after :meth:`close`.
    Failures raise :class:`SourceError`. :meth:`close` may be called from another thread: a
    blocked :meth:`read` then returns None soon after.
    """

    live: bool = False  # cameras and streams: frames arrive in real time and can be dropped
    recorded: bool = False  # files and folders: frames exist beforehand, so they can be replayed (``loop``) and paced
    _pacer: Pacer | None = None  # files and folders played in real time wait on it before each frame

    def __init__(self, name: str) -> None:
        self.name = name
        self._stop = threading.Event()

    # --- what a kind implements to be opened from a spec (see lastlayer.sources.registry) ---------
    @classmethod
    def claim(cls, spec: Target) -> Target | None:
        """The target this kind opens for ``spec`` (a camera index, a stripped string), or None when it is not of this kind."""
        return None

    @classmethod
    def from_options(cls, target: Target, options: SourceOptions) -> FrameSource:
        """Open ``target`` (what :meth:`claim` returned) with the options that apply to this kind."""
        raise NotImplementedError(f"{cls.__name__} cannot be opened from a spec")

    # --- the source itself --------------------------------------------------------------------------
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


class Pacer:
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


def pacer_for(fps: float | None, realtime: bool | None, rate: float, stop: threading.Event) -> Pacer | None:
    """The pacer of a recorded source: real time at ``rate`` when ``realtime``, by default when an ``fps`` was given."""
    return Pacer(rate, stop) if (fps is not None if realtime is None else realtime) else None
