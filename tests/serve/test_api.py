"""The JSON API over a TeachingSession, through Starlette's TestClient: every operation, persistence, concurrency."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter as StockInterpreter

from lastlayer.images.decode import resize_array
from lastlayer.images.render import render_frame
from lastlayer.teach.session import TeachingSession
from serve.webtools import frame_png, kind_at, wait_for

pytestmark = pytest.mark.shared


def _live(client) -> dict:
    return wait_for(lambda: client.get("/api/predictions").json()["live"], 15, what="the first live frame")


def _create(client, name: str) -> int:
    response = client.post("/api/classes", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()["class"]["id"]


def _upload(client, class_id: int, *images: bytes):
    files = [("files", (f"photo{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return client.post(f"/api/classes/{class_id}/examples", files=files)


def _counts(client) -> dict[str, int]:
    return {c["name"]: c["examples"] for c in client.get("/api/state").json()["classes"]}


def test_page_static_and_state(make_client) -> None:
    client = make_client(live=False)
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "app.js" in page.text and "content-security-policy" in page.headers
    assert "getUserMedia" in client.get("/static/app.js").text
    assert client.get("/static/style.css").status_code == 200
    state = client.get("/api/state").json()
    assert state["classes"] == [] and state["source"]["kind"] is None and state["token_required"] is False
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and "error" in missing.json()


def test_class_lifecycle(make_client) -> None:
    client = make_client(live=False)
    gear = _create(client, "gear")
    assert client.post("/api/classes", json={"name": "gear"}).status_code == 409
    assert client.post("/api/classes", json={"name": "  "}).status_code == 400
    assert client.post("/api/classes", json={"nom": "x"}).status_code == 400
    assert client.post("/api/classes", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    renamed = client.patch(f"/api/classes/{gear}", json={"name": "spur gear"})
    assert renamed.status_code == 200 and renamed.json()["class"]["name"] == "spur gear"
    washer = _create(client, "washer")
    assert client.patch(f"/api/classes/{washer}", json={"name": "spur gear"}).status_code == 409
    assert [c["name"] for c in client.get("/api/classes").json()["classes"]] == ["spur gear", "washer"]
    assert client.delete(f"/api/classes/{gear}").status_code == 200
    assert client.delete(f"/api/classes/{gear}").status_code == 404
    assert client.patch("/api/classes/999", json={"name": "x"}).status_code == 404
    assert [c["name"] for c in client.get("/api/state").json()["classes"]] == ["washer"]


def test_uploads_thumbnails_delete_and_undo(make_client) -> None:
    client = make_client(live=False)
    gear = _create(client, "gear")
    added = _upload(client, gear, frame_png("gear", 1), frame_png("gear", 2))
    assert added.status_code == 201, added.text
    ids = [e["id"] for e in added.json()["added"]]
    assert len(ids) == 2 and added.json()["class"]["examples"] == 2
    listed = client.get(f"/api/classes/{gear}/examples").json()["examples"]
    assert [e["id"] for e in listed] == ids
    thumb = client.get(f"/api/examples/{ids[0]}/thumbnail.jpg")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
    assert client.get("/api/examples/9999/thumbnail.jpg").status_code == 404
    assert client.get("/api/state").json()["classes"][0]["recent"] == ids[::-1]
    assert client.delete(f"/api/examples/{ids[0]}").status_code == 200
    assert client.delete(f"/api/examples/{ids[0]}").status_code == 404
    undone = client.post("/api/undo").json()
    assert undone["undone"]["id"] == ids[1]
    assert client.post("/api/undo").json()["undone"] is None
    assert _counts(client) == {"gear": 0}


def test_teach_from_live_frames_and_burst(make_client) -> None:
    client = make_client()
    live = _live(client)
    gear = _create(client, "gear")
    one = client.post(f"/api/classes/{gear}/frames", json={"frame": live["frame"]})
    assert one.status_code == 201, one.text
    burst = client.post(f"/api/classes/{gear}/frames", json={"count": 3})
    assert burst.status_code == 201 and len(burst.json()["added"]) == 3, burst.text
    assert client.post(f"/api/classes/{gear}/frames", json={"count": 0}).status_code == 400
    assert client.post(f"/api/classes/{gear}/frames", json={"count": 500}).status_code == 400
    assert client.post("/api/classes/77/frames", json={}).status_code == 404
    assert _counts(client) == {"gear": 4}
    state = client.get("/api/state").json()
    assert state["source"] == {"kind": "device", "name": "parts.avi", "status": "live", "error": None, "attempt": 0, "retries": 5}


def test_prediction_uses_new_example_and_switches(make_client) -> None:
    """Teach gear and washer from the frames the video shows; the live prediction then follows the video."""
    client = make_client()
    gear, washer = _create(client, "gear"), _create(client, "washer")
    ids = {"gear": gear, "washer": washer}
    taught: dict[str, int] = {"gear": 0, "washer": 0}
    revision = 0
    deadline = time.monotonic() + 20
    seen = set()
    while min(taught.values()) < 3 and time.monotonic() < deadline:
        live = client.get("/api/predictions").json()["live"]
        if live and live["frame"] not in seen:
            seen.add(live["frame"])
            kind = kind_at(live["frame"])
            if taught[kind] < 3:
                response = client.post(f"/api/classes/{ids[kind]}/frames", json={"frame": live["frame"]})
                assert response.status_code == 201
                revision = response.json()["revision"]
                taught[kind] += 1
        time.sleep(0.05)
    assert taught == {"gear": 3, "washer": 3}

    def current_matches() -> dict | None:
        live = client.get("/api/predictions").json()["live"]
        ok = live and live["revision"] is not None and live["revision"] >= revision and live["top"]
        return live if ok and live["top"]["label"] == kind_at(live["frame"]) else None

    first = wait_for(current_matches, 10, what="a prediction matching the video")
    wait_for(lambda: (m := current_matches()) and m["top"]["label"] != first["top"]["label"], 10,
             what="the prediction switching with the video")


def test_stream_and_events(make_client) -> None:
    client = make_client()
    _live(client)
    stream = client.get("/api/stream.mjpg?max_frames=2")
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("multipart/x-mixed-replace")
    assert stream.content.count(b"Content-Type: image/jpeg") == 2 and stream.content.count(b"\xff\xd8") >= 2
    events = client.get("/api/events?max_events=3")
    assert events.headers["content-type"].startswith("text/event-stream")
    assert "event: changed" in events.text and "event: source" in events.text and "event: live" in events.text
    assert client.get("/api/stream.mjpg?max_frames=x").status_code == 400


def test_without_source(make_client) -> None:
    client = make_client(live=False)
    gear = _create(client, "gear")
    assert client.post(f"/api/classes/{gear}/frames", json={}).status_code == 409
    assert client.get("/api/stream.mjpg").status_code == 404
    assert client.post("/api/source/retry").status_code == 409
    assert client.get("/api/predictions").json()["live"] is None
    _upload(client, gear, frame_png("gear", 3))
    predicted = client.post("/api/predict", content=frame_png("gear", 4))  # a frame of the browser's camera
    assert predicted.status_code == 200 and predicted.json()["top"]["label"] == "gear"
    assert client.post("/api/predict", content=b"not an image").status_code == 415


def test_finetune_evaluate_export(make_client, tmp_path: Path) -> None:
    client = make_client(live=False)
    assert client.get("/api/export/model.tflite").status_code == 409  # nothing to export yet: a conflict with the state
    assert client.get("/api/export/labels.txt").status_code == 409
    assert client.get("/api/evaluation").json()["accuracy"] is None
    for kind in ("gear", "washer"):
        class_id = _create(client, kind)
        assert _upload(client, class_id, *[frame_png(kind, i) for i in range(3)]).status_code == 201
    evaluation = client.get("/api/evaluation").json()
    assert evaluation["labels"] == ["gear", "washer"] and evaluation["accuracy"] == 1.0
    assert evaluation["confusion"] == [[3, 0], [0, 3]]
    tuned = client.post("/api/finetune", json={"steps": 20})
    assert tuned.status_code == 200 and tuned.json()["steps"] == 20
    assert client.post("/api/finetune", json={"steps": -1}).status_code == 400
    model = client.get("/api/export/model.tflite")
    assert model.status_code == 200 and 'filename="model.tflite"' in model.headers["content-disposition"]
    labels = client.get("/api/export/labels.txt")
    names = [line.split(maxsplit=1)[-1] for line in labels.text.splitlines()]
    assert names == ["gear", "washer"]
    path = tmp_path / "model.tflite"
    path.write_bytes(model.content)
    interpreter = StockInterpreter(model_path=str(path))
    interpreter.allocate_tensors()
    entry = interpreter.get_input_details()[0]
    height, width = entry["shape"][1:3]
    pixels = resize_array(render_frame("washer", 40), (width, height))[np.newaxis].astype(entry["dtype"])
    interpreter.set_tensor(entry["index"], pixels)
    interpreter.invoke()
    scores = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
    assert names[int(np.argmax(scores))] == "washer"


def test_changes_are_on_disk_when_the_response_comes(make_client, session) -> None:
    client = make_client(live=False)
    gear = _create(client, "gear")
    _upload(client, gear, frame_png("gear", 5))
    with TeachingSession(session.store.folder) as reopened:
        assert [(c.name, c.examples) for c in reopened.classes()] == [("gear", 1)]


def test_concurrent_teach_requests(make_client) -> None:
    client = make_client()
    _live(client)
    gear, washer = _create(client, "gear"), _create(client, "washer")
    errors: list[str] = []

    def teach(worker: int) -> None:
        for i in range(4):
            if (worker + i) % 2:
                response = _upload(client, washer, frame_png("washer", worker * 10 + i))
            else:
                response = client.post(f"/api/classes/{gear}/frames", json={})
            if response.status_code != 201:
                errors.append(response.text)

    threads = [threading.Thread(target=teach, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert _counts(client) == {"gear": 12, "washer": 12}
    examples = {e["id"] for c in (gear, washer) for e in client.get(f"/api/classes/{c}/examples").json()["examples"]}
    assert len(examples) == 24


def test_internal_error_is_generic_json(make_client, session, monkeypatch) -> None:
    lines: list[str] = []
    client = make_client(live=False, raise_server_exceptions=False, log=lines.append)

    def broken() -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(session, "evaluate", broken)
    response = client.get("/api/evaluation")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error; the server log has the details"}
    assert "secret" not in response.text and any("secret internals" in line for line in lines)


def test_source_failure_is_reported_and_reopened(make_client, tmp_path: Path) -> None:
    """A source that fails: the state says so, uploads keep working, and the feed reopens it with back-off."""
    from starlette.testclient import TestClient

    from lastlayer.serve.app import create_app
    from lastlayer.sources import SourceError

    opened: list[float] = []

    def opener(predictor):
        opened.append(time.monotonic())
        raise SourceError("camera 7 is unplugged; check the cable")

    client = make_client(live=False)
    session = client.app.state.web.session
    app = create_app(session, None, source=opener, source_name="7", retries=2, retry_delay=0.05, log=lambda line: None)
    try:
        failing = TestClient(app, base_url="http://127.0.0.1:8765", headers={"X-Lastlayer-Token": "-"})
        source = wait_for(lambda: (s := failing.get("/api/state").json()["source"])["status"] == "failed" and s, 10,
                          what="the source to be given up")
        assert "unplugged" in source["error"] and len(opened) == 3
        gear = _create(failing, "gear")
        assert _upload(failing, gear, frame_png("gear", 1)).status_code == 201
        assert failing.post("/api/source/retry").status_code == 200
        wait_for(lambda: len(opened) >= 4, 5, what="a new attempt after Retry")
    finally:
        app.state.feed.stop()


def test_error_kinds_answer_with_their_status() -> None:
    from lastlayer.errors import BusyError, ConflictError, NotFoundError, StorageError, TrainingError
    from lastlayer.serve.protocol import ApiError, status_of

    assert [status_of(error("x")) for error in (NotFoundError, ConflictError, BusyError, StorageError, TrainingError)] == \
        [404, 409, 503, 507, 400]
    assert status_of(ApiError("too big", 413)) == 413


def test_changes_of_another_session_reach_the_page_and_its_rules_answer(make_client, session) -> None:
    """Another process (here a second session on the folder) teaches, takes a name, deletes: the API follows."""
    client = make_client(live=False)
    other = TeachingSession(session.store.folder)
    try:
        other.add_examples("nut", [render_frame("nut", i) for i in range(2)])
        state = wait_for(lambda: (s := client.get("/api/state").json())["revision"] == other.revision and s, 5,
                         what="the other session's revision")
        assert [(c["name"], c["examples"]) for c in state["classes"]] == [("nut", 2)]
        events = client.get("/api/events?max_events=1").text
        assert f'"revision": {other.revision}' in events
        predicted = client.post("/api/predict", content=frame_png("nut", 9)).json()
        assert predicted["top"]["label"] == "nut" and predicted["revision"] == other.revision
        other.add_class("bolt")
        taken = client.post("/api/classes", json={"name": "bolt"})
        assert taken.status_code == 409 and "'bolt' exists already" in taken.json()["error"]
        nut = state["classes"][0]["id"]
        example = state["classes"][0]["recent"][0]
        other.remove_class("nut")
        for response in (client.patch(f"/api/classes/{nut}", json={"name": "x"}), client.delete(f"/api/classes/{nut}"),
                         client.get(f"/api/classes/{nut}/examples"), _upload(client, nut, frame_png("nut", 3)),
                         client.delete(f"/api/examples/{example}"), client.get(f"/api/examples/{example}/thumbnail.jpg")):
            assert response.status_code == 404, response.text
        assert "no class" in client.delete(f"/api/classes/{nut}").json()["error"]
    finally:
        other.close()


def test_the_event_loop_answers_while_a_finetune_runs(make_client, session, monkeypatch) -> None:
    from teach.test_session import hold_finetunes

    client = make_client(live=False)
    for kind in ("gear", "washer"):
        _upload(client, _create(client, kind), *[frame_png(kind, i) for i in range(3)])
    started, finish = hold_finetunes(monkeypatch)
    answers: list = []
    tuning = threading.Thread(target=lambda: answers.append(client.post("/api/finetune", json={"steps": 20})))
    tuning.start()
    try:
        assert started.wait(30)
        assert client.get("/static/style.css").status_code == 200
        assert [c["name"] for c in client.get("/api/state").json()["classes"]] == ["gear", "washer"]
        assert client.post("/api/predict", content=frame_png("washer", 7)).json()["top"]["label"] == "washer"
        assert client.get("/api/export/labels.txt").status_code == 200
        still_tuning = tuning.is_alive()
    finally:
        finish.set()
        tuning.join(60)
    assert still_tuning and answers[0].status_code == 200 and answers[0].json()["steps"] == 20


def test_teaching_the_frame_on_screen_stores_its_prediction_embedding(make_client, session, monkeypatch) -> None:
    client = make_client()
    gear = _create(client, "gear")
    shown = _live(client)
    client.app.state.feed.stop()  # no more predictions: any embedding from now on would be the taught frame's
    kept = client.app.state.feed.frame(shown["frame"])
    assert kept.index == shown["frame"] and kept.embedding is not None
    embedded: list[int] = []
    original = session.embedder.embed
    monkeypatch.setattr(session.embedder, "embed", lambda *args, **kwargs: embedded.append(1) or original(*args, **kwargs))
    taught = client.post(f"/api/classes/{gear}/frames", json={"frame": kept.index})
    assert taught.status_code == 201, taught.text
    assert not embedded  # the frame was not embedded a second time
    example = taught.json()["added"][0]["id"]
    stored = session.store.snapshot(every_example=True).examples
    np.testing.assert_allclose(next(e.embedding for e in stored if e.id == example), kept.embedding, atol=1e-6)
    assert session.predict_embedding(kept.embedding).top == ("gear", 1.0)


def test_the_server_replays_recorded_sources_in_real_time(tmp_path) -> None:
    """The device's source: a file or folder loops at its own rate (the server passes loop/realtime for any spec)."""
    pytest.importorskip("cv2")
    from lastlayer.images.render import write_video
    from lastlayer.serve.server import source_opener

    video = write_video(tmp_path / "short.avi", [("gear", 3)], fps=50, size=(64, 48))
    loop = source_opener(str(video))(None)  # not started: only its source is looked at
    try:
        assert loop.source.recorded and loop.source.paced and not loop.source.live
        assert [loop.source.read() is not None for _ in range(5)] == [True] * 5  # past the file's 3 frames: it loops
    finally:
        loop.source.close()


def test_a_new_resource_is_one_module_and_one_registration(session, monkeypatch) -> None:
    """What a newcomer writes: a module with routes(web), its name in RESOURCES; errors answer with their kind's status."""
    import types

    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from lastlayer.errors import NotFoundError
    from lastlayer.serve import app as web_app

    def routes(web):
        async def count(request):
            if request.query_params.get("name") == "nothing":
                raise NotFoundError("there is no class 'nothing'")
            return JSONResponse({"classes": len(web.session.classes())})

        return [Route("/api/count", count, methods=["GET"])]

    monkeypatch.setitem(sys.modules, "lastlayer.serve.routes.count", types.SimpleNamespace(routes=routes))
    monkeypatch.setattr(web_app, "RESOURCES", (*web_app.RESOURCES, "count"))
    app = web_app.create_app(session, None, token="secret", log=lambda line: None)
    try:
        client = TestClient(app, base_url="http://127.0.0.1:8765")
        assert client.get("/api/count").status_code == 401  # the access rules hold for it too
        client.headers["X-Lastlayer-Token"] = "secret"
        assert client.get("/api/count").json() == {"classes": 0}
        answer = client.get("/api/count?name=nothing")
        assert answer.status_code == 404 and answer.json() == {"error": "there is no class 'nothing'"}
        assert client.get("/api/state").status_code == 200  # the others are still there
    finally:
        app.state.feed.stop()
