"""Helpers of the web tests (frames, images, waiting) shared by the test modules and the browser test."""

from __future__ import annotations

import io
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

from lastlayer.teach.render import render_frame

GEAR_FRAMES = WASHER_FRAMES = 45  # 3 s each at 15 fps
SEGMENTS = [("gear", GEAR_FRAMES), ("washer", WASHER_FRAMES)]
FPS = 15


def kind_at(frame: int) -> str:
    """What the looping test video shows at ``frame``."""
    return "gear" if frame % (GEAR_FRAMES + WASHER_FRAMES) < GEAR_FRAMES else "washer"


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, every: float = 0.05, what: str = "condition") -> Any:
    """Poll ``condition`` until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def frame_png(kind: str, index: int) -> bytes:
    return png(render_frame(kind, index))


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def read_url(url: str, timeout: float = 20.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """``(status, body)`` of a GET, retrying while the server is not up yet (connection refused)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError:
            raise
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
