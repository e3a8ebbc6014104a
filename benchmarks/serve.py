"""Latency and throughput of ``lastlayer teach --web``, through a real uvicorn server on loopback.

* teach -> prediction: from sending ``POST /api/classes/{id}/frames`` to the first ``live`` Server-Sent
  Event whose prediction was computed at (or after) the revision the POST returned: the first
  streamed prediction that uses the new example. Goal: < 150 ms.
* stream frames/s: ``GET /api/stream.mjpg`` read by 1 and by 3 clients at once for a few seconds
  (the source is a 15 fps video looped in real time, so 15 is the ceiling).
* the cost of the stream itself: JPEG bytes and encode time per frame (encoded once, shared by clients).

Then a server in its own process (``lastlayer teach --web``) on a state of 30 classes, each figure next
to the same request while the server is idle:

* static-file latency during a 5,000-step fine-tune on 30 classes (goal < 1 s);
* ``GET /api/state`` while another process holds the state's write lock (reads must not wait);
* convergence: from another process's acknowledged change to the server's ``changed`` event.

Usage: ``python benchmarks/serve.py [--trials 20] [--seconds 5]``. Needs lastlayer[web,camera] and httpx2 (the test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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
    """Reads ``/api/events`` on a thread; keeps (arrival time, revision) of each event of ``kinds`` (``perf_counter`` and ``time``)."""

    def __init__(self, base: str, kinds: tuple[str, ...] = ("live",)) -> None:
        self.base, self.kinds, self.events, self.stop = base, kinds, [], threading.Event()
        self._cond = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=None) as client, client.stream("GET", f"{self.base}/api/events", headers=HEADERS) as response:
                name = None
                for line in response.iter_lines():
                    if self.stop.is_set():
                        return
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: ") and name in self.kinds:
                        data = json.loads(line[6:])
                        with self._cond:
                            self.events.append((time.perf_counter(), time.time(), data.get("revision")))
                            self._cond.notify_all()
        except httpx.HTTPError:  # the server stopped
            return

    def first_at(self, revision: int, since: float, timeout: float = 5.0, clock=time.perf_counter) -> float | None:
        """Arrival time (on ``clock``: ``time.perf_counter`` or ``time.time``) of the first event at ``revision`` or later
        that arrived after ``since``."""
        deadline = time.perf_counter() + timeout
        with self._cond:
            while True:
                for arrived, wall, tagged in self.events:
                    when = wall if clock is time.time else arrived
                    if when >= since and tagged is not None and tagged >= revision:
                        return when
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
    from lastlayer.images.decode import encode_jpeg
    from lastlayer.images.render import render_frame
    from lastlayer.serve.feed import JPEG_QUALITY

    frame = render_frame("gear", 0)
    encode_jpeg(frame, JPEG_QUALITY)
    start = time.perf_counter()
    for _ in range(50):
        data = encode_jpeg(frame, JPEG_QUALITY)
    return (time.perf_counter() - start) / 50, len(data)


CLASSES, SHOTS, FINETUNE_STEPS = 30, 12, 5000  # 12 shots: below the held-out minimum, so all 5,000 steps run
_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""
_TEACHER = """
import sys, time
import numpy as np
from lastlayer.teach.session import TeachingSession
with TeachingSession(sys.argv[1]) as session:
    for i in range(int(sys.argv[2])):
        time.sleep(0.4)
        session.add_class(f"other {i}")
        print(time.time(), session.revision, flush=True)
"""


def make_state(state: Path) -> None:
    """30 classes of 12 examples each (synthetic embeddings: no image is embedded), as any process would store them."""
    import numpy as np

    from lastlayer.learn.imprinting import unit_rows
    from lastlayer.teach.session import TeachingSession

    rng = np.random.default_rng(0)
    with TeachingSession(state, EXTRACTOR) as session:
        centers = unit_rows(rng.normal(size=(CLASSES, session.embedder.dim)))
        pixels = np.zeros((8, 8, 3), np.uint8)
        for index, center in enumerate(centers):
            noise = 2.5 * rng.normal(size=(SHOTS, len(center))) / np.sqrt(len(center)) * 10
            session.add_examples(f"class {index}", [pixels] * SHOTS, embeddings=unit_rows(center + noise))


def timed_get(client: httpx.Client, path: str) -> float:
    start = time.perf_counter()
    client.get(path).raise_for_status()
    return time.perf_counter() - start


def while_running(client: httpx.Client, path: str, running: threading.Thread) -> list[float]:
    """Latencies of ``GET path`` every 50 ms while ``running`` is alive."""
    latencies = []
    while running.is_alive():
        latencies.append(timed_get(client, path))
        time.sleep(0.05)
    return latencies


def shared_state(folder: Path, port: int) -> None:
    state = folder / "shared-state"
    make_state(state)
    server = subprocess.Popen([sys.executable, "-m", "lastlayer", "teach", "--web", "--state", str(state), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "LASTLAYER_BUSY_TIMEOUT": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers=HEADERS, timeout=120) as client:
            while True:
                try:
                    client.get("/api/state").raise_for_status()
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            idle = [timed_get(client, "/static/style.css") for _ in range(20)]
            result: dict = {}
            tuning = threading.Thread(target=lambda: result.update(client.post("/api/finetune", json={"steps": FINETUNE_STEPS}).json()))
            began = time.perf_counter()
            tuning.start()
            during = while_running(client, "/static/style.css", tuning)
            took = time.perf_counter() - began
            print(f"fine-tune of {CLASSES} classes x {SHOTS} examples: {result.get('steps')} steps in {took:.1f} s")
            print(f"static file, idle                 : {summary(idle, 'ms', 1000)}")
            print(f"static file, during the fine-tune : {summary(during, 'ms', 1000)}   goal < 1000 ms")

            reads_idle = [timed_get(client, "/api/state") for _ in range(20)]
            holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(state / "session.sqlite"), "3"], stdout=subprocess.PIPE, text=True)
            holder.stdout.readline()
            reads_locked = [timed_get(client, "/api/state") for _ in range(20)]
            refused = client.post("/api/classes", json={"name": "while locked"})
            holder.wait()
            print(f"GET /api/state, idle              : {summary(reads_idle, 'ms', 1000)}")
            print(f"GET /api/state, write lock held   : {summary(reads_locked, 'ms', 1000)}   "
                  f"(a change meanwhile: {refused.status_code}, after the busy timeout)")

            events = EventLog(base, kinds=("changed",))
            teacher = subprocess.Popen([sys.executable, "-c", _TEACHER, str(state), "10"], stdout=subprocess.PIPE, text=True,
                                       env={**os.environ})
            delays = []
            for line in teacher.stdout:
                acknowledged, revision = float(line.split()[0]), int(line.split()[1])
                arrived = events.first_at(revision, 0.0, clock=time.time)
                if arrived is not None:
                    delays.append(arrived - acknowledged)
            teacher.wait()
            events.stop.set()
            print(f"another process's change -> 'changed' event: {summary(delays, 'ms', 1000)}  (the server looks every 0.25 s)")
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args()
    if not EXTRACTOR.exists():
        sys.exit(f"benchmark needs {EXTRACTOR}; set LASTLAYER_SHARED")
    from lastlayer.images.render import write_video

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
        shared_state(Path(folder), args.port + 1)


if __name__ == "__main__":
    main()
