"""``lastlayer watch`` with an unknown rule: "unknown" as a change of the answer (from a state and from a model file),
the override and the off switch, and ``--record-uncertain``.

The scenes are rendered: gears and washers are taught; a nut (never taught) is what the rule must call unknown.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from lastlayer.cli import main
from lastlayer.images.render import render_frame, write_image_folder
from lastlayer.teach.session import TeachingSession

from conftest import EXTRACTOR

pytestmark = pytest.mark.shared
SEGMENTS = [("gear", 6), ("nut", 6), ("washer", 6)]


@pytest.fixture(scope="module")
def scene(model_file, tmp_path_factory):
    """A state taught gears and washers, a folder showing gear, nut, washer, and the model the state exports."""
    root = tmp_path_factory.mktemp("watch_unknown")
    with TeachingSession(root / "state", model_file(EXTRACTOR)) as session:
        for kind in ("gear", "washer"):
            session.add_examples(kind, [render_frame(kind, 100 + i) for i in range(4)])
        rule = session.unknown_rule()
        model, _ = session.export(root / "export")
        frames = write_image_folder(root / "frames", SEGMENTS)
        predicted = [session.predict(path) for path in frames]
    return {"root": root, "state": root / "state", "model": model, "frames": root / "frames", "paths": frames, "rule": rule,
            "similarity": np.array([p.similarity for p in predicted]), "closest": [p.top[0] for p in predicted]}


def _changes(capsys, *args):
    assert main(["watch", *args, "--json", "--window", "1"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [e for e in events if e["event"] == "top_changed"], events


def _expected(scene, threshold):
    """The answers an independent reading of the similarities gives, and where they change."""
    answers = ["unknown" if s < threshold else closest for s, closest in zip(scene["similarity"], scene["closest"])]
    return [a for i, a in enumerate(answers) if i == 0 or a != answers[i - 1]]


@pytest.mark.parametrize("source", ["state", "model"])
def test_unknown_is_a_change_of_the_answer(scene, capsys, source):
    threshold = scene["rule"]["threshold"]
    assert scene["similarity"][6:12].max() < threshold <= min(scene["similarity"][:6].min(), scene["similarity"][12:].min())
    changes, events = _changes(capsys, f"--{source}", str(scene[source]), "--source", str(scene["frames"]))
    assert [c["top"]["label"] for c in changes] == ["gear", "unknown", "washer"] == _expected(scene, threshold)
    assert scene["closest"] == ["gear"] * 6 + scene["closest"][6:12] + ["washer"] * 6
    assert [c["previous"] for c in changes] == [None, "gear", "unknown"] and changes[1]["frame"] == 6
    unknown = changes[1]
    assert unknown["unknown"] is True and unknown["closest"]["label"] in ("gear", "washer")
    assert unknown["similarity"] == pytest.approx(scene["similarity"][6], abs=2e-3)
    assert changes[0]["unknown"] is False and changes[2]["unknown"] is False and events[-1]["frames"] == 18


@pytest.mark.parametrize("source", ["state", "model"])
def test_the_override_and_the_off_switch(scene, capsys, source):
    where = [f"--{source}", str(scene[source]), "--source", str(scene["frames"])]
    off, _ = _changes(capsys, *where, "--no-unknown")
    assert [c["top"]["label"] for c in off] == _expected(scene, -np.inf) and all(c["unknown"] is None for c in off)
    assert "unknown" not in [c["top"]["label"] for c in off]
    everything, _ = _changes(capsys, *where, "--unknown-threshold", "0.999")
    assert [c["top"]["label"] for c in everything] == ["unknown"]
    middle = float(np.sort(scene["similarity"][:6])[2]) + 1e-4  # three gear frames fall below it
    moved, _ = _changes(capsys, *where, "--unknown-threshold", str(middle))
    assert [c["top"]["label"] for c in moved] == _expected(scene, middle) and moved[0]["similarity"] is not None


def test_text_says_unknown_with_the_closest_class(scene, capsys):
    assert main(["watch", "--state", str(scene["state"]), "--source", str(scene["frames"]), "--window", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("frame 0: gear ") and lines[1].startswith("frame 6: unknown (closest: ")
    assert lines[2].startswith("frame 12: washer ")


def test_record_uncertain_saves_each_sight_once(scene, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    paths = scene["paths"]
    for index, path in enumerate(paths[:3] + [paths[6]] * 4 + paths[12:14]):  # the same nut picture four times
        shutil.copy(path, frames / f"frame_{index:05d}.png")
    out = tmp_path / "uncertain"
    changes, events = _changes(capsys, "--state", str(scene["state"]), "--source", str(frames), "--record-uncertain", str(out))
    saved = [e for e in events if e["event"] == "uncertain"]
    assert [(e["frame"], e["reason"]) for e in saved] == [(3, "unknown")] and events[-1]["uncertain_recorded"] == 1
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == ["unknown/frame_000003.jpg"]
    assert Image.open(out / "unknown" / "frame_000003.jpg").size == Image.open(paths[6]).size
    assert saved[0]["path"] == str(out / "unknown" / "frame_000003.jpg") and saved[0]["closest"]["label"] in ("gear", "washer")
    assert main(["watch", "--state", str(scene["state"]), "--source", str(frames), "--record-uncertain", str(tmp_path / "t")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"saved 1 uncertain frame(s) into {tmp_path / 't'}"
