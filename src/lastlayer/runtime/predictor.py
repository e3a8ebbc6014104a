"""Predictions of a classifier file, frame by frame, on the interpreter and its lanes (e.g. ``lastlayer watch --model``)."""

from __future__ import annotations

import threading
from typing import Any, Protocol

import numpy as np

from lastlayer.images.decode import resize_array
from lastlayer.model.zoo import open_model
from lastlayer.runtime.interpreter import Interpreter
from lastlayer.runtime.lanes import Lanes
from lastlayer.runtime.prediction import Prediction


class OutputCheck(Protocol):
    """A check of a model's outputs, e.g. its unknown rule (:class:`lastlayer.jobs.unknown.UnknownCheck`).

    ``extra_outputs`` are the tensors the interpreter returns after the scores; ``decide(joined)`` turns
    the joined outputs ``[n, C + D]`` into a decision with ``scores [n, C]``, ``unknown [n]`` and
    ``similarity [n]``; ``split(joined)`` into ``(scores, embeddings)``.
    """

    @property
    def extra_outputs(self) -> tuple[int, ...]: ...

    def decide(self, joined: np.ndarray) -> Any: ...

    def split(self, joined: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class ModelPredictor:
    """Predictions of a classifier ``.tflite`` (e.g. one exported by a session), with its embedded labels.

    A :class:`~lastlayer.teach.live.Predictor` for the live loop: ``predict(image, top_k, lane=i)``
    runs on lane ``i``'s single-threaded interpreter (:attr:`lanes` of them), without ``lane`` on the
    multi-threaded one.

    ``check`` (e.g. ``lastlayer.jobs.unknown.unknown_check(model)``, the model's unknown rule) is applied
    to every prediction: it sets :attr:`Prediction.unknown`, ``similarity`` and the unit ``embedding``.
    Without one the model's graph runs unchanged and ``unknown`` is ``None``.
    """

    def __init__(self, model: Any, num_threads: int | None = None, *, input_mean: Any = None, input_std: Any = None,
                 check: OutputCheck | None = None) -> None:
        self.model = open_model(model)
        self.check = check
        self.interpreter = Interpreter(self.model, num_threads=num_threads, input_mean=input_mean, input_std=input_std,
                                       extra_outputs=check.extra_outputs if check is not None else ())
        classes = self.interpreter.output_sizes[0]
        self.labels = self.model.label_list(classes) or [str(i) for i in range(classes)]
        self.input_size = self.interpreter.input_size
        self._lock = threading.Lock()
        self._lanes = Lanes(self.interpreter, self._lock)

    @property
    def lanes(self) -> int:
        """How many predictions may run at the same time (``predict(..., lane=i)`` from different threads)."""
        return len(self._lanes)

    def predict(self, image: Any, top_k: int = 3, *, lane: int | None = None) -> Prediction:
        pixels = resize_array(image.pixels if hasattr(image, "pixels") else image, self.interpreter.input_size)
        output = self._lanes.run(pixels, lane)
        if self.check is None:
            return Prediction.from_scores(output, self.labels, top_k=max(1, int(top_k)))
        decision = self.check.decide(output)
        embedding = np.asarray(self.check.split(output)[1][0], dtype=np.float64)
        norm = float(np.linalg.norm(embedding))
        return Prediction.from_scores(decision.scores[0], self.labels, top_k=max(1, int(top_k)),
                                      unknown=bool(decision.unknown[0]), similarity=float(decision.similarity[0]),
                                      embedding=embedding / norm if norm > 0 else embedding)

