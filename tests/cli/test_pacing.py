"""Honest pacing: ``--max-fps`` on a file counts frames per second of the file's own time; ``teach`` plays files and
folders at their rate (a folder's stated with ``--fps``), as fast as they decode only with ``--fast``."""

from __future__ import annotations

import io
import json
import sys

import pytest

import lastlayer.sources as sources
from lastlayer.cli import main
from lastlayer.images.render import write_image_folder, write_video
from lastlayer.sources.files import playback_options

from conftest import EXTRACTOR

pytestmark = pytest.mark.shared
SMALL = "mobilenet_v1_0.25_128_quant.tflite"


def test_max_fps_on_a_video_is_frames_per_second_of_video_time(model_file, tmp_path, capsys):
    pytest.importorskip("cv2")
    clip = write_video(tmp_path / "ten-seconds.avi", [("gear", 75), ("washer", 75)], fps=15, size=(64, 48))  # 10 s
    argv = ["watch", "--model", str(model_file(SMALL)), "--source", str(clip), "--json"]
    assert main(argv + ["--max-fps", "5"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["frames"] == 50  # 5 per second of video, the rest skipped
    assert main(argv + ["--max-fps", "30"]) == 0  # above the file's rate: every frame
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["frames"] == 150
    assert main(argv + ["--max-fps", "5", "--every", "2"]) == 0  # every 2nd frame (7.5/s), then 5/s of those
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["frames"] == 50


def test_max_fps_on_an_image_folder_uses_its_timestamps(model_file, tmp_path, capsys):
    frames = tmp_path / "frames"
    write_image_folder(frames, [("gear", 60)])  # 2 s at the default 30 images/s of a folder
    assert main(["watch", "--model", str(model_file(SMALL)), "--source", str(frames), "--max-fps", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["frames"] == 8


def test_playback_options_for_a_person_watching(tmp_path):
    pytest.importorskip("cv2")
    clip = write_video(tmp_path / "clip.avi", [("gear", 3)], fps=12, size=(64, 48))
    folder = tmp_path / "frames"
    write_image_folder(folder, [("gear", 2)])
    assert playback_options(folder, folder_fps=2) == {"realtime": True, "fps": 2}
    assert playback_options(folder, fps=5, folder_fps=2) == {"realtime": True, "fps": 5}
    assert playback_options(clip, folder_fps=2) == {"realtime": True}  # a video keeps its own rate
    assert playback_options(clip, fast=True) == {"realtime": False}
    with sources.open_source(folder, **playback_options(folder, folder_fps=2)) as paced, \
            sources.open_source(clip, **playback_options(clip)) as video, sources.open_source(clip, realtime=False) as fast:
        assert (paced.paced, paced.fps, video.paced, video.fps, fast.paced) == (True, 2, True, 12, False)


@pytest.mark.parametrize(("extra", "expected"), [([], {"realtime": True, "fps": 2.0}), (["--fps", "7"], {"realtime": True, "fps": 7.0}),
                                                 (["--fast"], {"realtime": False})])
def test_teach_plays_a_folder_at_its_stated_rate(extra, expected, model_file, tmp_path, monkeypatch, capsys):
    frames = tmp_path / "frames"
    write_image_folder(frames, [("gear", 3)])
    opened = []
    real = sources.open_source
    monkeypatch.setattr(sources, "open_source", lambda spec, **options: opened.append(options) or real(spec, **options))
    monkeypatch.setattr(sys, "stdin", io.StringIO("q\n"))
    state = tmp_path / "state"
    assert main(["teach", "--state", str(state), "--source", str(frames), "--model", str(model_file(EXTRACTOR)), "--json", *extra]) == 0
    assert opened == [{"loop": False, "latest": True, **expected}]
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "end"


def test_teach_with_a_missing_source_creates_no_state(model_file, tmp_path, capsys):
    assert main(["teach", "--state", str(tmp_path / "state"), "--source", str(tmp_path / "nosuch.mp4")]) == 1
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "state").exists()
