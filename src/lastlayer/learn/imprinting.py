"""Weight imprinting (Qi, Brown, Lowe: "Low-Shot Learning with Imprinted Weights"), as NumPy math.

Each class's row is the normalised sum of its L2-normalised embeddings and the logit is
``s * cos(embedding, row)``. Classes are added at any time from a few examples, without backprop.
:class:`ImprintingHead` knows no file format: :meth:`ImprintingHead.export` hands plain arrays
(unit rows, scale, norms, shots, labels) to the model writer, and :meth:`ImprintingHead.from_layer`
continues from what a saved model holds.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from lastlayer.errors import TrainingError
from lastlayer.layer import DenseLayer
from lastlayer.learn.losses import cross_entropy, softmax
from lastlayer.learn.validation import check_class_id, check_features, check_fitted, check_labels
from lastlayer.quantization import dequantize, fake_quantize, quantize

# Chosen by measurement (benchmarks/imprint.py prints the sweep): with the MobileNet v1 extractor, the
# s minimising held-out cross-entropy of plain imprinting was 48 on flowers (25 % split) and 64 on
# clothing (its test split; CE there at 48 was within 6 % of the minimum).
DEFAULT_SCALE = 48.0
# How the rows and cosines are stored in an imprinting model (uint8 encoding of [-1, 1]).
COSINE_QUANTIZATION = (1.0 / 128.0, 128)
_NORM_EPSILON = 1e-5


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (rows with a norm below 1e-5 are left as they are), float64."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.array(vectors, dtype=np.float64), where=norms > _NORM_EPSILON)


@dataclass
class _Class:
    """One row: the running sum of its embeddings, whether it may change, its examples this session."""

    weights: np.ndarray
    trainable: bool
    label: str
    shots: int = 0
    examples: list[np.ndarray] = field(default_factory=list)


class ImprintingHead:
    """An imprinting classifier over embeddings (scikit-learn conventions).

    Args:
        scale: the ``s`` of ``s * cos`` (default 48, measured).
        max_shots: optional cap on examples per class; extra ones are ignored with a warning.
        normalize_examples: L2-normalise each embedding before adding it to its class's sum
            (PyCoral adds them as given, expecting unit vectors from the model's L2Norm).

    ``fit`` starts over, ``partial_fit`` adds examples (class ids: existing trainable classes or
    the next new id), ``predict_proba`` is float ``softmax(s * cos)`` and ``saved_scores`` what
    the saved uint8 model computes.
    """

    def __init__(self, *, scale: float = DEFAULT_SCALE, max_shots: int | None = None, normalize_examples: bool = True) -> None:
        self.scale = scale
        self.max_shots = max_shots
        self.normalize_examples = normalize_examples
        self.classes_: list[_Class] | None = None
        self.embedding_dim_: int | None = None

    # ----------------------------------------------------------------- state
    def _ensure_started(self, dim: int | None = None) -> list[_Class]:
        if not float(self.scale) > 0 or not np.isfinite(float(self.scale)):
            raise TrainingError(f"the scale factor must be a positive number, got {self.scale}")
        if self.max_shots is not None and int(self.max_shots) < 1:
            raise TrainingError(f"max_shots must be at least 1, got {self.max_shots}")
        if self.classes_ is None:
            self.classes_ = []
            self.embedding_dim_ = dim
        return self.classes_

    @property
    def num_classes(self) -> int:
        return 0 if self.classes_ is None else len(self.classes_)

    @property
    def labels(self) -> list[str]:
        """Class names, in id order."""
        return [c.label for c in self.classes_ or []]

    def is_trainable(self, class_id: int) -> bool:
        return self._class(class_id).trainable

    def shots(self, class_id: int) -> int:
        """How many embeddings class ``class_id`` was imprinted from (0 for base classes)."""
        return self._class(class_id).shots

    def _class(self, class_id: int) -> _Class:
        check_fitted(self, "classes_")
        return self.classes_[check_class_id(class_id, self.num_classes)]

    # ----------------------------------------------------------------- teaching
    def fit(self, X: np.ndarray, y: np.ndarray, labels: Sequence[str] | None = None) -> ImprintingHead:
        """Start over and imprint each row of ``X`` into class ``y`` (ids 0..C-1)."""
        self.classes_ = None
        return self.partial_fit(X, y, labels)

    def partial_fit(self, X: np.ndarray, y: np.ndarray, labels: Sequence[str] | None = None) -> ImprintingHead:
        """Add examples: each class id is an existing trainable class or a new one (ids in ascending order)."""
        X = check_features(X, self.embedding_dim_)
        y = check_labels(y, len(X))
        for class_id in np.unique(y):
            label = labels[int(class_id)] if labels is not None and int(class_id) < len(labels) else None
            self.add(X[y == class_id], int(class_id), label)
        return self

    def add(self, embeddings: np.ndarray, class_id: int, label: str | None = None) -> int:
        """Add one ``[D]`` or several ``[n, D]`` embeddings to ``class_id`` (or create it as the next id).

        Returns how many were added (fewer than given when ``max_shots`` is reached).
        """
        if np.ndim(embeddings) not in (1, 2) or (self.embedding_dim_ is not None and np.shape(embeddings)[-1] != self.embedding_dim_):
            expected = self.embedding_dim_ if self.embedding_dim_ is not None else "D"
            raise TrainingError(f"Invalid weights array shape. Expected ({expected},) or (n, {expected}), "
                                f"got {list(np.shape(embeddings))}.")
        array = check_features(embeddings, self.embedding_dim_).astype(np.float64)
        classes = self._ensure_started(array.shape[1])
        class_id = check_class_id(class_id, len(classes), allow_new=True)
        if class_id < len(classes) and not classes[class_id].trainable:
            raise TrainingError("Cannot change the base model classes not trained with imprinting method!")
        if class_id == len(classes):
            classes.append(_Class(np.zeros(self.embedding_dim_), True, label if label is not None else str(class_id)))
        target = classes[class_id]
        if label is not None:
            target.label = label
        if self.max_shots is not None and target.shots + len(array) > int(self.max_shots):
            room = max(0, int(self.max_shots) - target.shots)
            warnings.warn(f"class {target.label!r} reached max_shots={self.max_shots}; {len(array) - room} embedding(s) ignored",
                          stacklevel=2)
            array = array[:room]
        if len(array):
            units = unit_rows(array)
            target.weights = target.weights + (units if self.normalize_examples else array).sum(axis=0)
            target.shots += len(array)
            target.examples.append(units)
        return len(array)

    def add_base_classes(self, rows: np.ndarray, labels: Sequence[str]) -> None:
        """Add fixed (non-trainable) classes, e.g. a cosine classifier's own rows."""
        rows = check_features(rows, self.embedding_dim_, "base class rows").astype(np.float64)
        classes = self._ensure_started(rows.shape[1])
        for row, label in zip(rows, labels):
            classes.append(_Class(row, False, label))

    def rename(self, class_id: int, label: str) -> None:
        """Give class ``class_id`` a new name."""
        self._class(class_id).label = str(label)

    def remove_class(self, class_id: int) -> None:
        """Delete class ``class_id``; the ids above it move down by one."""
        self._class(class_id)
        del self.classes_[int(class_id)]

    # ----------------------------------------------------------------- inference
    def rows(self) -> np.ndarray:
        """The unit rows ``[C, D]`` (what the saved model stores, before quantization)."""
        check_fitted(self, "classes_")
        if not self.classes_:
            raise TrainingError("the head has no classes yet; add examples first")
        return unit_rows(np.stack([c.weights for c in self.classes_])).astype(np.float32)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits ``s * cos(x, row)`` in float, shape [n, C]."""
        rows = self.rows()
        X = unit_rows(check_features(X, self.embedding_dim_))
        return float(self.scale) * (X @ rows.T)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Float probabilities ``softmax(s * cos)``, shape [n, C]."""
        return softmax(self.decision_function(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most likely class id of each row."""
        return np.argmax(self.decision_function(X), axis=1)

    def saved_scores(self, X: np.ndarray, kernel_quantization: tuple[float, int] = COSINE_QUANTIZATION) -> np.ndarray:
        """Scores as the saved uint8 model computes them: rows on the kernel grid, cosines on the 1/128 grid."""
        scale, zero = kernel_quantization
        rows = dequantize(quantize(self.rows(), scale, zero), scale, zero)
        X = unit_rows(check_features(X, self.embedding_dim_))
        cosine = fake_quantize(X @ rows.T, *COSINE_QUANTIZATION)
        return softmax(float(self.scale) * cosine)

    # ----------------------------------------------------------------- refinement
    def finetune(self, steps: int = 300, learning_rate: float = 0.1, *, prior: float = 0.01, train_scale: bool = False) -> list[float]:
        """Refine the trainable rows by full-batch gradient steps of softmax cross-entropy on ``s * cos``.

        Uses the examples added since this head was created or loaded. Rows stay unit vectors (so the
        model keeps Coral's structure and stays resumable); ``prior`` pulls each row back towards
        its imprinted direction, which keeps 1-shot classes from drifting. Returns the loss per step.
        """
        rows = self.rows().astype(np.float64)
        pairs = [(k, e) for k, c in enumerate(self.classes_) for e in c.examples]
        if not pairs:
            raise TrainingError("finetune needs the examples of this session; add examples first")
        X = np.concatenate([e for _, e in pairs])
        y = np.concatenate([np.full(len(e), k) for k, e in pairs])
        trainable = np.array([c.trainable for c in self.classes_])
        anchor = rows.copy()
        s = float(self.scale)
        losses = []
        for _ in range(int(steps)):
            cosine = X @ rows.T
            loss, d_logits = cross_entropy(s * cosine, y)
            losses.append(loss)
            grad = s * d_logits.T @ X + prior * (rows - anchor)
            if train_scale:
                s = max(1.0, s - learning_rate * float((d_logits * cosine).sum()))
            rows[trainable] = unit_rows(rows[trainable] - learning_rate * grad[trainable])
        for index, klass in enumerate(self.classes_):
            if klass.trainable:
                klass.weights = rows[index] * max(float(np.linalg.norm(klass.weights)), 1.0)
        self.scale = s
        return losses

    # ----------------------------------------------------------------- export / restore
    def export(self) -> DenseLayer:
        """The head as plain arrays: unit rows, zero bias, ``s``, and the state needed to resume."""
        rows = self.rows()
        state = {
            "norms": {str(i): float(np.linalg.norm(c.weights)) for i, c in enumerate(self.classes_) if c.trainable},
            "shots": {str(i): c.shots for i, c in enumerate(self.classes_) if c.trainable},
            "scale": float(self.scale),
        }
        return DenseLayer(weights=rows, bias=np.zeros(len(rows), np.float32), scale=float(self.scale), normalize_input=True,
                          logit_range=(-float(self.scale), float(self.scale)), labels=self.labels, state=state)

    @classmethod
    def from_layer(cls, layer: DenseLayer, *, keep_base_classes: bool = True, max_shots: int | None = None) -> ImprintingHead:
        """Continue from a saved head: rows with a stored norm are trainable, the others fixed base classes."""
        norms = {int(k): float(v) for k, v in layer.state.get("norms", {}).items()}
        shots = {int(k): int(v) for k, v in layer.state.get("shots", {}).items()}
        head = cls(scale=float(layer.state.get("scale", layer.scale)), max_shots=max_shots)
        head._ensure_started(layer.dim)
        for index, row in enumerate(np.asarray(layer.weights, dtype=np.float64)):
            trainable = index in norms
            if not trainable and not keep_base_classes:
                continue
            label = layer.labels[index] if index < len(layer.labels) else str(index)
            weights = row * (norms[index] if trainable else 1.0)
            head.classes_.append(_Class(weights, trainable, label, shots.get(index, 0)))
        return head


def head_from_sums(sums: np.ndarray, labels: Sequence[str], *, scale: float = DEFAULT_SCALE, shots: Sequence[int] | None = None,
                   trainable: Sequence[bool] | None = None, examples: Sequence[np.ndarray] | None = None) -> ImprintingHead:
    """An :class:`ImprintingHead` whose class ``i`` has the running sum ``sums[i]`` (and, for fine-tuning,
    its unit ``examples[i]`` ``[n_i, D]``): how a caller that stores examples itself rebuilds the head."""
    sums = np.asarray(sums, dtype=np.float64)
    head = ImprintingHead(scale=scale)
    head._ensure_started(sums.shape[1])
    for index, (row, label) in enumerate(zip(sums, labels)):
        klass = _Class(row.copy(), True if trainable is None else bool(trainable[index]), str(label),
                       0 if shots is None else int(shots[index]))
        if examples is not None and len(examples[index]):
            klass.examples.append(np.asarray(examples[index], dtype=np.float64))
        head.classes_.append(klass)
    return head


def leave_one_out(units: np.ndarray, y: np.ndarray, num_classes: int, scale: float = DEFAULT_SCALE) -> np.ndarray:
    """For each unit embedding, the class imprinting predicts when that example is left out of its class's sum.

    Returns ``[n]`` predicted ids; -1 where the left-out example was its class's only one and no
    other class exists to predict.
    """
    units = unit_rows(np.asarray(units, dtype=np.float64))
    y = np.asarray(y, dtype=np.int64)
    sums = np.zeros((num_classes, units.shape[1]))
    np.add.at(sums, y, units)
    logits = np.empty((len(units), num_classes))
    for i, (u, c) in enumerate(zip(units, y)):
        rows = sums.copy()
        rows[c] -= u
        norms = np.linalg.norm(rows, axis=1)
        cosine = np.where(norms > _NORM_EPSILON, rows @ u / np.maximum(norms, _NORM_EPSILON), -np.inf)
        logits[i] = scale * cosine
    predicted = np.argmax(logits, axis=1)
    predicted[~np.isfinite(logits.max(axis=1))] = -1
    return predicted
