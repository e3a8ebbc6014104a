"""The web app with the session's unknown rule: the live view answers "unknown" (polled, Server-Sent and for the
browser's camera), and the queue of uncertain frames: listed with thumbnails, one taught to a class, one dismissed.

The state is taught gears and washers; the looping video also shows nuts, which nobody taught.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from lastlayer.images.render import write_video
from serve.webtools import png, wait_for

from conftest import EXTRACTOR, MODELS, need

pytestmark = pytest.mark.shared
SEGMENTS = [("gear", 15), ("nut", 15), ("washer", 15)]


@pytest.fixture(scope="module")
def nut_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("cv2", reason="writing the test video needs OpenCV (lastlayer[camera])")
    return write_video(tmp_path_factory.mktemp("video") / "parts-and-nuts.avi", SEGMENTS, fps=15)


@pytest.fixture(scope="module")
def frames(nut_video: Path) -> list[np.ndarray]:
    from lastlayer.sources import open_source

    return [frame.pixels for frame in open_source(str(nut_video))]


@pytest.fixture
def taught(tmp_path: Path, frames: list[np.ndarray]) -> Iterator[Any]:
    """A session taught every other gear and washer frame of the video (8 each); its nuts are never taught."""
    from lastlayer.teach.session import TeachingSession

    with TeachingSession(tmp_path / "state", need(MODELS / EXTRACTOR)) as session:
        session.add_examples("gear", frames[0:15:2])
        session.add_examples("washer", frames[30:45:2])
        yield session


@pytest.fixture
def client(taught: Any, nut_video: Path) -> Iterator[Any]:
    from starlette.testclient import TestClient

    from lastlayer.serve.app import create_app
    from lastlayer.serve.server import source_opener

    app = create_app(taught, None, source=source_opener(str(nut_video)), source_name="parts-and-nuts.avi", log=lambda line: None)
    with TestClient(app, base_url="http://127.0.0.1:8765") as opened:
        opened.headers["X-Lastlayer-Token"] = "-"
        yield opened
    app.state.feed.stop()


def _live(client: Any, unknown: bool) -> dict | None:
    live = client.get("/api/predictions").json()["live"]
    return live if live and live["unknown"] is unknown else None


def test_the_live_view_answers_unknown_for_what_was_never_taught(client: Any, frames: list[np.ndarray]) -> None:
    unknown = wait_for(lambda: _live(client, True), 15, what="a live prediction of unknown")
    assert unknown["top"]["label"] == "unknown" and unknown["closest"]["label"] in ("gear", "washer")
    assert unknown["top"]["score"] == unknown["closest"]["score"] == unknown["top_k"][0]["score"]
    known = wait_for(lambda: _live(client, False), 15, what="a live prediction of a taught class")
    assert known["top"]["label"] == known["closest"]["label"] in ("gear", "washer")
    events = client.get("/api/events?max_events=80").text  # ~5 s of the 3 s loop
    lives = [json.loads(block.split("data: ", 1)[1]) for block in events.split("\n\n") if block.startswith("event: live")]
    answers = {live["top"]["label"] for live in lives}
    assert "unknown" in answers and answers & {"gear", "washer"}
    assert all(live["unknown"] is (live["top"]["label"] == "unknown") for live in lives)
    assert "event: uncertain" in events
    camera = client.post("/api/predict", content=png(frames[22])).json()  # a nut, seen by the browser's camera
    assert camera["unknown"] is True and camera["top"]["label"] == "unknown" and camera["closest"]["label"] != "unknown"
    assert client.post("/api/predict", content=png(frames[4])).json()["top"]["label"] == "gear"


def test_the_queue_lists_teaches_and_dismisses(client: Any, taught: Any) -> None:
    def queued() -> list[dict] | None:
        items = client.get("/api/uncertain").json()["items"]
        unknown = [item for item in items if item["reason"] == "unknown"]
        return items if len(unknown) >= 2 and any(item["seen"] > 1 for item in items) else None

    items = wait_for(queued, 20, what="unknown frames queued, one of them seen again as the video loops")
    listing = client.get("/api/uncertain").json()
    assert listing["rule"]["active"] and listing["rule"]["threshold"] == taught.unknown_rule()["threshold"]
    assert len(listing["items"]) <= listing["capacity"] and listing["bytes"] <= listing["max_bytes"]
    first, second = [item for item in items if item["reason"] == "unknown"][:2]
    assert first["teachable"] and first["text"].startswith("unknown (closest: ")
    thumbnail = client.get(f"/api/uncertain/{first['id']}/thumbnail.jpg")
    assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"

    queue_item = taught.uncertain.get(first["id"])
    taught_one = client.post(f"/api/uncertain/{first['id']}/teach", json={"name": "nut"})
    assert taught_one.status_code == 201 and taught_one.json()["class"]["name"] == "nut"
    assert taught_one.json()["class"]["examples"] == 1
    stored = taught.store.snapshot(None, every_example=True).examples[-1]
    np.testing.assert_allclose(stored.embedding, queue_item.embedding, atol=1e-6)  # the frame's own embedding
    assert first["id"] not in [item["id"] for item in client.get("/api/uncertain").json()["items"]]
    assert client.post(f"/api/uncertain/{first['id']}/teach", json={"name": "nut"}).status_code == 404
    assert client.get(f"/api/uncertain/{first['id']}/thumbnail.jpg").status_code == 404

    assert client.post(f"/api/uncertain/{second['id']}/teach", json={}).status_code == 400
    assert client.post(f"/api/uncertain/{second['id']}/teach", json={"class_id": 999}).status_code == 404
    assert client.delete(f"/api/uncertain/{second['id']}").status_code == 200
    assert client.delete(f"/api/uncertain/{second['id']}").status_code == 404
    assert [c["name"] for c in client.get("/api/state").json()["classes"]] == ["gear", "washer", "nut"]
