"""The contract between the learners and the model writers: a trained head as plain arrays.

A head computes ``softmax(scale * (x' W^T) + b)`` where ``x'`` is the embedding, L2-normalised
first when ``normalize_input`` is set (imprinting). ``model/`` turns this into graph operators;
any new head type that can express itself this way needs no change there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI reads OUTPUT_TYPES while parsing: this module stays light
    import numpy as np

OUTPUT_TYPES = ("uint8", "int8", "float32")
"""The output types a written model can have (its scores' tensor type); a learned model keeps its base model's."""


class _Rows:
    """``num_classes`` and ``dim`` of a layer's ``weights [C, D]``."""

    weights: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])


@dataclass(frozen=True)
class DenseLayer(_Rows):
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


@dataclass(frozen=True)
class AppendedClasses(_Rows):
    """New classes to append after a classifier's own (fixed) classes, as arrays.

    The model writer scores new class ``k`` from the embedding ``x`` the class layer reads, relative
    to the best original logit: ``max_c(logit_c) + r_k - (steepness - 1) * max(0, -r_k)`` with
    ``r_k = W_k . unit(x - mean(x)) + b_k``, and concatenates these logits after the original ones,
    before the original softmax; the original layer is not touched.

    Attributes:
        weights: ``[K, D]`` float rows, one per new class.
        bias: ``[K]`` float.
        labels: the names of every class, the original ones first (``C + K`` entries).
        state: JSON-able learner state stored in the model, so that a later run can add classes or shots.
        metadata: further named metadata entries to store in the model (for example a rule for inputs
            of no known class), as bytes.
        logit_range: the (min, max) the joined logits should represent, the original width moved up to
            leave the new logits headroom (``None``: the original logits' range).
        steepness: how many times faster a new logit falls below the best original one than it rises above it.
    """

    weights: np.ndarray
    bias: np.ndarray
    labels: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, bytes] = field(default_factory=dict)
    logit_range: tuple[float, float] | None = None
    steepness: float = 1.0
