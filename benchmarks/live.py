"""The live loop's speed, as ratios against the bare invoke time measured in the same run.

1. End to end: a 320x240 video decoded, resized, embedded and classified by a TeachingSession's
   head (capture and decoding overlap inference) vs. invoke alone on pre-decoded, pre-resized frames.
2. Teach -> next prediction: "add this frame to class X" (embedding + durable commit + row update)
   until the next prediction that uses it returns, vs. one bare invoke.

Run: ``python benchmarks/live.py`` (needs the camera extra, opencv-python-headless).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (points LASTLAYER_MODELS at ../shared/models)
import numpy as np

from lastlayer.images import resize_array
from lastlayer.teach.live import predictions
from lastlayer.teach.render import render_frame, write_video
from lastlayer.teach.session import TeachingSession
from lastlayer.teach.sources import open_source

FRAMES = 150
ROUNDS = 5


def spread(values: list[float]) -> str:
    return f"min {min(values):.3f} / median {statistics.median(values):.3f} / max {max(values):.3f}"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="lastlayer-live-"))
    video = write_video(work / "line.mp4", [("gear", FRAMES // 2), ("washer", FRAMES - FRAMES // 2)], fps=30)
    session = TeachingSession(work / "state")
    for kind in ("gear", "washer", "bracket"):
        session.add_examples(kind, [render_frame(kind, i, seed=3) for i in range(5)])
    decoded = [resize_array(render_frame("gear", i), session.input_size) for i in range(FRAMES)]

    bare_fps, live_fps, ratios = [], [], []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for pixels in decoded:
            session.interpreter.run(pixels)
        bare = FRAMES / (time.perf_counter() - start)
        start = time.perf_counter()
        count = sum(1 for _ in predictions(session, open_source(video, prefetch=8), window=5))
        live = count / (time.perf_counter() - start)
        bare_fps.append(bare)
        live_fps.append(live)
        ratios.append(live / bare)
    print(f"invoke only, pre-decoded 224x224 frames: {spread(bare_fps)} frames/s")
    print(f"end to end, 320x240 video (decode + resize + invoke + head): {spread(live_fps)} frames/s")
    print(f"ratio end-to-end / invoke-only: {spread(ratios)} (goal >= 0.8, and >= 15 frames/s)")

    teach_ms, invoke_ms = [], []
    frames = [render_frame("nut", i, seed=9) for i in range(2 * ROUNDS * 4)]
    for index in range(0, len(frames), 2):
        start = time.perf_counter()
        session.interpreter.run(decoded[index % FRAMES])
        invoke_ms.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        session.add_examples("nut", frames[index])
        prediction = session.predict(frames[index + 1])
        teach_ms.append(1000 * (time.perf_counter() - start))
        assert "nut" in [label for label, _ in prediction.classes]
    print(f"teach -> next prediction using it: {spread(teach_ms)} ms (goal < 100 ms)")
    print(f"  one bare invoke: {spread(invoke_ms)} ms; ratio {statistics.median(teach_ms) / statistics.median(invoke_ms):.2f}x "
          "(two embeddings: the taught frame and the next one)")
    session.close()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
