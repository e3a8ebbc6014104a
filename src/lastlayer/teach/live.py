"""The live loop: frames in, (smoothed) predictions out, at the pace the device can keep.

:func:`predictions` is the synchronous generator behind ``lastlayer watch``; :class:`LiveLoop`
runs it on a background thread and keeps the newest frame and prediction for a terminal or a web
page (``latest`` / ``wait_newer``). Predictions come from anything with ``predict(pixels, top_k)``
returning a :class:`~lastlayer.teach.session.Prediction`: a :class:`TeachingSession`, or
:class:`ModelPredictor` for a plain classifier file.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import numpy as np

from lastlayer.teach.session import Prediction
from lastlayer.teach.sources import Frame, FrameSource


class Predictor(Protocol):
    def predict(self, image: Any, top_k: int = 3) -> Prediction: ...


class ModelPredictor:
    """Predictions of a classifier ``.tflite`` (e.g. one exported by a session), with its embedded labels."""

    def __init__(self, model: Any, num_threads: int | None = None, *, input_mean: Any = None, input_std: Any = None) -> None:
        from lastlayer.runtime import Interpreter
        from lastlayer.zoo import open_model

        self.model = open_model(model)
        self.interpreter = Interpreter(self.model, num_threads=num_threads, input_mean=input_mean, input_std=input_std)
        self.labels = self.model.label_list(self.interpreter.output_size) or [str(i) for i in range(self.interpreter.output_size)]
        self.input_size = self.interpreter.input_size
        self._lock = threading.Lock()

    def predict(self, image: Any, top_k: int = 3) -> Prediction:
        from lastlayer.images import resize_array

        pixels = resize_array(image.pixels if hasattr(image, "pixels") else image, self.interpreter.input_size)
        with self._lock:
            scores = self.interpreter.run(pixels)
        order = np.argsort(-scores, kind="stable")[: max(1, int(top_k))]
        return Prediction([(self.labels[i], float(scores[i])) for i in order], [int(i) for i in order])


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
        return self.smoothed.top

    def to_dict(self) -> dict[str, Any]:
        top = self.top
        return {"frame": self.frame.index, "timestamp": round(self.frame.timestamp, 4), "fps": round(self.fps, 2),
                "top": None if top is None else {"label": top[0], "score": round(top[1], 6)},
                **self.smoothed.to_dict()}


class Smoother:
    """Moving average of each label's score over the last ``window`` frames."""

    def __init__(self, window: int = 5) -> None:
        self.window = max(1, int(window))
        self._history: deque[dict[str, float]] = deque(maxlen=self.window)
        self._ids: dict[str, int] = {}

    def update(self, prediction: Prediction, top_k: int) -> Prediction:
        self._history.append(dict(prediction.classes))
        self._ids.update({label: cid for (label, _), cid in zip(prediction.classes, prediction.class_ids)})
        labels = {label for scores in self._history for label in scores}
        mean = {label: sum(s.get(label, 0.0) for s in self._history) / len(self._history) for label in labels}
        ranked = sorted(mean.items(), key=lambda item: (-item[1], item[0]))[:top_k]
        return Prediction(ranked, [self._ids.get(label, -1) for label, _ in ranked])


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


_END = object()


def _resized(source: FrameSource, size: tuple[int, int] | None, every: int, stop: threading.Event) -> Iterator[tuple[Frame, Any]]:
    """``(frame, model-sized pixels)``, read and resized on a background thread so that it overlaps inference."""
    from lastlayer.images import resize_array

    ready: queue.Queue = queue.Queue(maxsize=4)

    def produce() -> None:
        try:
            for frame in source:
                if stop.is_set():
                    break
                if every > 1 and frame.index % every:
                    continue
                pixels = frame.pixels if size is None else resize_array(frame.pixels, size)
                while not stop.is_set():
                    try:
                        ready.put((frame, pixels), timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # handed to the consumer
            ready.put(exc)
            return
        ready.put(_END)

    thread = threading.Thread(target=produce, name="lastlayer-frames", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def predictions(predictor: Predictor, source: FrameSource, *, window: int = 5, top_k: int = 3, every: int = 1,
                max_fps: float | None = None, max_frames: int | None = None,
                stop: threading.Event | None = None) -> Iterator[LiveState]:
    """Predict frame after frame: every ``every``-th frame, at most ``max_fps`` per second, smoothed over ``window``.

    Frames are read and resized to the model's input on a background thread, overlapping inference.
    """
    smoother, rate = Smoother(window), _Rate()
    last = 0.0
    halt = threading.Event()
    frames = _resized(source, getattr(predictor, "input_size", None), every, halt)
    for processed, (frame, pixels) in enumerate(frames, start=1):
        if stop is not None and stop.is_set():
            return
        if max_fps:
            wait = last + 1.0 / max_fps - time.monotonic()
            if wait > 0:
                if stop is not None and stop.wait(wait):
                    return
                if stop is None:
                    time.sleep(wait)
            last = time.monotonic()
        raw = predictor.predict(pixels, top_k=max(top_k, 1))
        yield LiveState(frame, raw, smoother.update(raw, top_k), rate.tick(), processed)
        if max_frames is not None and processed >= max_frames:
            return


@dataclass(frozen=True)
class TopChange:
    """An event of ``lastlayer watch``: the (smoothed) top class changed."""

    state: LiveState
    previous: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"event": "top_changed", "time": round(time.time(), 3), "previous": self.previous, **self.state.to_dict()}


def top_changes(states: Iterator[LiveState], min_score: float = 0.0) -> Iterator[TopChange]:
    """The states whose smoothed top class differs from the last reported one (``None`` below ``min_score``)."""
    current: str | None = None
    started = False
    for state in states:
        top = state.top
        label = top[0] if top is not None and top[1] >= min_score else None
        if not started or label != current:
            started = True
            yield TopChange(state, current)
            current = label


class LiveLoop:
    """:func:`predictions` on a background thread, keeping the newest state for a UI.

    ``latest()`` returns the newest :class:`LiveState` (or ``None``); ``wait_newer(processed,
    timeout)`` blocks until a state newer than ``processed`` exists; ``error`` holds what stopped
    the loop (a source that ended or failed), ``running`` whether it still runs.
    """

    def __init__(self, predictor: Predictor, source: FrameSource, **options: Any) -> None:
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
