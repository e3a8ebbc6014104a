"""The contract between the learners and the model writers: a trained head as plain arrays.

A head computes ``softmax(scale * (x' W^T) + b)`` where ``x'`` is the embedding, L2-normalised
first when ``normalize_input`` is set (imprinting). ``model/`` turns this into graph operators;
any new head type that can express itself this way needs no change there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DenseLayer:
    """A dense + softmax head as arrays.

    Attributes:
        weights: ``[C, D]`` float rows, one per class.
        bias: ``[C]`` float.
        scale: the factor applied to ``x W^T`` (the ``s`` of imprinting's ``s * cos``; 1 otherwise).
        normalize_input: L2-normalise the embedding before the dense layer.
        logit_range: (min, max) of the logits seen in training; sets the output quantization.
        labels: class names, one per row.
        state: JSON-able learner state stored beside the model so training can resume from it.
        unknown: JSON-able data of the rule that says when a picture is of no class
            (:meth:`lastlayer.learn.unknown.UnknownRule.to_dict`), stored in the model; ``None``: none.
    """

    weights: np.ndarray
    bias: np.ndarray
    scale: float = 1.0
    normalize_input: bool = False
    logit_range: tuple[float, float] = (-1.0, 1.0)
    labels: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    unknown: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])
