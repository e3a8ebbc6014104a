"""``lastlayer teach --web`` under load and under attack, on loopback, in a bounded time.

A real server (``python -m lastlayer teach --web``, its own process, a 15 fps video looped in real time)
is measured from this process with a small asyncio HTTP/1.1 client (keep-alive connections, so the
client's own cost stays far below the server's):

1. Busy clients: 1, 50 and 200 clients each looping "teach the live frame"
   (``POST /api/classes/{id}/frames``), ``GET /api/state`` and "predict my camera's frame" (``POST
   /api/predict`` with a 320x240 JPEG, as the page does from a phone) with no pause, for ``--seconds`` each,
   while one viewer reads ``/api/stream.mjpg`` and one reads ``/api/events``. Reported: p50 / p95 / p99
   latency of the teach requests and of all requests, the live frames/s and ``live`` events/s the
   viewers received, how many requests were refused (503: busy) or failed, and the server's peak
   memory (VmHWM, reset before each level) above its idle memory. Goals: the live view keeps
   >= 10 frames/s and teach p95 < 1 s at 50 clients.
2. Hostile uploads: one request of 32 solid-colour 7,000 x 7,000 (49-megapixel) lossless WebP files
   (62 KB in all), the same as PNG, and one such WebP posted to ``/api/predict``: the status, the time
   and the server's peak memory above idle for each. Goal: <= 300 MB above idle for any request.
3. Idle memory with a 3840 x 2160 (4K) source, after the server kept its frames for teaching.

Memory is the server process's resident set read from ``/proc/<pid>/status`` (Linux); ``VmHWM`` is
reset through ``/proc/<pid>/clear_refs`` before each measurement.

Usage: ``python benchmarks/load.py [--seconds 8] [--clients 1 50 200]``. Needs lastlayer[web,camera].
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED  # noqa: E402

EXTRACTOR = SHARED / "models" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
HOSTILE_SIDE = 7000  # 49 megapixels: just under the 50-megapixel limit of a photo
HOSTILE_FILES = 32


# ----------------------------------------------------------------------------- the server process
class ServerProcess:
    """``lastlayer teach --web`` on loopback in a child process, with its memory readable from /proc."""

    def __init__(self, state: Path, source: Path | None, port: int) -> None:
        command = [sys.executable, "-m", "lastlayer", "teach", "--web", "--state", str(state), "--port", str(port),
                   "--model", str(EXTRACTOR)]
        if source is not None:
            command += ["--source", str(source), "--loop"]
        self.port = port
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def status(self, field: str) -> int:
        """A memory figure of the server in MiB (``VmRSS``, ``VmHWM``)."""
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) // 1024

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ----------------------------------------------------------------------------- a small HTTP/1.1 client
class Connection:
    """One keep-alive HTTP/1.1 connection; :meth:`request` returns (status, body)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=2**24)
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nX-Lastlayer-Token: -\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n")
        try:
            self.writer.write(head.encode() + body)
            await self.writer.drain()
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("closed")
            status = int(status_line.split()[1])
            length, close = 0, False
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and "close" in value.lower():
                    close = True
            data = await self.reader.readexactly(length)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
            await self.close()
            return 0, b""
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def count_stream(port: int, path: str, marker: bytes, until: float, counts: list[float]) -> None:
    """Arrival times of ``marker`` in a streamed response (``/api/stream.mjpg``, ``/api/events``) until ``until``."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
    except OSError:
        return
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Lastlayer-Token: -\r\n\r\n".encode())
    tail = b""
    try:
        while time.monotonic() < until:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), max(0.01, until - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if not chunk:
                break
            data = tail + chunk
            counts.extend([time.monotonic()] * data.count(marker))
            tail = data[-(len(marker) - 1):]
    finally:
        writer.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def latency_line(values: list[float]) -> str:
    if not values:
        return "no request completed"
    return (f"p50 {1000 * percentile(values, 0.5):7.1f}  p95 {1000 * percentile(values, 0.95):7.1f}  "
            f"p99 {1000 * percentile(values, 0.99):7.1f} ms  (n={len(values)})")


def camera_jpeg() -> bytes:
    """A 320x240 JPEG of a part: what the page posts to ``/api/predict`` from the browser's camera."""
    from lastlayer.images.decode import encode_jpeg
    from lastlayer.images.render import render_frame

    return encode_jpeg(render_frame("gear", 3), 80)


async def busy_level(server: ServerProcess, class_id: int, clients: int, seconds: float) -> dict:
    """``clients`` busy clients for ``seconds``; the viewers' rates and the latencies."""
    photo = camera_jpeg()
    teach, state, predict, everything, refused, failed = [], [], [], [], [0], [0]
    frames: list[float] = []
    events: list[float] = []
    server.reset_peak()
    began = time.monotonic()
    until = began + seconds

    async def client() -> None:
        connection = Connection(server.port)
        try:
            while time.monotonic() < until:
                for method, path, body, kind, bucket in (("POST", f"/api/classes/{class_id}/frames", b"{}", "application/json", teach),
                                                         ("GET", "/api/state", b"", "application/json", state),
                                                         ("POST", "/api/predict", photo, "image/jpeg", predict)):
                    start = time.monotonic()
                    status, _ = await connection.request(method, path, body, kind)
                    took = time.monotonic() - start
                    if status == 503:
                        refused[0] += 1
                    elif not 200 <= status < 300:
                        failed[0] += 1
                        await asyncio.sleep(0.05)
                    else:
                        everything.append(took)
                        if bucket is not None:
                            bucket.append(took)
        finally:
            await connection.close()

    viewers = [count_stream(server.port, "/api/stream.mjpg", b"Content-Type: image/jpeg", until, frames),
               count_stream(server.port, "/api/events", b"event: live", until, events)]
    await asyncio.gather(*viewers, *(client() for _ in range(clients)))
    span = time.monotonic() - began
    return {"clients": clients, "teach": teach, "state": state, "predict": predict, "all": everything, "refused": refused[0], "failed": failed[0],
            "fps": len(frames) / span, "events": len(events) / span, "peak": server.status("VmHWM")}


async def wait_until_live(port: int, timeout: float = 60.0) -> None:
    connection = Connection(port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body = await connection.request("GET", "/api/predictions")
            if status == 200 and json.loads(body).get("live"):
                await connection.close()
                return
        except OSError:
            pass
        await connection.close()
        await asyncio.sleep(0.2)
    raise SystemExit("the server did not show a live frame in time")


async def new_class(port: int, name: str) -> int:
    connection = Connection(port)
    status, body = await connection.request("POST", "/api/classes", json.dumps({"name": name}).encode())
    await connection.close()
    if status != 201:
        raise SystemExit(f"cannot create a class: {status} {body[:200]!r}")
    return int(json.loads(body)["class"]["id"])


# ----------------------------------------------------------------------------- hostile uploads
def solid_image(image_format: str, side: int = HOSTILE_SIDE) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    options = {"lossless": True} if image_format == "WEBP" else {}
    Image.new("RGB", (side, side), (200, 30, 30)).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def multipart(files: list[bytes], extension: str) -> tuple[bytes, str]:
    boundary = "lastlayerbenchmark"
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"p{i}.{extension}\"\r\n"
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for i, data in enumerate(files)]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def hostile(server: ServerProcess, class_id: int) -> list[tuple[str, int, float, int, int]]:
    """(what, status, seconds, request bytes, peak MiB above idle) of each hostile request."""
    webp, png = solid_image("WEBP"), solid_image("PNG")
    cases = [(f"{HOSTILE_FILES} x 49 MP WebP in one upload", "POST", f"/api/classes/{class_id}/examples", *multipart([webp] * HOSTILE_FILES, "webp")),
             (f"{HOSTILE_FILES} x 49 MP PNG in one upload", "POST", f"/api/classes/{class_id}/examples", *multipart([png] * HOSTILE_FILES, "png")),
             ("one 49 MP WebP to /api/predict", "POST", "/api/predict", webp, "image/webp"),
             ("one 49 MP PNG to /api/predict", "POST", "/api/predict", png, "image/png")]
    results = []
    for what, method, path, body, content_type in cases:
        await asyncio.sleep(1.0)
        idle = server.status("VmRSS")
        server.reset_peak()
        connection = Connection(server.port)
        start = time.monotonic()
        status, _ = await connection.request(method, path, body, content_type)
        took = time.monotonic() - start
        await connection.close()
        results.append((what, status, took, len(body), server.status("VmHWM") - idle))
    return results


# ----------------------------------------------------------------------------- the run
def make_video(folder: Path, size: tuple[int, int], frames: int) -> Path:
    from lastlayer.images.render import write_video

    return write_video(folder / f"parts-{size[0]}x{size[1]}.avi", [("gear", frames), ("washer", frames)], fps=15, size=size)


async def run_hostile_only(args: argparse.Namespace, folder: Path) -> None:
    """Only the hostile uploads, on a server without a source (e.g. an older lastlayer on PYTHONPATH, for a before/after)."""
    server = ServerProcess(folder / "state", None, args.port)
    try:
        for _ in range(600):
            try:
                gear = await new_class(args.port, "gear")
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise SystemExit("the server did not start")
        await asyncio.sleep(2.0)
        print(f"server idle: {server.status('VmRSS')} MiB resident (no source)")
        for what, status, took, size, peak in await hostile(server, gear):
            print(f"{what:38}: {size / 1024:8.0f} KiB -> {status}  in {took:6.2f} s, peak {peak:5d} MiB above idle")
    finally:
        server.stop()


async def run(args: argparse.Namespace, folder: Path) -> None:
    if args.hostile_only:
        await run_hostile_only(args, folder)
        return
    video = make_video(folder, (320, 240), 45)
    server = ServerProcess(folder / "state", video, args.port)
    try:
        await wait_until_live(args.port)
        gear = await new_class(args.port, "gear")
        await new_class(args.port, "washer")
        await asyncio.sleep(3.0)
        idle = server.status("VmRSS")
        print(f"server idle: {idle} MiB resident (320x240 source)")
        print(f"{'clients':>7} | {'teach latency':^44} | {'all requests':^44} | frames/s events/s | 503s failed | peak above idle")
        for clients in args.clients:
            level = await busy_level(server, gear, clients, args.seconds)
            print(f"{clients:7d} | {latency_line(level['teach']):44} | {latency_line(level['all']):44} | "
                  f"{level['fps']:8.1f} {level['events']:8.1f} | {level['refused']:4d} {level['failed']:6d} | {level['peak'] - idle:5d} MiB")
            print(f"{'':7} | state   {latency_line(level['state'])} | predict {latency_line(level['predict'])}")
        print("goal: >= 10 frames/s and teach p95 < 1000 ms at 50 clients")
        for what, status, took, size, peak in await hostile(server, gear):
            print(f"{what:38}: {size / 1024:8.0f} KiB -> {status}  in {took:6.2f} s, peak {peak:5d} MiB above idle")
        print("goal: <= 300 MiB above idle for any request")
    finally:
        server.stop()
    if args.skip_4k:
        return
    big = make_video(folder, (3840, 2160), 8)
    server = ServerProcess(folder / "state-4k", big, args.port + 1)
    try:
        await wait_until_live(args.port + 1, timeout=120)
        await asyncio.sleep(args.seconds)  # long enough to keep its frames for teaching
        print(f"server idle with a 3840x2160 source: {server.status('VmRSS')} MiB resident (peak {server.status('VmHWM')} MiB)")
    finally:
        server.stop()


def free_port_pair() -> int:
    """A loopback port p with p and p + 1 free right now."""
    import socket

    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise SystemExit("no two free loopback ports")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per load level (default: 8)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 50, 200], help="busy clients per level (default: 1 50 200)")
    parser.add_argument("--port", type=int, default=0, help="first of two loopback ports (default: free ones)")
    parser.add_argument("--skip-4k", action="store_true", help="leave out the idle memory with a 4K source")
    parser.add_argument("--hostile-only", action="store_true", help="only the hostile uploads, on a server without a source")
    args = parser.parse_args()
    if args.port == 0:
        args.port = free_port_pair()
    if not EXTRACTOR.exists():
        sys.exit(f"benchmark needs {EXTRACTOR}; set LASTLAYER_SHARED")
    if not Path("/proc/self/status").exists():
        sys.exit("this benchmark reads memory from /proc (Linux)")
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(run(args, Path(folder)))


if __name__ == "__main__":
    os.environ.setdefault("LASTLAYER_BUSY_TIMEOUT", "5")
    main()
