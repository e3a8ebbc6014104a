"""The app's bounds with a device camera: frames kept at display size, a stalled camera holding no worker thread,
and a source's credentials absent from every response and log line."""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
import pytest

from lastlayer.serve.feed import DISPLAY_SIDE
from lastlayer.sources import Frame, FrameSource, SourceError
from serve.webtools import wait_for


class HeldSource(FrameSource):
    """``first`` frames of ``size`` (width, height) at once, then each next one only once ``release`` is set."""

    def __init__(self, size: tuple[int, int], first: int, release: threading.Event) -> None:
        super().__init__("held camera")
        self.size, self.first, self.release, self.position = size, first, release, 0

    @property
    def paced(self) -> bool:
        return True

    def read(self) -> Frame | None:
        if self.position >= self.first:
            while not self.release.wait(0.1):
                if self.closed:
                    return None
        if self.closed:
            return None
        width, height = self.size
        pixels = np.full((height, width, 3), (self.position * 7) % 256, np.uint8)
        self.position += 1
        return Frame(pixels, self.position - 1, self.position / 15)


@pytest.fixture
def held_client(session: Any) -> Callable[..., Any]:
    """``held_client(size, first) -> (client, feed, release)``: an app whose device camera is a :class:`HeldSource`."""
    from starlette.testclient import TestClient

    from lastlayer.serve.app import create_app
    from lastlayer.teach.live import LiveLoop

    made: list[tuple[Any, threading.Event]] = []

    def make(size: tuple[int, int], first: int) -> tuple[Any, Any, threading.Event]:
        release = threading.Event()
        live = LiveLoop(session, HeldSource(size, first, release), window=1, top_k=3, max_fps=30)
        app = create_app(session, live, log=lambda line: None)
        made.append((app, release))
        client = TestClient(app, base_url="http://127.0.0.1:8765")
        client.headers["X-Lastlayer-Token"] = "-"
        return client, app.state.feed, release

    yield make
    for app, release in made:
        release.set()
        app.state.feed.stop()


def test_frames_of_a_4k_camera_are_kept_and_streamed_at_display_size(held_client) -> None:
    client, feed, _ = held_client((3840, 2160), 4)
    wait_for(lambda: feed.snapshot() is not None and feed.snapshot().state.frame.index == 3, 60, what="four 4K frames")
    snapshot = feed.snapshot()
    assert max(snapshot.state.frame.pixels.shape[:2]) == DISPLAY_SIDE  # no full-size frame stays referenced
    kept = list(feed._frames)
    assert kept and all(max(frame.pixels.shape[:2]) == DISPLAY_SIDE for frame in kept)
    assert all(len(frame.jpeg) < DISPLAY_SIDE * 360 for frame in kept)  # compressed, not raw pixels
    gear = client.post("/api/classes", json={"name": "gear"}).json()["class"]["id"]
    added = client.post(f"/api/classes/{gear}/frames", json={"frame": kept[0].index})
    assert added.status_code == 201, added.text
    thumbnail = client.get(f"/api/examples/{added.json()['added'][0]['id']}/thumbnail.jpg")
    assert thumbnail.status_code == 200


def test_bursts_on_a_stalled_camera_wait_without_holding_worker_threads(held_client) -> None:
    import asyncio

    import httpx2

    client, feed, release = held_client((320, 240), 2)
    wait_for(lambda: feed.status == "live", 60, what="the camera to be live")
    feed.frame_wait = 600.0  # the camera stalls for as long as the test holds it
    gear = client.post("/api/classes", json={"name": "gear"}).json()["class"]["id"]

    async def crowd() -> tuple[Any, list[Any]]:
        # one event loop for every request, as in the real server (TestClient gives each request its own)
        transport = httpx2.ASGITransport(app=client.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765",
                                      headers={"X-Lastlayer-Token": "-"}, timeout=300) as crowd_client:
            bursts = [asyncio.ensure_future(crowd_client.post(f"/api/classes/{gear}/frames", json={"count": 3}))
                      for _ in range(40)]  # as many as the worker pool has threads
            while len(feed._waiters) < 40:
                await asyncio.sleep(0.05)
            try:  # /api/state needs a worker thread: answered while all 40 bursts wait for the camera
                state = await asyncio.wait_for(crowd_client.get("/api/state"), 60)
            except asyncio.TimeoutError:
                state = None
            still_waiting = not any(burst.done() for burst in bursts)
            release.set()
            return (state, still_waiting), list(await asyncio.gather(*bursts))

    (state, still_waiting), answers = asyncio.run(crowd())
    assert state is not None and state.status_code == 200 and still_waiting
    assert sorted(answer.status_code for answer in answers) == [201] * 40


def test_a_burst_on_a_stalled_camera_fails_with_nothing_added(held_client) -> None:
    client, feed, _ = held_client((320, 240), 2)
    wait_for(lambda: feed.status == "live", 60, what="the camera to be live")
    feed.frame_wait = 0.2
    gear = client.post("/api/classes", json={"name": "gear"}).json()["class"]["id"]
    burst = client.post(f"/api/classes/{gear}/frames", json={"count": 5})
    assert burst.status_code == 503 and "delivered 0 of 5" in burst.json()["error"]
    assert client.get("/api/classes").json()["classes"][0]["examples"] == 0


SECRET_URL = "rtsp://admin:hunter2@cam.local:554/live?token=abc123"


def test_source_credentials_reach_no_response_and_no_log_line(session: Any) -> None:
    from starlette.testclient import TestClient

    from lastlayer.serve.app import create_app

    def refuse(_: Any) -> Any:
        raise SourceError(f"cannot open {SECRET_URL}: connection refused")

    lines: list[str] = []
    app = create_app(session, None, source=refuse, source_name=SECRET_URL, retries=1, retry_delay=0.01, log=lines.append)
    try:
        client = TestClient(app, base_url="http://127.0.0.1:8765")
        client.headers["X-Lastlayer-Token"] = "-"
        wait_for(lambda: app.state.feed.status == "failed", 30, what="the feed to give up")
        texts = [client.get("/api/state").text, client.get("/api/events?max_events=2").text,
                 client.post("/api/source/retry").text, client.get("/api/predictions").text, *lines]
        state = client.get("/api/state").json()["source"]
    finally:
        app.state.feed.stop()
    assert not [text for text in texts if "hunter2" in text or "abc123" in text]
    assert state["name"] == "rtsp://admin:***@cam.local:554/live?token=***"
    assert "rtsp://admin:***@cam.local" in state["error"] and lines


@pytest.mark.shared
def test_names_that_would_split_or_mimic_a_label_are_refused_and_the_labels_stay_intact(make_client) -> None:
    from serve.test_api import _create, _upload
    from serve.webtools import frame_png

    client = make_client(live=False)
    gear, washer = _create(client, "gear"), _create(client, "washer")
    for name in ("bolt\u2028washer", "bolt\u2029washer", "bolt\u0085washer", "ge\u200bar", "\u202egear", "bolt\nnut"):
        answer = client.post("/api/classes", json={"name": name})
        assert answer.status_code == 400 and "character" in answer.json()["error"], (name, answer.text)
        assert client.patch(f"/api/classes/{gear}", json={"name": name}).status_code == 400
    for look_alike in ("GEAR", "gear ", "ｇｅａｒ"):
        assert client.post("/api/classes", json={"name": look_alike}).status_code == 409, look_alike
    for class_id, kind in ((gear, "gear"), (washer, "washer")):
        assert _upload(client, class_id, *[frame_png(kind, i) for i in range(2)]).status_code == 201
    labels = client.get("/api/export/labels.txt")
    assert labels.status_code == 200 and labels.text.splitlines() == ["0 gear", "1 washer"]
