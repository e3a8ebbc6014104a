"""Scores of a classification model as ranked classes; mirrors ``pycoral.adapters.classify``.

The same names and results as PyCoral, with two deliberate details (PYCORAL.md section 9, item 18):

* Ties are ordered by class id (lower id first). PyCoral left them in ``argpartition`` order,
  i.e. arbitrary, so no ported code can rely on another order.
* ``top_k=0`` still returns **every** class, as PyCoral did (``-0 == 0``). Returning nothing
  (libcoral's C++ answer) would silently change what ported scripts print, e.g. a
  ``--top_k 0`` flag meaning "all"; the rule is to fix quirks only when no ported code breaks.
  A negative ``top_k`` (garbage in PyCoral) raises ``ValueError``.

The score threshold is inclusive (``score >= score_threshold``), ids are NumPy integers and scores
keep the dtype of the scores array, as in PyCoral. The ranking is lastlayer's one
:func:`~lastlayer.runtime.prediction.rank`.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np

from lastlayer.runtime.prediction import rank

Class = collections.namedtuple("Class", ["id", "score"])
Class.__doc__ = "One classification result: ``id`` (the class index) and ``score``."


def num_classes(interpreter: Any) -> int:
    """Number of values in output 0 (the class count of a classifier)."""
    return int(np.prod(interpreter.get_output_details()[0]["shape"]))


def get_scores(interpreter: Any) -> np.ndarray:
    """Output 0 as a flat array, dequantized (``scale * (q - zero_point)``, float64) if it is an integer tensor."""
    detail = interpreter.get_output_details()[0]
    values = interpreter.get_tensor(detail["index"]).reshape(-1)
    if np.issubdtype(values.dtype, np.integer):
        scale, zero_point = detail["quantization"]
        return scale * (values.astype(np.int64) - zero_point)
    return values.copy()


def get_classes_from_scores(scores: np.ndarray, top_k: float = math.inf, score_threshold: float = -math.inf) -> list[Class]:
    """The ``top_k`` highest scores that are ``>= score_threshold``, best first (ties: lower id first).

    ``top_k=0`` returns all classes (PyCoral's behaviour, kept for ported code).
    """
    scores = np.asarray(scores).reshape(-1)
    if top_k < 0:
        raise ValueError(f"top_k must be 0 (all classes) or positive, got {top_k}")
    return [Class(np.int64(i), scores[i]) for i in rank(scores, None if top_k == 0 else top_k, score_threshold)]


def get_classes(interpreter: Any, top_k: float = math.inf, score_threshold: float = -math.inf) -> list[Class]:
    """:func:`get_classes_from_scores` of the interpreter's output 0 (after ``invoke()``)."""
    return get_classes_from_scores(get_scores(interpreter), top_k, score_threshold)
