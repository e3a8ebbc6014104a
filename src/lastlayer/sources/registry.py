"""The kinds of frame source :func:`open_source` knows, asked in order which one a spec names.

Each entry names a :class:`~lastlayer.sources.base.FrameSource` subclass by its import path, so this
module imports no source on its own. A new kind of source is one module in ``lastlayer/sources/``
with a ``FrameSource`` subclass that implements ``read`` (plus ``close`` to free what it holds),
says what it is (``live``: frames arrive in real time and may be dropped; ``recorded``: frames exist
beforehand and can be replayed) and the two class methods ``claim(spec)`` (the target it opens for a
spec, or None) and ``from_options(target, options)``; plus one :func:`register_source` line at the
end of this file, placed before the kinds that would also claim its specs. :func:`open_source`
strips the spec, turns ``file://`` URLs into paths, asks each kind in order, and wraps the source in
a background reader when asked to.
"""

from __future__ import annotations

import importlib
import os
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Tuple

from lastlayer.sources.base import (
    DEFAULT_STALL_TIMEOUT,
    SourceError,
    SourceOptions,
    SourceSpec,
    Target,
    redact,
    url_scheme,
)

if TYPE_CHECKING:
    from lastlayer.sources.base import FrameSource


@dataclass(frozen=True)
class SourceKind:
    """A kind of frame source: its name (what :func:`classify_spec` says) and ``"module:Class"`` (imported on first use)."""

    name: str
    target: str

    def source_class(self) -> type[FrameSource]:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


KINDS: list[SourceKind] = []  # in the order they are asked


def register_source(kind: SourceKind) -> SourceKind:
    """Make ``kind`` available to :func:`open_source`, asked after the kinds registered before it."""
    taken = next((known for known in KINDS if known.name == kind.name), None)
    if taken is not None:
        raise ValueError(f"a source kind named {kind.name!r} is already registered ({taken.target})")
    KINDS.append(kind)
    return kind


def _normalised(spec: SourceSpec) -> Target:
    """A camera index as it is, any other spec as stripped text (a ``file://`` URL as its path)."""
    if isinstance(spec, bool) or not isinstance(spec, (int, str, os.PathLike)):
        raise SourceError(f"source {spec!r} is not a camera index, path or URL")
    if isinstance(spec, int):
        return spec
    text = os.fspath(spec).strip()
    if not text:
        raise SourceError("empty source; pass a camera index, a video file, an image folder or glob, or a stream URL")
    if text.lower().startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlsplit(text).path)
    return text


def classify_spec(spec: SourceSpec) -> Tuple[str, Target]:
    """``(kind, target)`` for a source spec: the first registered kind that claims it ("camera", "stream", "images", "video")."""
    kind, target = _claimed(spec)
    return kind.name, target


def _claimed(spec: SourceSpec) -> Tuple[SourceKind, Target]:
    target = _normalised(spec)
    for kind in KINDS:
        claimed = kind.source_class().claim(target)
        if claimed is not None:
            return kind, claimed
    scheme = url_scheme(target) if isinstance(target, str) else None
    if scheme is not None:
        raise SourceError(f"unsupported URL scheme {scheme}:// in {redact(str(target))}; "
                          "use rtsp://, http(s)://, a file path or a camera index")
    raise SourceError(f"{target} does not exist; pass a video file, an image folder or glob, a camera index or a stream URL")


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
    """Open a camera, video file, stream or image folder/glob as a :class:`~lastlayer.sources.base.FrameSource`.

    Options that do not apply to the kind of source are ignored, so a command line can pass all
    (``loop`` and ``realtime`` apply to recorded sources only, so a caller need not know the kind).

    Args:
        spec: camera index or ``/dev/videoN``; video file; ``rtsp://``/``http(s)://`` URL; image
            folder, glob pattern or single image.
        loop: files and folders start over at the end.
        fps: files and folders: playback rate (default: the file's rate; 30 for folders). Cameras:
            a requested rate.
        realtime: files and folders: pace frames at ``fps``; default on only when ``fps`` is given
            (otherwise frames come as fast as they decode).
        prefetch: read this many frames ahead on a background thread (:class:`~lastlayer.sources.readers.PrefetchReader`).
        latest: hand out only the newest frame, capturing on a background thread
            (:class:`~lastlayer.sources.readers.LatestFrameReader`); for live sources. Takes precedence over ``prefetch``.
        width, height: requested camera resolution (the camera may pick another).
        stall_timeout: cameras and streams: seconds without a frame before :class:`SourceError`;
            None waits forever.
        reconnect: retry after a disconnect; default on for streams, off for cameras.
        max_retries, retry_delay, max_delay: reconnect attempts, first delay and largest delay in
            seconds (the delay doubles after each failed attempt).
    """
    from lastlayer.sources.readers import LatestFrameReader, PrefetchReader

    if prefetch < 0:
        raise SourceError(f"prefetch must be at least 0, got {prefetch}")
    options = SourceOptions(loop=loop, fps=fps, realtime=realtime, width=width, height=height, stall_timeout=stall_timeout,
                            reconnect=reconnect, max_retries=max_retries, retry_delay=retry_delay, max_delay=max_delay)
    options.check()
    kind, target = _claimed(spec)
    source = kind.source_class().from_options(target, options)
    if latest:
        return LatestFrameReader(source)
    return PrefetchReader(source, prefetch) if prefetch else source


register_source(SourceKind("camera", "lastlayer.sources.live:CameraSource"))
register_source(SourceKind("stream", "lastlayer.sources.live:StreamSource"))
register_source(SourceKind("images", "lastlayer.sources.files:ImageFolderSource"))
register_source(SourceKind("video", "lastlayer.sources.files:VideoFileSource"))
