"""A classifier's own classes on the web: the page says which model the state started from, offers to keep its
classes while the state holds no class, shows them as one card (never one card each), and the API ranks them
with the new classes, refuses to teach them, reports on them and downloads them bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from lastlayer.images.decode import load_image
from lastlayer.images.render import render_frame
from lastlayer.model.file import ModelFile
from lastlayer.runtime.predictor import ModelPredictor
from model.test_keep import _class_layer
from serve.webtools import png

from conftest import CLASSIFIER_V2, MODELS, need

OWN = 1001
pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def classifier() -> Path:
    return need(MODELS / CLASSIFIER_V2)


@pytest.fixture(scope="module")
def cat(images_dir: Path, classifier: Path) -> tuple[bytes, str, int]:
    """cat.bmp as a PNG upload, and the classifier's own top-1 for it (label, class id)."""
    pixels = np.asarray(load_image(images_dir / "cat.bmp"))
    top = ModelPredictor(classifier).predict(pixels, top_k=1)
    return png(pixels), top.top[0], top.class_ids[0]


@pytest.fixture
def session(classifier: Path, tmp_path: Path) -> Iterator[Any]:
    """(For make_client:) a state started on the classifier, its classes not kept yet."""
    from lastlayer.teach.session import TeachingSession

    with TeachingSession(tmp_path / "state", classifier) as opened:
        yield opened


def _upload(client, class_id: int, *images: bytes):
    return client.post(f"/api/classes/{class_id}/examples", files=[("files", (f"p{i}.png", data, "image/png"))
                                                                    for i, data in enumerate(images)])


def test_the_page_keeps_a_classifiers_classes_and_the_api_ranks_them(make_client, classifier, cat) -> None:
    client = make_client(live=False)
    picture, label, class_id = cat
    state = client.get("/api/state").json()
    assert state["origin"] == {"model": CLASSIFIER_V2, "kind": "classifier", "classes": OWN, "kept": False, "can_keep": True}
    assert client.post("/api/predict", content=picture).json()["top"] is None  # not kept: nothing taught yet
    assert client.get("/api/origin").json()["labels"] == []
    assert client.post("/api/origin", json={"keep_classes": "yes"}).status_code == 400

    kept = client.post("/api/origin", json={"keep_classes": True})
    assert kept.status_code == 200 and kept.json()["kept"] and not kept.json()["can_keep"]
    names = client.get("/api/origin").json()["labels"]
    assert len(names) == OWN and names[class_id] == label
    state = client.get("/api/state").json()
    assert state["classes"] == [] and state["origin"]["kept"]  # the own classes are not listed one by one
    predicted = client.post("/api/predict", content=picture).json()
    assert predicted["top"]["label"] == label and predicted["top_k"][0]["class_id"] == class_id

    gear = client.post("/api/classes", json={"name": "gear"}).json()["class"]["id"]
    assert gear >= OWN
    assert _upload(client, gear, *[png(render_frame("gear", i)) for i in range(4)]).status_code == 201
    refused = _upload(client, class_id, png(render_frame("gear", 9)))
    assert refused.status_code == 409 and "came with the model" in refused.json()["error"]
    assert client.patch(f"/api/classes/{class_id}", json={"name": "kitty"}).status_code == 409
    assert client.delete(f"/api/classes/{class_id}").status_code == 409
    assert client.post("/api/classes", json={"name": label}).status_code == 409
    assert client.post("/api/origin", json={"keep_classes": False}).status_code == 409
    assert client.post("/api/predict", content=png(render_frame("gear", 40))).json()["top"]["label"] == "gear"
    assert client.post("/api/predict", content=picture).json()["top"]["label"] == label

    evaluation = client.get("/api/evaluation").json()
    assert evaluation["labels"] == ["gear"] and evaluation["kept"]["shots_total"] == 4
    assert evaluation["kept"]["shots"][0]["label"] == "gear"
    finetune = client.post("/api/finetune", json={})
    assert finetune.status_code == 400 and "not fine-tuned" in finetune.json()["error"]
    model = client.get("/api/export/model.tflite")
    labels = client.get("/api/export/labels.txt").text.splitlines()
    assert _class_layer(ModelFile.from_bytes(model.content, "download")) == _class_layer(ModelFile.read(classifier))
    assert len(labels) == OWN + 1 and labels[class_id] == f"{class_id} {label}" and labels[-1] == f"{OWN} gear"


def test_an_extractor_has_no_classes_to_keep(extractor, tmp_path) -> None:
    from starlette.testclient import TestClient

    from lastlayer.serve.app import create_app
    from lastlayer.teach.session import TeachingSession

    with TeachingSession(tmp_path / "state", extractor) as session:
        app = create_app(session, log=lambda _: None)
        try:
            client = TestClient(app, base_url="http://127.0.0.1:8765")
            client.headers["X-Lastlayer-Token"] = "-"
            assert client.get("/api/state").json()["origin"]["kind"] == "extractor"
            refused = client.post("/api/origin", json={"keep_classes": True})
            assert refused.status_code == 400 and "no classes to keep" in refused.json()["error"]
        finally:
            app.state.feed.stop()
