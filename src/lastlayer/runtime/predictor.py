"""Predictions of a classifier file, frame by frame, on the interpreter and its lanes (e.g. ``lastlayer watch --model``)."""

from __future__ import annotations

import threading
from typing import Any

from lastlayer.images.decode import resize_array
from lastlayer.model.zoo import open_model
from lastlayer.runtime.interpreter import Interpreter
from lastlayer.runtime.lanes import Lanes
from lastlayer.runtime.prediction import Prediction


class ModelPredictor:
    """Predictions of a classifier ``.tflite`` (e.g. one exported by a session), with its embedded labels.

    A :class:`~lastlayer.teach.live.Predictor` for the live loop: ``predict(image, top_k, lane=i)``
    runs on lane ``i``'s single-threaded interpreter (:attr:`lanes` of them), without ``lane`` on the
    multi-threaded one.
    """

    def __init__(self, model: Any, num_threads: int | None = None, *, input_mean: Any = None, input_std: Any = None) -> None:
        self.model = open_model(model)
        self.interpreter = Interpreter(self.model, num_threads=num_threads, input_mean=input_mean, input_std=input_std)
        self.labels = self.model.label_list(self.interpreter.output_size) or [str(i) for i in range(self.interpreter.output_size)]
        self.input_size = self.interpreter.input_size
        self._lock = threading.Lock()
        self._lanes = Lanes(self.interpreter, self._lock)

    @property
    def lanes(self) -> int:
        """How many predictions may run at the same time (``predict(..., lane=i)`` from different threads)."""
        return len(self._lanes)

    def predict(self, image: Any, top_k: int = 3, *, lane: int | None = None) -> Prediction:
        pixels = resize_array(image.pixels if hasattr(image, "pixels") else image, self.interpreter.input_size)
        return Prediction.from_scores(self._lanes.run(pixels, lane), self.labels, top_k=max(1, int(top_k)))
