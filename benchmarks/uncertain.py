"""What the unknown answer and the queue of unsure frames cost a teaching session, as ratios measured in the same run.

1. Per prediction: a session's head with its unknown rule vs. the same head without (``unknown=False``),
   on the stored embeddings (the head's math only), and both against one bare invoke of the extractor.
2. Rule upkeep: one example added (folded in, ``partial_fit``) vs. the rule derived afresh from every
   example, at 100 and 500 examples of 10 classes (synthetic unit embeddings: the cost is the math).
3. The queue: a looping video of gears, nuts (never taught) and washers, three times round, offered
   frame by frame: how many frames were uncertain, how many were kept (repeats of the same sight are
   counted on the kept one), the memory kept per frame, and what offering costs per frame vs. the
   prediction itself.

Run: ``python benchmarks/uncertain.py`` (needs the camera extra to write the video).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (points LASTLAYER_MODELS at ../shared/models)
import numpy as np

from lastlayer.images.render import write_video
from lastlayer.sources import open_source
from lastlayer.teach.live import predictions
from lastlayer.teach.replica import RuleKeeper
from lastlayer.teach.session import TeachingSession
from lastlayer.teach.uncertain import UncertainQueue, uncertainty

EXTRACTOR = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
SEGMENTS = [("gear", 15), ("nut", 15), ("washer", 15)]


def per_call(call, rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        call()
    return (time.perf_counter() - start) / rounds


def prediction_cost(state: Path, frames: list[np.ndarray]) -> None:
    with TeachingSession(state) as on, TeachingSession(state, unknown=False) as off:
        units = [on.embed(frame) for frame in frames[:20]]
        invoke = min(per_call(lambda: on.embed(frames[0]), 20) for _ in range(3))
        with_rule, without = [], []
        for _ in range(5):  # alternating rounds: a drifting host slows both alike
            with_rule.append(per_call(lambda: [on.predict_embedding(u) for u in units], 50) / len(units))
            without.append(per_call(lambda: [off.predict_embedding(u) for u in units], 50) / len(units))
        a, b = statistics.median(with_rule), statistics.median(without)
        print(f"1. head per prediction: {a * 1e3:.3f} ms with the rule, {b * 1e3:.3f} ms without ({a / b:.2f}x); "
              f"one bare invoke {invoke * 1e3:.2f} ms: the rule adds {(a - b) / invoke * 100:.1f} % of an invoke")


def upkeep_cost(count: int, rng: np.random.Generator) -> None:
    centres = rng.normal(size=(10, 1024))
    y = np.arange(count) % 10
    X = centres[y] + 0.8 * rng.normal(size=(count, 1024))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    examples = [X[y == c] for c in range(10)]
    keeper = RuleKeeper(settle=3600)
    keeper.refit(examples, 0)
    full = min(per_call(lambda: keeper.refit(examples, 0), 3) for _ in range(3))
    keeper.refit(examples, 0)
    grow = min(per_call(lambda: keeper.added(X[:1], y[:1], lambda: examples, 0), 20) for _ in range(3))
    print(f"2. rule upkeep at {count} examples: one added {grow * 1e3:.2f} ms (folded in), "
          f"derived afresh {full * 1e3:.1f} ms ({full / grow:.0f}x)")


def queue_cost(state: Path, video: Path) -> None:
    with TeachingSession(state) as session:
        queue = UncertainQueue()
        offered = []
        states = list(predictions(session, open_source(str(video), loop=True), window=1, max_frames=3 * 45))
        for s in states:
            start = time.perf_counter()
            queue.offer_state(s)
            if uncertainty(s.prediction, queue.margin) is not None:  # (a certain frame costs one comparison)
                offered.append(time.perf_counter() - start)
        predict = per_call(lambda: session.predict(states[20].frame.pixels), 20)
        kept = queue.items()
        print(f"3. queue over {len(states)} frames (3 loops of {len(SEGMENTS)} x 15): {len(offered)} uncertain, {len(kept)} kept "
              f"({queue.duplicates} repeats counted on them, {queue.evicted} pushed out), "
              f"{queue.nbytes / max(1, len(kept)) / 1024:.1f} KiB per kept frame ({queue.nbytes / 1024:.0f} KiB of "
              f"{queue.max_bytes / 1024:.0f}); offering an uncertain one: median {statistics.median(offered) * 1e3:.3f} ms, "
              f"max {max(offered) * 1e3:.1f} ms (a new frame: thumbnail), per prediction {predict * 1e3:.1f} ms "
              f"({statistics.median(offered) / predict * 100:.1f} %)")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        video = write_video(root / "parts.avi", SEGMENTS, fps=15)
        frames = [frame.pixels for frame in open_source(str(video))]
        with TeachingSession(root / "state", Path(_common.SHARED) / "models" / EXTRACTOR) as session:
            session.add_examples("gear", frames[0:15:2])
            session.add_examples("washer", frames[30:45:2])
        prediction_cost(root / "state", frames)
        rng = np.random.default_rng(0)
        for count in (100, 500):
            upkeep_cost(count, rng)
        queue_cost(root / "state", video)


if __name__ == "__main__":
    main()
