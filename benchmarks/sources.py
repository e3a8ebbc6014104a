"""Frame sources: decode rate of generated 320x240 videos and image folders, and resize_array's cost.

Writes synthetic clips (lastlayer.images.render) into a temporary folder: .mp4 (mp4v) and .avi
(MJPG) of 100 and 300 frames, and folders of PNG and JPEG frames; prints frames/s for plain reads
and with prefetch (for clip_100.avi also with 5 ms of simulated inference per frame), then the
time to resize one 320x240 frame to 224x224 (resize_array against the file path's resize_image).
Needs OpenCV for the videos (pip install opencv-python-headless).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lastlayer.images.decode import resize_array, resize_image
from lastlayer.images.render import write_image_folder, write_video
from lastlayer.sources import open_source

KINDS = ("gear", "washer", "bracket", "nut")


def segments(frames: int) -> list[tuple[str, int]]:
    return [(KINDS[i % len(KINDS)], frames // len(KINDS)) for i in range(len(KINDS))]


def frames_per_second(spec: str | Path, repeats: int = 3, work: float = 0.0, **options: int) -> float:
    """Best of ``repeats`` full reads of ``spec``; ``work`` s per frame simulates inference (GIL released)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        count = 0
        with open_source(spec, **options) as source:
            for _ in source:
                count += 1
                if work:
                    time.sleep(work)
        best = min(best, time.perf_counter() - start)
    return count / best


def best_ms(function, repeats: int = 5, number: int = 200) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            function()
        times.append((time.perf_counter() - start) / number)
    return min(times) * 1e3


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for count in (100, 300):
            for suffix in (".mp4", ".avi"):
                video = write_video(folder / f"clip_{count}{suffix}", segments(count))
                size_kb = video.stat().st_size / 1024
                plain, ahead = frames_per_second(video), frames_per_second(video, prefetch=4)
                print(f"{video.name:14} {count:4d} frames {size_kb:7.0f} KiB  decode {plain:7.0f} frames/s   prefetch=4 {ahead:7.0f} frames/s")
            if count == 100:
                busy, busy_ahead = frames_per_second(video, work=0.005), frames_per_second(video, work=0.005, prefetch=4)
                print(f"{video.name:14} with 5 ms of inference per frame: {busy:5.0f} frames/s, prefetch=4 {busy_ahead:5.0f} frames/s")
        for extension in (".png", ".jpg"):
            frames = folder / f"frames{extension}"
            write_image_folder(frames, segments(100), extension=extension)
            print(f"folder of 100 {extension} frames       read {frames_per_second(frames):7.0f} frames/s   "
                  f"prefetch=4 {frames_per_second(frames, prefetch=4):7.0f} frames/s")
    pixels = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert np.array_equal(resize_array(pixels, (224, 224)), resize_image(Image.fromarray(pixels), (224, 224)))
    print(f"resize_array 320x240 -> 224x224: {best_ms(lambda: resize_array(pixels, (224, 224))):.3f} ms "
          f"(resize_image(Image.fromarray(...)): {best_ms(lambda: resize_image(Image.fromarray(pixels), (224, 224))):.3f} ms)")
    large = np.random.default_rng(1).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    print(f"resize_array 1280x720 -> 224x224: {best_ms(lambda: resize_array(large, (224, 224)), number=20):.3f} ms")


if __name__ == "__main__":
    main()
