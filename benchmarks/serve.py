"""Latency and throughput of ``lastlayer teach --web``, through a real uvicorn server on loopback.

* teach -> prediction: from sending ``POST /api/classes/{id}/frames`` to the first ``live`` Server-Sent
  Event whose prediction was computed at (or after) the revision the POST returned: the first
  streamed prediction that uses the new example. Goal: < 150 ms.
* stream frames/s: ``GET /api/stream.mjpg`` read by 1 and by 3 clients at once for a few seconds
  (the source is a 15 fps video looped in real time, so 15 is the ceiling).
* the cost of the stream itself: JPEG bytes and encode time per frame (encoded once, shared by clients).

Usage: ``python benchmarks/serve.py [--trials 20] [--seconds 5]``. Needs lastlayer[web,camera] and httpx2 (the test extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED  # noqa: E402

EXTRACTOR = SHARED / "models" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
HEADERS = {"X-Lastlayer-Token": "-"}


def summary(values: list[float], unit: str, scale: float = 1.0) -> str:
    values = [v * scale for v in values]
    return f"min {min(values):7.1f}  median {statistics.median(values):7.1f}  max {max(values):7.1f} {unit}  (n={len(values)})"


def start_server(state: Path, video: Path, port: int) -> tuple[object, object]:
    import uvicorn

    from lastlayer.serve.app import create_app
    from lastlayer.serve.server import source_opener
    from lastlayer.teach.session import TeachingSession

    session = TeachingSession(state, EXTRACTOR)
    app = create_app(session, None, source=source_opener(str(video)), source_name=video.name, log=lambda line: None)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, app


class EventLog:
    """Reads ``/api/events`` on a thread; keeps (arrival time, revision) of each ``live`` event."""

    def __init__(self, base: str) -> None:
        self.base, self.events, self.stop = base, [], threading.Event()
        self._cond = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with httpx.Client(timeout=None) as client, client.stream("GET", f"{self.base}/api/events", headers=HEADERS) as response:
            name = None
            for line in response.iter_lines():
                if self.stop.is_set():
                    return
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name == "live":
                    data = json.loads(line[6:])
                    with self._cond:
                        self.events.append((time.perf_counter(), data.get("revision")))
                        self._cond.notify_all()

    def first_at(self, revision: int, since: float, timeout: float = 5.0) -> float | None:
        """Arrival time of the first live event at ``revision`` or later that arrived after ``since``."""
        deadline = time.perf_counter() + timeout
        with self._cond:
            while True:
                for arrived, tagged in self.events:
                    if arrived >= since and tagged is not None and tagged >= revision:
                        return arrived
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None
                self._cond.wait(left)


def teach_latency(base: str, trials: int) -> tuple[list[float], list[float]]:
    """(POST round trips, POST start -> first prediction using it), seconds."""
    events = EventLog(base)
    with httpx.Client(base_url=base, headers=HEADERS, timeout=30) as client:
        class_id = client.post("/api/classes", json={"name": "gear"}).json()["class"]["id"]
        client.post("/api/classes", json={"name": "washer"})
        while not client.get("/api/predictions").json()["live"]:
            time.sleep(0.05)
        posts, latencies = [], []
        for _ in range(trials):
            time.sleep(0.3)  # let the loop settle: measure a teach request landing at a random point of a frame
            start = time.perf_counter()
            response = client.post(f"/api/classes/{class_id}/frames", json={})
            posted = time.perf_counter()
            response.raise_for_status()
            arrived = events.first_at(response.json()["revision"], start)
            posts.append(posted - start)
            if arrived is not None:
                latencies.append(arrived - start)
    events.stop.set()
    return posts, latencies


def stream_rates(base: str, clients: int, seconds: float) -> list[float]:
    """Frames per second each of ``clients`` simultaneous MJPEG readers received."""
    rates: list[float] = [0.0] * clients

    def read(slot: int) -> None:
        frames, began = 0, None
        with httpx.Client(timeout=30) as client, client.stream("GET", f"{base}/api/stream.mjpg", headers=HEADERS) as response:
            for chunk in response.iter_bytes():
                frames += chunk.count(b"Content-Type: image/jpeg")
                now = time.perf_counter()
                if began is None and frames:
                    began, frames = now, 0  # count from the first frame on
                if began is not None and now - began >= seconds:
                    break
        rates[slot] = frames / max(1e-9, time.perf_counter() - began) if began else 0.0

    threads = [threading.Thread(target=read, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return rates


def jpeg_cost() -> tuple[float, int]:
    from lastlayer.images import encode_jpeg
    from lastlayer.serve.feed import JPEG_QUALITY
    from lastlayer.teach.render import render_frame

    frame = render_frame("gear", 0)
    encode_jpeg(frame, JPEG_QUALITY)
    start = time.perf_counter()
    for _ in range(50):
        data = encode_jpeg(frame, JPEG_QUALITY)
    return (time.perf_counter() - start) / 50, len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args()
    if not EXTRACTOR.exists():
        sys.exit(f"benchmark needs {EXTRACTOR}; set LASTLAYER_SHARED")
    from lastlayer.teach.render import write_video

    with tempfile.TemporaryDirectory() as folder:
        video = write_video(Path(folder) / "parts.avi", [("gear", 45), ("washer", 45)], fps=15)
        server, app = start_server(Path(folder) / "state", video, args.port)
        base = f"http://127.0.0.1:{args.port}"
        try:
            posts, latencies = teach_latency(base, args.trials)
            print(f"teach POST round trip        : {summary(posts, 'ms', 1000)}")
            print(f"teach -> first prediction    : {summary(latencies, 'ms', 1000)}   goal < 150 ms")
            for clients in (1, 3):
                rates = stream_rates(base, clients, args.seconds)
                print(f"MJPEG stream, {clients} client(s)     : {summary(rates, 'frames/s')}  (source: 15 fps video)")
            encode, size = jpeg_cost()
            print(f"JPEG per frame (320x240, q80): {encode * 1000:.2f} ms to encode once for all clients, {size / 1024:.1f} KiB")
        finally:
            server.should_exit = True
            app.state.feed.stop()


if __name__ == "__main__":
    main()
