"""Scores to ranked classes, with PyCoral's ``adapters.classify`` names and semantics.

``get_classes_from_scores`` keeps scores ``>= score_threshold`` (inclusive, as PyCoral) and sorts by
score, then by class id, so ties come out in a stable order.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Mapping

import numpy as np

Class = collections.namedtuple("Class", ["id", "score"])


def num_classes(interpreter: Any) -> int:
    """Number of values in output 0 of a LiteRT (or lastlayer) interpreter."""
    details = interpreter.output_details if hasattr(interpreter, "uses_edgetpu") else interpreter.get_output_details()
    return int(np.prod(details[0]["shape"]))


def get_scores(interpreter: Any) -> np.ndarray:
    """Dequantized output 0 as a flat array (float64 for quantized outputs, like PyCoral)."""
    if hasattr(interpreter, "uses_edgetpu"):
        return interpreter.output().astype(np.float64)
    detail = interpreter.get_output_details()[0]
    values = interpreter.get_tensor(detail["index"]).reshape(-1)
    if np.issubdtype(values.dtype, np.integer):
        scale, zero_point = detail["quantization"]
        return scale * (values.astype(np.int64) - zero_point)
    return values.copy()


def get_classes_from_scores(scores: np.ndarray, top_k: float = math.inf, score_threshold: float = -math.inf) -> list[Class]:
    """The ``top_k`` best classes whose score is at least ``score_threshold``, best first."""
    scores = np.asarray(scores).reshape(-1)
    k = len(scores) if top_k is None or top_k == math.inf else max(0, min(int(top_k), len(scores)))
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return [Class(int(i), float(scores[i])) for i in order if scores[i] >= score_threshold]


def get_classes(interpreter: Any, top_k: float = math.inf, score_threshold: float = -math.inf) -> list[Class]:
    """Ranked classes from an interpreter's output 0 (after ``invoke``)."""
    return get_classes_from_scores(get_scores(interpreter), top_k, score_threshold)


def label_of(labels: Mapping[int, str] | None, class_id: int) -> str:
    """The class name, or the id as text when there is no label for it."""
    if labels and class_id in labels:
        return labels[class_id]
    return str(class_id)
