"""``lastlayer watch`` on a stream that keeps failing stops on SIGTERM / Ctrl-C at once, not after its reconnects."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading

import pytest

from sources.test_sources import MjpegServer

from conftest import MODELS, need

SMALL_CLASSIFIER = "mobilenet_v1_0.25_128_quant.tflite"


@pytest.mark.shared
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_watch_on_a_failing_stream_stops_during_its_reconnect_back_off(signum: int) -> None:
    pytest.importorskip("cv2")
    model = need(MODELS / SMALL_CLASSIFIER)
    server = MjpegServer()
    url = server.url("/drop/20")
    lines: queue.Queue[str] = queue.Queue()
    process = subprocess.Popen([sys.executable, "-m", "lastlayer", "watch", "--source", url, "--model", str(model)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    output: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        def wait_for(text: str) -> None:
            while True:
                line = lines.get(timeout=60)
                output.append(line)
                if text in line:
                    return

        wait_for("frame ")  # it watches
        server.close()  # from now on every reconnect fails: the source backs off 0.5, 1, 2, 4, 8 s
        wait_for("attempt 2/5")
        process.send_signal(signum)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        server.close()
    while not lines.empty():
        output.append(lines.get())
    text = "".join(output)
    assert process.returncode == 128 + signum, text
    assert f"lastlayer: interrupted ({signal.Signals(signum).name})" in text and "Traceback" not in text
    assert "attempt 5/5" not in text and "could not reconnect" not in text, text  # the back-off was cut short
