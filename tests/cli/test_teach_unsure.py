"""The terminal's keys for the frames the live loop was unsure about: ``l`` lists them, ``x`` dismisses one,
``t`` teaches one to a class (a new one here), with the embedding its prediction computed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any, Callable

import pytest

from lastlayer.images.render import render_frame, write_image_folder
from lastlayer.teach.session import TeachingSession
from serve.webtools import Lines

from conftest import EXTRACTOR

pytestmark = pytest.mark.shared


class Terminal:
    """Commands written to the terminal's stdin; its JSON lines waited for with a timeout."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process, self.lines = process, Lines(process)

    def send(self, command: str) -> None:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def until(self, wanted: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        return json.loads(self.lines.wait_for(lambda line: wanted(json.loads(line)), 60, what))


def _unsure_listed(lines: Terminal) -> list[dict[str, Any]]:
    """``l`` until the list holds a frame (the live loop keeps nuts, which nobody taught, as unsure)."""
    for _ in range(60):
        lines.send("l")
        listed = lines.until(lambda m: m.get("event") == "uncertain", "the list of unsure frames")
        if listed["frames"]:
            return listed["frames"]
        time.sleep(0.5)
    pytest.fail("no unsure frame was listed")


def test_unsure_frames_are_listed_dismissed_and_taught_from_the_terminal(model_file, tmp_path):
    state = tmp_path / "state"
    with TeachingSession(state, model_file(EXTRACTOR)) as session:
        for kind in ("gear", "washer"):
            session.add_examples(kind, [render_frame(kind, i, seed=5) for i in range(8)])
    nuts = tmp_path / "nuts"
    write_image_folder(nuts, [("nut", 4)])
    process = subprocess.Popen([sys.executable, "-m", "lastlayer", "teach", "--state", str(state), "--source", str(nuts),
                                "--loop", "--fps", "20", "--json"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines = Terminal(process)
    try:
        first = _unsure_listed(lines)[0]
        assert first["reason"] in ("unknown", "tied") and first["teachable"]
        lines.send(f"x {first['id']}")
        assert lines.until(lambda m: m.get("event") == "dismissed", "the dismissal")["frame"] == first["id"]
        again = _unsure_listed(lines)[0]  # the nuts go on coming: kept again, as a new item
        assert again["id"] != first["id"]
        lines.send("x 999999")
        assert "no unsure frame '999999'" in lines.until(lambda m: "no unsure frame" in m.get("message", ""), "the refusal")["message"]
        lines.send(f"t {again['id']} nut")
        taught = lines.until(lambda m: m.get("event") == "added", "the frame taught")
        assert taught["class_name"] == "nut" and taught["examples"] == 1
        lines.send("q")
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with TeachingSession(state, read_only=True) as session:
        nut = next(c for c in session.classes() if c.name == "nut")
        assert nut.examples == 1  # stored: found by another process
