"""The live loop: frames in, (smoothed) predictions out, at the pace the device can keep.

:func:`predictions` is the synchronous generator behind ``lastlayer watch``; :class:`LiveLoop`
runs it on a background thread and keeps the newest frame and prediction for a terminal or a web
page (``latest`` / ``wait_newer``). Predictions come from anything with ``predict(pixels, top_k)``
returning a :class:`~lastlayer.runtime.prediction.Prediction`: a :class:`TeachingSession`, or
:class:`~lastlayer.runtime.predictor.ModelPredictor` for a plain classifier file.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

from lastlayer.runtime.prediction import Prediction
from lastlayer.sources import Frame, FrameSource
from lastlayer.teach.uncertain import UncertainQueue

TEACHING_MAX_FPS = 15.0  # predictions per second while teaching: a fluid view, and CPU left for the teaching itself


class Predictor(Protocol):
    """What the live loop predicts with. A predictor may also have ``lanes``: how many calls
    ``predict(..., lane=i)`` may run at the same time from different threads (without it, one)."""

    def predict(self, image: Any, top_k: int = 3) -> Prediction: ...


STUCK_WORKER = 0.5  # seconds a stopping pipeline waits for its workers before it closes the source they are stuck in


@dataclass(frozen=True)
class LiveState:
    """One processed frame: the frame, the raw and the smoothed prediction, and the processing rate."""

    frame: Frame
    prediction: Prediction
    smoothed: Prediction
    fps: float
    processed: int

    @property
    def top(self) -> tuple[str, float] | None:
        """The smoothed answer: ``("unknown", closest score)`` when the unknown rule says so, else the top class."""
        return self.smoothed.answer

    @property
    def unknown(self) -> bool | None:
        """Whether the smoothed prediction is unknown (``None``: no unknown rule applied)."""
        return self.smoothed.unknown

    def describe(self) -> str:
        """``roses 0.91`` or ``unknown (closest: roses 0.64)`` (smoothed)."""
        return self.smoothed.describe()

    def to_dict(self) -> dict[str, Any]:
        return {"frame": self.frame.index, "timestamp": round(self.frame.timestamp, 4), "fps": round(self.fps, 2),
                **self.smoothed.to_dict()}


class Smoother:
    """Moving average of each label's score over the last ``window`` frames; unknown when most of them were."""

    def __init__(self, window: int = 5) -> None:
        self.window = max(1, int(window))
        self._history: deque[tuple[dict[str, float], bool | None, float | None]] = deque(maxlen=self.window)
        self._ids: dict[str, int] = {}

    def update(self, prediction: Prediction, top_k: int) -> Prediction:
        self._history.append((dict(prediction.classes), prediction.unknown, prediction.similarity))
        self._ids.update({label: cid for (label, _), cid in zip(prediction.classes, prediction.class_ids)})
        labels = sorted({label for scores, _, _ in self._history for label in scores})  # ties rank by label
        mean = [sum(s.get(label, 0.0) for s, _, _ in self._history) / len(self._history) for label in labels]
        votes = [unknown for _, unknown, _ in self._history if unknown is not None]  # frames without a rule do not vote
        similarities = [similarity for _, _, similarity in self._history if similarity is not None]
        return Prediction.from_scores(mean, labels, ids=[self._ids.get(label, -1) for label in labels], top_k=top_k,
                                      unknown=2 * sum(votes) > len(votes) if votes else None,
                                      similarity=sum(similarities) / len(similarities) if similarities else None)


class _Rate:
    """Frames per second over the last few seconds."""

    def __init__(self, span: float = 2.0) -> None:
        self.span, self.times = span, deque()

    def tick(self) -> float:
        now = time.monotonic()
        self.times.append(now)
        while self.times and now - self.times[0] > self.span:
            self.times.popleft()
        return (len(self.times) - 1) / (self.times[-1] - self.times[0]) if len(self.times) > 1 and self.times[-1] > self.times[0] else 0.0


class _Pipeline:
    """Frames read in order, predicted by several threads at once, handed back in order.

    Each worker thread takes the next frame from the source (under a lock, so frames keep their
    order), resizes it and predicts it on its own lane of the predictor; decoding, resizing and
    inference all release the GIL, so the workers keep every core busy. Results wait in a small
    reorder buffer: no frame is read more than ``depth`` frames ahead of the consumer.
    """

    def __init__(self, predictor: Predictor, source: FrameSource, *, top_k: int, every: int,
                 max_fps: float | None, stop: threading.Event | None, lanes: int | None = None) -> None:
        self.predictor, self.source, self.top_k, self.every, self.max_fps = predictor, source, top_k, every, max_fps
        self.size = getattr(predictor, "input_size", None)
        if lanes is None and source.paced:
            # A paced source (a camera) gains nothing from more frames in flight, and one frame on all
            # the cores is the least delay; a file played as fast as it decodes gains frames per second.
            lanes = 1
        if lanes is not None and lanes <= 1:
            self.lane_count = 1  # the predictor's lanes (extra interpreters) are not even made
        else:
            available = int(getattr(predictor, "lanes", 1) or 1)
            self.lane_count = max(1, min(lanes or available, available))
        # With one lane, a second worker still decodes and resizes the next frame during inference.
        workers = max(2, self.lane_count)
        self.depth = 2 * workers
        self._stop, self._halt = stop, threading.Event()
        self._read_lock = threading.Lock()
        self._done = threading.Condition()
        self._results: dict[int, tuple[str, Any]] = {}
        self._next_read = 0  # sequence number of the next frame read
        self._consumed = 0  # sequence number the consumer waits for
        self._finished = False  # the source ended or failed: read no further
        self._last_read = 0.0
        self._last_slot = -1  # the last video-time slot a frame was taken from (recorded sources with max_fps)
        self._threads = [threading.Thread(target=self._work, args=(worker,), name=f"lastlayer-live-{worker}", daemon=True)
                         for worker in range(workers)]

    def _stopped(self) -> bool:
        return self._halt.is_set() or self._finished or (self._stop is not None and self._stop.is_set())

    def _next_frame(self) -> Frame | None:
        by_clock = self.max_fps and self.source.live
        if by_clock:  # a camera or stream: at most max_fps frames per second of wall-clock time
            wait = self._last_read + 1.0 / self.max_fps - time.monotonic()
            if wait > 0 and self._halt.wait(wait):
                return None
            self._last_read = time.monotonic()
        for frame in self.source:
            if self._stopped():
                return None
            if self.every > 1 and frame.index % self.every != 0:
                continue
            if self.max_fps and not by_clock:
                # a file or folder: at most max_fps frames per second of its own time (the first of each 1/max_fps
                # slot), whatever the pace it is read at; the other frames are skipped
                slot = math.floor(frame.timestamp * self.max_fps + 1e-6)
                if slot <= self._last_slot:
                    continue
                self._last_slot = slot
            return frame
        return None

    def _read(self) -> tuple[int, Frame | BaseException | None]:
        """The next sequence number and its frame (``None``: the source ended; an exception: it failed)."""
        with self._read_lock:
            with self._done:
                self._done.wait_for(lambda: self._next_read - self._consumed < self.depth or self._stopped())
            sequence = self._next_read
            self._next_read += 1
            if self._stopped():
                return sequence, None
            try:
                return sequence, self._next_frame()
            except BaseException as exc:  # handed to the consumer, in order
                return sequence, exc

    def _predict(self, worker: int, frame: Frame) -> Prediction:
        from lastlayer.images.decode import resize_array

        pixels = frame.pixels if self.size is None else resize_array(frame.pixels, self.size)
        if self.lane_count > 1:
            return self.predictor.predict(pixels, top_k=self.top_k, lane=worker % self.lane_count)
        return self.predictor.predict(pixels, top_k=self.top_k)  # the predictor's own (multi-threaded) interpreter

    def _work(self, worker: int) -> None:
        while True:
            sequence, frame = self._read()
            if frame is None:
                result: tuple[str, Any] = ("end", None)
            elif isinstance(frame, BaseException):
                result = ("error", frame)
            else:
                try:
                    result = ("ok", (frame, self._predict(worker, frame)))
                except BaseException as exc:  # handed to the consumer, in order
                    result = ("error", exc)
            with self._done:
                self._results[sequence] = result
                if result[0] != "ok":
                    self._finished = True
                self._done.notify_all()
            if result[0] != "ok":
                return

    def __iter__(self) -> Iterator[tuple[Frame, Prediction]]:
        for thread in self._threads:
            thread.start()
        try:
            while True:
                with self._done:
                    self._done.wait_for(lambda: self._consumed in self._results)
                    kind, value = self._results.pop(self._consumed)
                    self._consumed += 1
                    self._done.notify_all()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            self._halt.set()
            with self._done:
                self._done.notify_all()
            for thread in self._threads:
                thread.join(STUCK_WORKER)
            if any(thread.is_alive() for thread in self._threads):
                # A worker is inside the source: a stalled read or a reconnect back-off that may last a minute.
                # Closing the source (safe from any thread) is the one way to stop it, so Ctrl-C or SIGTERM
                # ends the pipeline now rather than once the source gives up.
                self.source.close()
                for thread in self._threads:
                    thread.join()


def predictions(predictor: Predictor, source: FrameSource, *, window: int = 5, top_k: int = 3, every: int = 1,
                max_fps: float | None = None, max_frames: int | None = None,
                stop: threading.Event | None = None, lanes: int | None = None,
                uncertain: UncertainQueue | None = None) -> Iterator[LiveState]:
    """Predict frame after frame: every ``every``-th frame, at most ``max_fps`` per second, smoothed over ``window``.

    ``max_fps`` counts seconds of wall-clock time for a live source (a camera, a stream), and seconds of the
    source's own time (frame timestamps) for a file or folder: a 10 s clip at ``max_fps=5`` gives 50 frames,
    the others skipped, whether it is read in real time or as fast as it decodes.

    Frames are read in order, then resized and predicted by worker threads, and the states come
    out in frame order. ``lanes``: how many frames are predicted at once, each on a single-threaded
    interpreter (the predictor's ``lanes``); default: all of them for a source read as fast as it
    decodes (the most frames per second), one for a paced source such as a camera (the predictor's
    own multi-threaded interpreter: the least delay per frame), with the next frame decoded and
    resized meanwhile. ``uncertain``: a queue offered every frame's own prediction (it keeps those
    that were unknown or nearly tied, see :mod:`lastlayer.teach.uncertain`).
    """
    smoother, rate = Smoother(window), _Rate()
    frames = _Pipeline(predictor, source, top_k=max(top_k, 1), every=every, max_fps=max_fps, stop=stop, lanes=lanes)
    for processed, (frame, raw) in enumerate(frames, start=1):
        if stop is not None and stop.is_set():
            return
        state = LiveState(frame, raw, smoother.update(raw, top_k), rate.tick(), processed)
        if uncertain is not None:
            uncertain.offer_state(state)
        yield state
        if max_frames is not None and processed >= max_frames:
            return


@dataclass(frozen=True)
class TopChange:
    """An event of ``lastlayer watch``: the (smoothed) answer changed (``previous``: the class before, ``"unknown"``, or None)."""

    state: LiveState
    previous: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"event": "top_changed", "time": round(time.time(), 3), "previous": self.previous, **self.state.to_dict()}


def top_changes(states: Iterator[LiveState], min_score: float = 0.0) -> Iterator[TopChange]:
    """The states whose smoothed answer differs from the last reported one: a class, ``"unknown"`` when the unknown
    rule says so (whatever the score), or ``None`` below ``min_score``."""
    current: str | None = None
    started = False
    for state in states:
        top = state.top
        label = top[0] if top is not None and (state.unknown or top[1] >= min_score) else None
        if not started or label != current:
            started = True
            yield TopChange(state, current)
            current = label


class LiveLoop:
    """:func:`predictions` on a background thread, keeping the newest state for a UI.

    ``latest()`` returns the newest :class:`LiveState` (or ``None``); ``wait_newer(processed,
    timeout)`` blocks until a state newer than ``processed`` exists; ``error`` holds what stopped
    the loop (a source that ended or failed), ``running`` whether it still runs.

    The frames it is unsure about go to ``uncertain`` (:func:`predictions`); by default to the
    predictor's own queue when it keeps one (a :class:`~lastlayer.teach.session.TeachingSession`'s
    ``uncertain``), so every live view of a session fills the queue it teaches from.
    """

    def __init__(self, predictor: Predictor, source: FrameSource, **options: Any) -> None:
        options.setdefault("uncertain", getattr(predictor, "uncertain", None))
        self.predictor, self.source, self.options = predictor, source, options
        self._state: LiveState | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> LiveLoop:
        self._thread = threading.Thread(target=self._run, name="lastlayer-live", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for state in predictions(self.predictor, self.source, stop=self._stop, **self.options):
                with self._changed:
                    self._state = state
                    self._changed.notify_all()
        except BaseException as exc:  # reported to the UI; the loop just ends
            self.error = exc
        finally:
            with self._changed:
                self._changed.notify_all()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def latest(self) -> LiveState | None:
        with self._changed:
            return self._state

    def wait_newer(self, processed: int, timeout: float | None = None) -> LiveState | None:
        """The first state with ``processed`` greater than the one given (``None`` on timeout or when the loop ended)."""
        with self._changed:
            self._changed.wait_for(lambda: (self._state is not None and self._state.processed > processed) or not self.running,
                                   timeout)
            state = self._state
            return state if state is not None and state.processed > processed else None

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.source.close()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> LiveLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
