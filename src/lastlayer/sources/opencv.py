"""What the OpenCV-backed sources share: importing ``cv2`` with an install hint, quiet opening, BGR to RGB.

OpenCV is the optional ``camera`` extra; it is imported only when a video, camera or stream is opened.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from lastlayer.sources.base import SourceError

# The package's own name: it installs the same whether lastlayer came from a wheel, a checkout or an index.
MISSING_OPENCV = "reading video or cameras needs OpenCV, lastlayer's 'camera' extra: pip install opencv-python-headless"


def require_opencv(name: str) -> Any:
    """Import ``cv2`` or raise :class:`SourceError` saying how to install it."""
    try:
        import cv2
    except ImportError:
        raise SourceError(f"cannot read {name}: {MISSING_OPENCV}") from None
    return cv2


class QuietOpenCV:
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
