"""Frame sources (files, folders, cameras, streams, background readers) and the registry of kinds.

Every video and image folder is generated in tmp_path; streams come from a local MJPEG server.
"""

from __future__ import annotations

import io
import itertools
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from lastlayer.errors import LastLayerError
from lastlayer.images.render import render_frame, write_image_folder, write_video
from lastlayer.sources import (
    MISSING_OPENCV,
    CameraSource,
    Frame,
    FrameSource,
    ImageFolderSource,
    LatestFrameReader,
    PrefetchReader,
    SourceError,
    SourceWarning,
    classify_spec,
    open_source,
    redact,
)


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


@pytest.fixture()
def cv2():
    return pytest.importorskip("cv2")


# --- video files ---------------------------------------------------------------------------------


def test_video_file_frames_count_order_and_timestamps(tmp_path, cv2):
    video = write_video(tmp_path / "parts.mp4", [("gear", 4), ("washer", 3)], fps=15)
    with open_source(video) as source:
        frames = list(source)
        assert source.fps == pytest.approx(15)
    assert [f.index for f in frames] == list(range(7))
    assert all(f.pixels.shape == (240, 320, 3) and f.pixels.dtype == np.uint8 for f in frames)
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(7) / 15, atol=1e-3)
    assert source.closed and source.read() is None


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_video_frames_are_rgb(tmp_path, cv2, suffix):
    video = write_video(tmp_path / f"red{suffix}", [("red", 3)], size=(64, 48))
    frames = list(open_source(video))
    assert len(frames) == 3
    red, green, blue = (frames[1].pixels[..., c].mean() for c in range(3))
    assert red > 200 and green < 60 and blue < 60


def test_video_loop_keeps_counting(tmp_path, cv2):
    video = write_video(tmp_path / "loop.avi", [("nut", 4)], fps=10, size=(64, 48))
    with open_source(video, loop=True) as source:
        frames = list(itertools.islice(source, 10))
    assert [f.index for f in frames] == list(range(10))
    assert all(b.timestamp > a.timestamp for a, b in zip(frames, frames[1:]))
    np.testing.assert_array_equal(frames[0].pixels, frames[4].pixels)  # the same decoded frame, one loop later


def test_realtime_paces_frames_and_default_does_not(tmp_path, cv2):
    video = write_video(tmp_path / "paced.avi", [("gear", 6)], fps=20, size=(64, 48))
    start = time.monotonic()
    assert len(list(open_source(video, realtime=True))) == 6
    paced = time.monotonic() - start
    assert paced >= 0.5 * 5 / 20  # generous: frame 5 is due 0.25 s after frame 0
    assert len(list(open_source(video, fps=100))) == 6  # an explicit fps paces too (0.05 s here)


def test_sources_say_whether_they_are_paced(tmp_path, cv2):
    video = write_video(tmp_path / "paced.avi", [("gear", 3)], size=(64, 48))
    write_image_folder(tmp_path / "frames", [("gear", 2)])
    with open_source(video) as fast, open_source(video, realtime=True) as paced, \
            open_source(video, fps=10, prefetch=2) as prefetched, open_source(tmp_path / "frames") as folder, \
            open_source(tmp_path / "frames", fps=5) as timed:
        assert [s.paced for s in (fast, paced, prefetched, folder, timed)] == [False, True, True, False, True]
        assert all(s.recorded and not s.live for s in (fast, paced, prefetched, folder, timed))


def test_live_sources_say_they_are_live_through_their_readers(tmp_path, cv2):
    video = write_video(tmp_path / "cam.avi", [("gear", 3)], size=(64, 48))  # a camera by path: stands in for a device
    with CameraSource(str(video)) as camera:
        assert camera.live and camera.paced and not camera.recorded
    with open_source(video, latest=True) as latest, LatestFrameReader(CameraSource(str(video))) as live:
        assert (latest.recorded, latest.live) == (True, False) and (live.recorded, live.live) == (False, True)


def test_loop_and_realtime_apply_to_recorded_sources_only(tmp_path, cv2):
    """What the web server relies on: it passes them for every spec without asking which kind it is."""
    video = write_video(tmp_path / "cam.avi", [("gear", 3)], size=(64, 48))
    with CameraSource(str(video)) as camera:
        assert not camera.paced or camera.live
    with open_source(video, loop=True, realtime=True, fps=200) as replayed:
        assert replayed.paced and len(list(itertools.islice(replayed, 7))) == 7  # 3 frames, looped


class CountKind(FrameSource):
    """A new kind of source: ``count://N`` gives N black frames (what a newcomer writes, plus one registration)."""

    recorded = True

    def __init__(self, count: int) -> None:
        super().__init__(f"count://{count}")
        self.count, self.index = count, 0

    @classmethod
    def claim(cls, spec):
        return int(spec[len("count://"):]) if isinstance(spec, str) and spec.startswith("count://") else None

    @classmethod
    def from_options(cls, target, options):
        return cls(target * (2 if options.loop else 1))

    def read(self):
        if self.closed or self.index >= self.count:
            return None
        self.index += 1
        return Frame(np.zeros((4, 4, 3), np.uint8), self.index - 1, float(self.index - 1))


def test_a_new_kind_is_one_class_and_one_registration(monkeypatch):
    from lastlayer.sources import registry

    with pytest.raises(SourceError, match="unsupported URL scheme count://"):
        open_source("count://3")
    monkeypatch.setattr(registry, "KINDS", list(registry.KINDS))
    registry.register_source(registry.SourceKind("count", f"{__name__}:CountKind"))
    assert classify_spec("count://3") == ("count", 3)
    assert [f.index for f in open_source("count://3", loop=True)] == list(range(6))  # the options reach it
    with open_source("count://2", prefetch=2) as prefetched:
        assert prefetched.recorded and len(list(prefetched)) == 2
    with pytest.raises(ValueError, match="already registered"):
        registry.register_source(registry.SourceKind("count", f"{__name__}:CountKind"))


def test_prefetch_gives_the_same_frames(tmp_path, cv2):
    video = write_video(tmp_path / "p.avi", [("gear", 5), ("bracket", 5)], size=(96, 64))
    plain = list(open_source(video))
    with open_source(video, prefetch=3) as source:
        assert isinstance(source, PrefetchReader)
        fetched = list(source)
    assert [f.index for f in fetched] == [f.index for f in plain]
    for a, b in zip(plain, fetched):
        np.testing.assert_array_equal(a.pixels, b.pixels)
    assert not source._thread.is_alive() and source.source.closed


def test_file_errors_are_one_line_and_name_the_source(tmp_path, cv2):
    with pytest.raises(SourceError) as missing:
        open_source(tmp_path / "nope.mp4")
    assert "nope.mp4" in one_line(missing) and "does not exist" in str(missing.value)
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    with pytest.raises(SourceError) as not_video:
        open_source(fake)
    assert "notes.mp4" in one_line(not_video)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(SourceError) as empty_error:
        open_source(empty)
    assert "empty.avi" in one_line(empty_error)


# --- image folders -------------------------------------------------------------------------------


def test_folder_and_glob_sources(tmp_path):
    paths = write_image_folder(tmp_path / "frames", [("gear", 3), ("red", 2)], size=(64, 48))
    (tmp_path / "frames" / "notes.txt").write_text("not a frame")
    (tmp_path / "frames" / ".hidden.png").write_bytes(b"")
    with open_source(tmp_path / "frames") as source:
        frames = list(source)
    assert [f.path for f in frames] == [str(p) for p in paths]
    assert [f.index for f in frames] == list(range(5))
    assert frames[4].pixels[0, 0].tolist() == [255, 0, 0]  # PNG is lossless, RGB order
    np.testing.assert_array_equal(frames[0].pixels, render_frame("gear", 0, size=(64, 48)))
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(5) / 30)
    globbed = list(open_source(str(tmp_path / "frames" / "frame_0000[1-3].png"), fps=1000))
    assert [Path(f.path).name for f in globbed] == ["frame_00001.png", "frame_00002.png", "frame_00003.png"]
    np.testing.assert_allclose([f.timestamp for f in globbed], np.arange(3) / 1000)
    looped = list(itertools.islice(open_source(str(tmp_path / "frames" / "*.png"), loop=True), 12))
    assert [Path(f.path).name for f in looped][5:7] == ["frame_00000.png", "frame_00001.png"]
    assert len(list(open_source(paths[0]))) == 1  # one image is a one-frame source


def test_folder_natural_order_and_unreadable_frames(tmp_path):
    for name in ("f10.png", "f2.png", "f1.png"):
        Image.new("RGB", (8, 8), (int(name[1:-4]), 0, 0)).save(tmp_path / name)
    (tmp_path / "f3.png").write_bytes(b"broken")
    with pytest.warns(SourceWarning, match="f3.png"):
        frames = list(ImageFolderSource(tmp_path))
    assert [int(f.pixels[0, 0, 0]) for f in frames] == [1, 2, 10]


def test_folder_errors(tmp_path):
    with pytest.raises(SourceError) as empty:
        open_source(tmp_path)
    assert str(tmp_path) in one_line(empty) and "no images" in str(empty.value)
    with pytest.raises(SourceError) as no_match:
        open_source(str(tmp_path / "*.jpg"))
    assert "*.jpg" in one_line(no_match)
    (tmp_path / "bad.png").write_bytes(b"broken")
    with pytest.warns(SourceWarning), pytest.raises(SourceError) as unreadable:
        list(open_source(tmp_path))
    assert "could be read" in one_line(unreadable)


# --- specs and OpenCV availability ---------------------------------------------------------------


def test_spec_kinds(tmp_path):
    (tmp_path / "v.mkv").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    assert classify_spec(0) == ("camera", 0)
    assert classify_spec(" 2 ") == ("camera", 2)
    assert classify_spec("/dev/video0") == ("camera", "/dev/video0")
    assert classify_spec("rtsp://cam.local/stream")[0] == "stream"
    assert classify_spec("HTTPS://cam.local/mjpg")[0] == "stream"
    assert classify_spec(tmp_path / "v.mkv") == ("video", str(tmp_path / "v.mkv"))
    assert classify_spec(f"file://{tmp_path}/v.mkv") == ("video", f"{tmp_path}/v.mkv")
    assert classify_spec(tmp_path)[0] == "images"
    assert classify_spec(tmp_path / "a.png")[0] == "images"
    assert classify_spec(f"{tmp_path}/*.jpg")[0] == "images"
    for bad in ("ftp://host/x", "", -1, True, 1.5):
        with pytest.raises(SourceError):
            classify_spec(bad)
    assert redact("rtsp://admin:secret@10.0.0.5:554/live") == "rtsp://admin:***@10.0.0.5:554/live"
    with pytest.raises(SourceError, match="fps must be positive"):
        open_source(tmp_path, fps=0)


def test_without_opencv_video_explains_the_extra_and_folders_still_work(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "frames", [("washer", 2)], size=(32, 24))
    (tmp_path / "clip.mp4").write_bytes(b"not decoded anyway")
    monkeypatch.setitem(sys.modules, "cv2", None)
    for spec in (tmp_path / "clip.mp4", 0, "rtsp://127.0.0.1:9/x"):
        with pytest.raises(SourceError) as info:
            open_source(spec)
        assert MISSING_OPENCV in one_line(info) and "pip install opencv-python-headless" in str(info.value)
    assert len(list(open_source(tmp_path / "frames"))) == 2


# --- cameras -------------------------------------------------------------------------------------


def test_missing_camera_is_a_clear_error(cv2):
    with pytest.raises(SourceError) as index:
        open_source(99)
    assert "camera 99" in one_line(index)
    with pytest.raises(SourceError) as device:
        open_source("/dev/video99")
    assert "/dev/video99" in one_line(device)


def test_camera_that_stops_delivering_is_a_clear_error(tmp_path, cv2):
    video = write_video(tmp_path / "cam.avi", [("gear", 3)], size=(64, 48))  # stands in for a device that unplugs
    with CameraSource(str(video), stall_timeout=5) as camera:
        assert camera.read().index == 0
        with pytest.raises(SourceError) as info:
            list(camera)
    assert f"camera {video} stopped delivering frames after frame 3" in one_line(info) and "reconnect=True" in str(info.value)


# --- network streams -----------------------------------------------------------------------------


class MjpegServer:
    """A local multipart/x-mixed-replace server: ``/drop/N`` sends N frames and hangs up, ``/stall/N`` goes silent."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.connections = 0
        buffer = io.BytesIO()
        Image.fromarray(render_frame("gear", 0, size=(80, 60))).save(buffer, "JPEG")
        self.jpeg = buffer.getvalue()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.connections += 1
                _, mode, count = self.path.split("/")
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for _ in range(int(count)):
                        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(server.jpeg)
                        self.wfile.write(head + server.jpeg + b"\r\n")
                        self.wfile.flush()
                        time.sleep(0.01)
                    if mode == "stall":
                        server.stop.wait(30)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def mjpeg(cv2) -> Iterator[MjpegServer]:
    server = MjpegServer()
    yield server
    server.close()


def test_stream_reconnects_after_a_drop(mjpeg):
    reconnecting = r"after frame \d+ .*reconnecting in 0\.02 s \(attempt 1/3\)"
    with pytest.warns(SourceWarning, match=reconnecting), \
            open_source(mjpeg.url("/drop/8"), max_retries=3, retry_delay=0.02, stall_timeout=5) as source:
        frames = list(itertools.islice(source, 20))
    assert [f.index for f in frames] == list(range(20))
    assert frames[0].pixels.shape == (60, 80, 3) and frames[0].pixels[..., 0].mean() > frames[0].pixels[..., 2].mean()
    assert source.reconnects >= 2 and mjpeg.connections >= 3
    assert all(b.timestamp >= a.timestamp for a, b in zip(frames, frames[1:]))


def test_stream_without_retries_fails_clearly(mjpeg):
    with open_source(mjpeg.url("/drop/5"), max_retries=0, stall_timeout=5) as source, pytest.raises(SourceError) as info:
        for _ in source:
            pass
    assert "stopped delivering frames" in one_line(info) and "127.0.0.1" in str(info.value)


def test_stream_gives_up_after_max_retries(mjpeg):
    source = open_source(mjpeg.url("/drop/3"), max_retries=2, retry_delay=0.01, stall_timeout=5)
    mjpeg.httpd.shutdown()  # nothing accepts the reconnects
    mjpeg.httpd.server_close()
    with pytest.warns(SourceWarning), pytest.raises(SourceError) as info:
        list(source)
    assert "could not reconnect in 2 attempts" in one_line(info)
    source.close()


def test_stream_stall_timeout(mjpeg):
    with open_source(mjpeg.url("/stall/3"), stall_timeout=0.5) as source:
        assert len([source.read() for _ in range(3)]) == 3
        start = time.monotonic()
        with pytest.raises(SourceError) as info:
            source.read()
    assert "no frame from" in one_line(info) and "for 0.5 s" in str(info.value)
    assert time.monotonic() - start < 5  # the watchdog fired, not FFmpeg's own 30 s timeout


def test_unreachable_stream_fails_at_once(cv2):
    with pytest.raises(SourceError) as info:
        open_source("http://127.0.0.1:9/video.mjpg", stall_timeout=2)
    assert "cannot open stream" in one_line(info)


# --- background readers --------------------------------------------------------------------------


class CountingSource(FrameSource):
    """Frames 0, 1, 2... every ``period`` s; raises ``error`` after ``fail_after`` frames."""

    live = True

    def __init__(self, period: float = 0.002, limit: int = 10_000, fail_after: int | None = None,
                 error: BaseException | None = None) -> None:
        super().__init__("counting")
        self.period, self.limit, self.fail_after, self.error = period, limit, fail_after, error
        self.count = 0

    def read(self) -> Frame | None:
        if self.closed or self.count >= self.limit:
            return None
        if self.fail_after is not None and self.count >= self.fail_after:
            raise self.error or RuntimeError("sensor on fire")
        time.sleep(self.period)
        self.count += 1
        return Frame(np.zeros((2, 2, 3), np.uint8), self.count - 1, time.monotonic())


def test_latest_frame_reader_drops_stale_frames():
    source = CountingSource()
    with LatestFrameReader(source) as reader:
        seen = []
        for frame in reader:
            seen.append(frame.index)
            time.sleep(0.03)  # "inference"
            if len(seen) == 5:
                break
        assert all(b > a + 1 for a, b in zip(seen, seen[1:]))  # frames captured meanwhile were skipped
        assert reader.dropped > 0 and reader.captured >= seen[-1] + 1
    assert not reader._thread.is_alive() and source.closed
    assert reader.read() is None


def test_latest_frame_reader_ends_with_its_source():
    with LatestFrameReader(CountingSource(limit=3, period=0.0)) as reader:
        frames = list(reader)
    assert 1 <= len(frames) <= 3 and frames[-1].index == 2


def test_background_readers_raise_the_thread_error():
    reader = LatestFrameReader(CountingSource(fail_after=3))
    with pytest.raises(SourceError, match="capturing from counting failed: RuntimeError: sensor on fire"):
        for _ in range(100):
            reader.read()
    reader.close()
    own = SourceError("no frame from counting for 1 s; check the cable/stream")
    with PrefetchReader(CountingSource(fail_after=4, error=own), depth=2) as prefetch:
        assert [prefetch.read().index for _ in range(4)] == [0, 1, 2, 3]  # frames before the error still arrive
        with pytest.raises(SourceError) as info:
            prefetch.read()
    assert info.value is own and isinstance(info.value, LastLayerError)


def test_prefetch_close_stops_the_thread_midway():
    source = CountingSource(period=0.0)
    reader = PrefetchReader(source, depth=3)
    assert reader.read().index == 0
    reader.close()
    assert not reader._thread.is_alive() and source.closed and reader.read() is None
