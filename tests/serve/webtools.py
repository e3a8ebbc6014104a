"""Helpers of the web tests (frames, images, waiting) shared by the test modules and the browser test."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

from lastlayer.images.render import render_frame

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


class Lines:
    """The stdout lines of a child process, read on a thread so that a test can wait for one with a timeout.

    ``arrived``: when (``time.time()``) the line :meth:`wait_for` returned last came out of the process.
    """

    def __init__(self, process: Any) -> None:
        import queue
        import threading

        self.process, self.seen, self.arrived = process, [], 0.0
        self._queue: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put((time.time(), line.rstrip("\n")))

    def wait_for(self, wanted: Callable[[str], Any], timeout: float = 30.0, what: str = "a line") -> str:
        """The first new line for which ``wanted`` is truthy (every line read is kept in ``seen``)."""
        import queue

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                arrived, line = self._queue.get(timeout=max(0.01, left))
            except queue.Empty:
                pytest.fail(f"timed out after {timeout} s waiting for {what}; lines so far: {self.seen[-10:]}")
            self.seen.append(line)
            if wanted(line):
                self.arrived = arrived
                return line


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """``(status, JSON body)`` of one API request to a real server (errors included), with the change header."""
    import json

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"X-Lastlayer-Token": "-", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class Server:
    """``launch_server.py`` in a subprocess, on a fixed port and state folder (``extra``: more of its arguments)."""

    def __init__(self, state: Path, model: Path, source: Path | None, port: int, *extra: str) -> None:
        self.args = [sys.executable, str(Path(__file__).with_name("launch_server.py")), str(state), str(model), str(port),
                     *([] if source is None else ["--source", str(source)]), *extra]
        self.url = f"http://127.0.0.1:{port}/"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.start_with("api/state")

    def start_with(self, path: str) -> None:
        """Start the server and wait until ``GET path`` answers (e.g. with ``?token=...`` for a server with a token)."""
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        read_url(self.url + path, timeout=30)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

