"""What keeping a classifier's own classes costs a teaching session, against the same session without them.

Both sessions run on MobileNet v2 1.0 224 quant (1001 classes, 1280-d embeddings): one keeps its classes
(a KeepClassesHead over the class layer: 1001 + K logits per prediction), one uses its embedding only
(an ImprintingHead over the K taught classes). Measured in the same run, each against one bare invoke:

1. Teach -> next prediction: "add this frame" to an existing class (its embedding comes with its
   prediction), then the prediction of the next frame, which uses it (incremental in both).
2. The head alone: one prediction from an embedding (no invoke).
3. A change that rebuilds the kept head, with N examples stored: the first example of a new class
   (both sessions rebuild) and an undo (the kept head is rebuilt; the imprinting head subtracts).
4. Another process's change followed: a second session on the state adds an example, this one
   refreshes and predicts.

Run: ``python benchmarks/teach_kept.py`` (medians over the rounds; ms).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import _common  # noqa: F401  (points LASTLAYER_MODELS at ../shared/models)
import numpy as np

from lastlayer.images.decode import resize_array
from lastlayer.images.render import render_frame
from lastlayer.teach.session import TeachingSession

MODEL = "mobilenet_v2_1.0_224_quant.tflite"
ROUNDS = 15
STORED = (20, 100, 400)  # examples in the state for the rebuild measurements


def median_ms(action: Callable[[], object], rounds: int = ROUNDS, before: Callable[[], object] | None = None) -> float:
    times = []
    for _ in range(rounds):
        if before is not None:
            before()
        start = time.perf_counter()
        action()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def teach_then_predict(session: TeachingSession, frames: list[np.ndarray]) -> float:
    """Median ms of adding the frame on screen (embedding known) to 'nut', then predicting the next frame."""
    times = []
    for index in range(0, 2 * ROUNDS, 2):
        shown = session.predict(frames[index])
        following = resize_array(frames[index + 1], session.input_size)
        start = time.perf_counter()
        session.add_examples("nut", frames[index], embeddings=[shown.embedding])
        prediction = session.predict(following)
        times.append(1000 * (time.perf_counter() - start))
        assert prediction.revision == session.revision
    return statistics.median(times)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="lastlayer-kept-"))
    sessions = {"kept": TeachingSession(work / "kept", MODEL, keep_classes=True), "embedding only": TeachingSession(work / "plain", MODEL)}
    frames = [render_frame("nut", i, seed=9) for i in range(2 * ROUNDS)]
    pixels = np.zeros((8, 8, 3), np.uint8)
    rng = np.random.default_rng(0)
    names = iter(range(10**6))  # each a new class
    invoke = {}
    for name, session in sessions.items():
        for kind in ("gear", "washer", "bracket"):
            session.add_examples(kind, [render_frame(kind, i, seed=3) for i in range(5)])
        session.add_examples("nut", render_frame("nut", 99, seed=9))
        decoded = resize_array(frames[0], session.input_size)
        invoke[name] = median_ms(lambda session=session, decoded=decoded: session.embedder.interpreter.run(decoded))
    base = statistics.median(invoke.values())
    print(f"one bare invoke: {base:.1f} ms ({', '.join(f'{k} {v:.1f}' for k, v in invoke.items())})")

    for name, session in sessions.items():
        taught = teach_then_predict(session, frames)
        unit = session.embed(frames[0])
        head = median_ms(lambda session=session, unit=unit: session.predict_embedding(unit, 5), rounds=200)
        print(f"{name:>15}: teach -> next prediction {taught:.1f} ms ({taught / base:.2f}x the invoke); "
              f"the head alone {head:.2f} ms")

    for stored in STORED:
        line = []
        for name, session in sessions.items():
            have = len(session.examples())
            if have < stored:  # raw-like vectors for the kept state, unit ones for the other (as each stores them)
                vectors = np.clip(rng.normal(0.5, 2.0, size=(stored - have, 1280)), 0, 6)
                session.add_examples("gear", [pixels] * len(vectors), embeddings=list(vectors))
            known = session.embed(frames[1])
            joined = median_ms(lambda session=session, known=known: session.add_examples(
                f"class {next(names)}", pixels, embeddings=[known]), rounds=5)
            undone = median_ms(lambda session=session: session.undo(), rounds=5,
                               before=lambda session=session, known=known: session.add_examples("gear", pixels, embeddings=[known]))
            line.append(f"{name}: a class joining {joined:.1f} ms, an undo {undone:.1f} ms")
        print(f"with {stored} examples stored: " + "; ".join(line))

    for name, session in sessions.items():
        other = TeachingSession(session.store.folder)
        shown = other.predict(frames[3])
        following = resize_array(frames[4], session.input_size)

        def followed(session=session, other=other, shown=shown, following=following) -> None:
            other.add_examples("nut", frames[3], embeddings=[shown.embedding])
            session.refresh()
            session.predict(following)

        print(f"{name:>15}: another session's example followed (its commit, a refresh, a prediction) "
              f"{median_ms(followed):.1f} ms")
        other.close()
    for session in sessions.values():
        session.close()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
