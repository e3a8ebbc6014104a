"""Recorded sources: image folders (Pillow only) and video files (OpenCV), played in order, optionally looped and paced.

Both are :attr:`~lastlayer.sources.base.FrameSource.recorded`: played as fast as they decode by
default (the most frames per second), or in real time at ``fps`` (``realtime``).
"""

from __future__ import annotations

import glob as globbing
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lastlayer.errors import ImageError
from lastlayer.files.datasets import IMAGE_EXTENSIONS, is_image_file
from lastlayer.images.decode import load_image
from lastlayer.sources.base import (
    DEFAULT_FPS,
    Frame,
    FrameSource,
    SourceError,
    SourceOptions,
    SourceWarning,
    Target,
    pacer_for,
    url_scheme,
)
from lastlayer.sources.opencv import QuietOpenCV, bgr_to_rgb, require_opencv


def has_glob(text: str) -> bool:
    """Whether ``text`` is a glob pattern (holds ``*``, ``?`` or ``[``)."""
    return any(char in text for char in "*?[")


def _natural_key(path: Path) -> list[Any]:
    """Sort key putting frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


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


def playback_options(spec: Target | os.PathLike[str], *, fps: float | None = None, fast: bool = False,
                     folder_fps: float = DEFAULT_FPS) -> dict[str, Any]:
    """The ``open_source`` options that play ``spec`` for a person watching it: a video at its own rate, an image
    folder at ``folder_fps`` (its frames have no rate of their own), or at ``fps`` when given; as fast as they decode
    only with ``fast``. Cameras and streams ignore them. Raises :class:`SourceError` for a spec that names nothing."""
    from lastlayer.sources.registry import classify_spec

    kind, _ = classify_spec(spec)
    if fast:
        return {"realtime": False}
    if fps is None and kind == "images":
        fps = folder_fps
    return {"realtime": True, **({} if fps is None else {"fps": fps})}


class ImageFolderSource(FrameSource):
    """Plays image files in order as frames (a folder, a glob pattern, one image, or a list of paths).

    Needs no OpenCV. ``fps`` sets the timestamps (``index / fps``, default 30) and, with
    ``realtime`` (default: on when ``fps`` is given), the pace. ``loop`` starts over at the end.
    Unreadable images are skipped with a :class:`SourceWarning`.
    """

    recorded = True

    @classmethod
    def claim(cls, spec: Target) -> Target | None:
        """A folder, an image file, or a glob pattern that is not a file's name."""
        if isinstance(spec, int) or url_scheme(spec):
            return None
        path = Path(spec).expanduser()
        if path.is_dir() or (path.is_file() and is_image_file(path)) or (not path.is_file() and has_glob(spec)):
            return spec
        return None

    @classmethod
    def from_options(cls, target: Target, options: SourceOptions) -> ImageFolderSource:
        return cls(str(target), fps=options.fps, loop=options.loop, realtime=options.realtime)

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
        self._pacer = pacer_for(fps, realtime, self._fps, self._stop)
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


class VideoFileSource(FrameSource):
    """Decodes a video file with OpenCV (FFmpeg): every frame in order, RGB.

    ``realtime`` (default: on when ``fps`` is given) paces frames at ``fps`` or the file's own rate;
    otherwise frames come as fast as they decode. ``loop`` starts over at the end (timestamps keep
    growing).
    """

    recorded = True

    @classmethod
    def claim(cls, spec: Target) -> Target | None:
        """Any other existing file (whatever OpenCV's FFmpeg decodes)."""
        return spec if isinstance(spec, str) and not url_scheme(spec) and Path(spec).expanduser().is_file() else None

    @classmethod
    def from_options(cls, target: Target, options: SourceOptions) -> VideoFileSource:
        return cls(str(target), loop=options.loop, fps=options.fps, realtime=options.realtime)

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
        self._pacer = pacer_for(fps, realtime, self._rate, self._stop)
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
        with QuietOpenCV(self._cv2):
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
