"""Scores to ranked classes, the way every lastlayer command ranks them.

``get_classes_from_scores`` keeps scores ``>= score_threshold`` (inclusive, as PyCoral) and sorts by
score, then by class id, so ties come out in a stable order. PyCoral's adapter (``get_scores``,
``get_classes`` over a raw interpreter) is :mod:`lastlayer.pycoral.adapters.classify`.
"""

from __future__ import annotations

import collections
import math
from typing import Mapping

import numpy as np

Class = collections.namedtuple("Class", ["id", "score"])


def get_classes_from_scores(scores: np.ndarray, top_k: float = math.inf, score_threshold: float = -math.inf) -> list[Class]:
    """The ``top_k`` best classes whose score is at least ``score_threshold``, best first."""
    scores = np.asarray(scores).reshape(-1)
    k = len(scores) if top_k is None or top_k == math.inf else max(0, min(int(top_k), len(scores)))
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return [Class(int(i), float(scores[i])) for i in order if scores[i] >= score_threshold]


def label_of(labels: Mapping[int, str] | None, class_id: int) -> str:
    """The class name, or the id as text when there is no label for it."""
    if labels and class_id in labels:
        return labels[class_id]
    return str(class_id)
