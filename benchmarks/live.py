"""The live loop's speed, as ratios against the bare invoke time measured in the same run.

1. End to end: a 320x240 video decoded, resized, embedded and classified by a TeachingSession's
   head (frames in flight on the session's lanes: decoding overlaps inference) vs. invoke alone on
   pre-decoded, pre-resized frames, both with the session's own multi-threaded interpreter and with
   its lanes side by side (the faster of the two is the baseline). Many short rounds alternate the
   three, so that a host whose speed drifts (a shared VM) slows all of them alike; the ratio is
   given per round and over all rounds.
2. Teach -> next prediction: "add this frame to class X" for the frame on screen (its embedding comes
   with its prediction: a thumbnail, a durable commit and a row update, no second embedding), then
   the prediction of the next frame (resized beforehand, as the live loop's reader does), which uses
   it, vs. one bare invoke; next to it, the floor (one durable commit of a tiny change, i.e. one
   fdatasync of the WAL, plus the invoke) and the old way (the taught frame embedded again).

Run: ``python benchmarks/live.py`` (needs the camera extra, opencv-python-headless).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import _common  # noqa: F401  (points LASTLAYER_MODELS at ../shared/models)
import numpy as np

from lastlayer.images.decode import resize_array
from lastlayer.images.render import render_frame, write_video
from lastlayer.sources import open_source
from lastlayer.teach.live import predictions
from lastlayer.teach.session import TeachingSession

FRAMES = 60
ROUNDS = 30
TEACH_ROUNDS = 20


def spread(values: list[float]) -> str:
    return f"min {min(values):.3f} / median {statistics.median(values):.3f} / max {max(values):.3f}"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="lastlayer-live-"))
    video = write_video(work / "line.mp4", [("gear", FRAMES // 2), ("washer", FRAMES - FRAMES // 2)], fps=30)
    session = TeachingSession(work / "state")
    for kind in ("gear", "washer", "bracket"):
        session.add_examples(kind, [render_frame(kind, i, seed=3) for i in range(5)])
    decoded = [resize_array(render_frame("gear", i), session.input_size) for i in range(FRAMES)]

    lanes = session.lanes  # makes the lane interpreters before timing

    def bare_threads() -> float:
        start = time.perf_counter()
        for pixels in decoded:
            session.embedder.interpreter.run(pixels)
        return FRAMES / (time.perf_counter() - start)

    def bare_lanes() -> float:
        def run(lane: int) -> None:
            for pixels in decoded[lane::lanes]:
                session.predict(pixels, lane=lane)
        threads = [threading.Thread(target=run, args=(lane,)) for lane in range(lanes)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return FRAMES / (time.perf_counter() - start)

    def end_to_end() -> float:
        source = open_source(video)  # opened (the file probed) before the clock starts
        start = time.perf_counter()
        count = sum(1 for _ in predictions(session, source, window=5))
        return count / (time.perf_counter() - start)

    end_to_end()  # warm-up
    threads_fps: list[float] = []
    lanes_fps: list[float] = []
    live_fps: list[float] = []
    for _ in range(ROUNDS):
        threads_fps.append(bare_threads())
        lanes_fps.append(bare_lanes())
        live_fps.append(end_to_end())

    def overall(rates: list[float]) -> float:  # frames over the summed time of every round
        return len(rates) / sum(1 / rate for rate in rates)

    baseline = max(threads_fps, lanes_fps, key=overall)  # the faster way to invoke over all rounds
    ratios = [live / bare for live, bare in zip(live_fps, baseline)]
    print(f"{ROUNDS} rounds of {FRAMES} frames each, min / median / max of the rounds, then over all rounds:")
    print(f"invoke only, pre-decoded 224x224 frames, one {session.embedder.interpreter.num_threads}-thread interpreter: "
          f"{spread(threads_fps)}; {overall(threads_fps):.1f} frames/s")
    print(f"invoke + head only, pre-decoded frames, {lanes} single-threaded lanes side by side: {spread(lanes_fps)}; "
          f"{overall(lanes_fps):.1f} frames/s")
    print(f"end to end, 320x240 video (decode + resize + invoke + head): {spread(live_fps)}; {overall(live_fps):.1f} frames/s")
    print(f"ratio end-to-end / the faster invoke-only: {spread(ratios)}; {overall(live_fps) / overall(baseline):.3f} over all rounds "
          "(goal >= 0.8, and >= 15 frames/s)")

    invoke_ms, commit_ms, teach_ms, again_ms = [], [], [], []
    session.add_examples("nut", render_frame("nut", 99, seed=9))  # the class exists: each round adds to it
    frames = [render_frame("nut", i, seed=9) for i in range(2 * TEACH_ROUNDS)]
    for index in range(0, len(frames), 2):
        start = time.perf_counter()
        session.embedder.interpreter.run(decoded[index % FRAMES])
        invoke_ms.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        session.store.set_meta("benchmark", index)  # a durable commit of almost nothing
        commit_ms.append(1000 * (time.perf_counter() - start))
        shown = session.predict(frames[index])  # the frame on screen, as the live loop predicted it
        following = resize_array(frames[index + 1], session.input_size)  # resized by the loop's reader, meanwhile
        start = time.perf_counter()
        session.add_examples("nut", frames[index], embeddings=[shown.embedding])
        prediction = session.predict(following)
        teach_ms.append(1000 * (time.perf_counter() - start))
        assert prediction.revision == session.revision and "nut" in [label for label, _ in prediction.classes]
        start = time.perf_counter()
        session.add_examples("nut", frames[index])  # the frame embedded again
        session.predict(following)
        again_ms.append(1000 * (time.perf_counter() - start))
    invoke = statistics.median(invoke_ms)
    print(f"teach -> next prediction using it: {spread(teach_ms)} ms (goal < 100 ms)")
    print(f"  one bare invoke: {spread(invoke_ms)} ms; ratio {statistics.median(teach_ms) / invoke:.2f}x (goal <= 1.3x)")
    print(f"  its floor, one durable commit ({spread(commit_ms)} ms) + the invoke: {(statistics.median(commit_ms) + invoke) / invoke:.2f}x")
    print(f"  embedding the taught frame again, as before: {spread(again_ms)} ms; ratio {statistics.median(again_ms) / invoke:.2f}x")
    session.close()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
