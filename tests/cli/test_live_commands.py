"""``lastlayer watch`` and ``lastlayer teach`` on generated videos and image folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lastlayer.cli import main
from lastlayer.images.render import write_image_folder, write_video
from lastlayer.teach.session import TeachingSession

from conftest import EXTRACTOR

pytestmark = pytest.mark.shared


@pytest.fixture
def taught_state(model_file, tmp_path):
    from lastlayer.images.render import render_frame

    state = tmp_path / "state"
    with TeachingSession(state, model_file(EXTRACTOR)) as session:
        for kind in ("gear", "washer"):
            session.add_examples(kind, [render_frame(kind, i, seed=5) for i in range(4)])
    return state


def test_watch_json_prints_one_event_per_change_of_top_class(taught_state, tmp_path, capsys):
    pytest.importorskip("cv2")
    video = write_video(tmp_path / "line.mp4", [("gear", 20), ("washer", 20), ("gear", 20)], fps=15)
    # Taught from lossless renders, watched through an MPEG-4 codec: the unknown rule (rightly) finds these frames unlike
    # every example (tests/cli/test_watch_unknown.py has its events); this test is about the changes between classes.
    assert main(["watch", "--state", str(taught_state), "--source", str(video), "--json", "--window", "3", "--no-unknown"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    changes = [e for e in events if e["event"] == "top_changed"]
    assert [e["top"]["label"] for e in changes] == ["gear", "washer", "gear"]
    assert changes[0]["frame"] == 0 and 20 <= changes[1]["frame"] <= 23 and 40 <= changes[2]["frame"] <= 43
    assert all({"time", "frame", "fps", "top_k"} <= e.keys() for e in changes)
    assert events[-1] == {**events[-1], "event": "end", "frames": 60}


def test_watch_every_skips_frames_and_record_saves_one_class(taught_state, tmp_path, capsys):
    frames = tmp_path / "frames"
    write_image_folder(frames, [("gear", 6), ("washer", 6)])
    record = tmp_path / "record"
    assert main(["watch", "--state", str(taught_state), "--source", str(frames), "--every", "2", "--window", "1",
                 "--record", str(record), "--record-class", "washer", "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["frames"] == 6 and events[-1]["recorded"] == 3
    assert sorted(p.name for p in (record / "washer").iterdir()) == ["frame_000006.jpg", "frame_000008.jpg", "frame_000010.jpg"]


def test_watch_a_classifier_file_and_usage_errors(model_file, tmp_path, capsys):
    frames = tmp_path / "frames"
    write_image_folder(frames, [("gear", 2)])
    assert main(["watch", "--model", str(model_file("mobilenet_v1_0.25_128_quant.tflite")), "--source", str(frames), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["frames"] == 2
    with pytest.raises(SystemExit) as usage:
        main(["watch", "--source", str(frames)])
    assert usage.value.code == 2 and "either --model or --state" in capsys.readouterr().err


def test_video_without_opencv_names_the_extra(taught_state, tmp_path, monkeypatch, capsys):
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)  # exists: only OpenCV could say whether it is a video
    monkeypatch.setitem(sys.modules, "cv2", None)
    assert main(["watch", "--state", str(taught_state), "--source", str(tmp_path / "clip.mp4")]) == 1
    err = capsys.readouterr().err.strip()
    assert "pip install opencv-python-headless" in err and err.count("\n") == 0


def test_teach_in_the_terminal_reads_commands_from_stdin(model_file, tmp_path):
    frames = tmp_path / "gears"
    write_image_folder(frames, [("gear", 5)])
    state = tmp_path / "state"
    commands = "n gear\n1\n1\n1\nu\nn nut\nz\ns\nq\n"
    done = subprocess.run([sys.executable, "-m", "lastlayer", "teach", "--source", str(frames), "--loop", "--state", str(state),
                           "--model", str(model_file(EXTRACTOR)), "--json"], input=commands, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    messages = [json.loads(line) for line in done.stdout.splitlines()]
    assert [m["examples"] for m in messages if m.get("event") == "added"] == [1, 2, 3]
    assert any("unknown command 'z'" in m["message"] for m in messages)
    assert (state / "export" / "model.tflite").is_file() and (state / "export" / "labels.txt").read_text() == "0 gear\n"
    with TeachingSession(state) as reopened:
        assert [(c.name, c.examples) for c in reopened.classes()] == [("gear", 2), ("nut", 0)]


def _files(folder):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_watch_opens_a_state_read_only_and_refuses_a_folder_that_is_not_one(taught_state, tmp_path, capsys):
    frames = tmp_path / "frames"
    write_image_folder(frames, [("gear", 2)])
    misspelt = tmp_path / "stat"
    assert main(["watch", "--state", str(misspelt), "--source", str(frames)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no state folder {misspelt}" in err and not misspelt.exists()
    (tmp_path / "other").mkdir()
    assert main(["watch", "--state", str(tmp_path / "other"), "--source", str(frames)]) == 1
    assert "holds no teaching state" in capsys.readouterr().err and list((tmp_path / "other").iterdir()) == []
    before = _files(taught_state)
    assert main(["watch", "--state", str(taught_state), "--source", str(frames), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["top"]["label"] == "gear"
    assert _files(taught_state) == before  # nothing created, nothing modified


def test_the_terminal_says_when_the_state_is_busy_and_goes_on(taught_state, tmp_path):
    from lastlayer.teach.store import BUSY_MESSAGE, DATABASE_NAME
    from teach.test_store import hold_write_lock, release

    frames = tmp_path / "frames"
    write_image_folder(frames, [("gear", 2)])
    holder = hold_write_lock(taught_state / DATABASE_NAME)
    terminal = subprocess.Popen([sys.executable, "-m", "lastlayer", "teach", "--state", str(taught_state), "--source", str(frames),
                                 "--loop", "--json"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "LASTLAYER_BUSY_TIMEOUT": "0.5"})
    try:
        terminal.stdin.write("n nut\n")
        terminal.stdin.flush()
        while "error" not in (refused := json.loads(terminal.stdout.readline())):
            pass
    finally:
        release(holder)
    terminal.stdin.write("n nut\nq\n")
    terminal.stdin.flush()
    lines = [json.loads(line) for line in terminal.stdout.read().splitlines()]
    assert terminal.wait(60) == 0 and refused["error"] == BUSY_MESSAGE
    assert any(m.get("event") == "class" and m["class_name"] == "nut" for m in lines)


def test_the_terminal_says_on_how_many_examples_its_accuracy_was_counted(taught_state, tmp_path):
    frames = tmp_path / "gears"
    write_image_folder(frames, [("gear", 2)])
    done = subprocess.run([sys.executable, "-m", "lastlayer", "teach", "--source", str(frames), "--state", str(taught_state), "--json"],
                          input="e\nq\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    said = next(json.loads(line) for line in done.stdout.splitlines() if json.loads(line).get("event") == "evaluation")
    right = said["right"]
    assert right["of"] == 8 and 0 <= right["interval"][0] <= right["value"] <= right["interval"][1] <= 1
    assert said["message"].startswith(f"leave-one-out {right['count']} / 8 right, 95 % interval ")
    for name in ("gear", "washer"):
        assert f"{name} {said['per_class_right'][name]['count']}/4" in said["message"]
