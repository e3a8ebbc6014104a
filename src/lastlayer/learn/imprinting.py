"""Weight imprinting (Qi, Brown, Lowe: "Low-Shot Learning with Imprinted Weights").

Each class's row of the last layer is the normalised sum of its L2-normalised embeddings; the
logit is ``s * cos(embedding, row)``. Classes are added at any time from a few images, without
backprop, and a saved model can be reopened and extended. :meth:`ImprintingEngine.finetune`
optionally refines the rows with a few gradient steps while keeping Coral's model structure.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError, TrainingError
from lastlayer.learn.softmax import softmax
from lastlayer.learn.validation import check_features, check_labels
from lastlayer.model import imprinting as structure
from lastlayer.model.heads import check_extractor
from lastlayer.model.io import load_model, model_to_bytes, read_model_bytes
from lastlayer.model.labels import embedded_labels, set_embedded_labels
from lastlayer.model.names import as_text
from lastlayer.model.quant import dequantize, fake_quantize, quantize
from lastlayer.model.surgery import CutPoint, class_layer_parameters, cut, find_embedding

PathLike = Union[str, "os.PathLike[str]"]
# Chosen by measurement (benchmarks/imprint.py prints the sweep): with the MobileNet v1 extractor, the
# s minimising held-out cross-entropy of plain imprinting was 48 on flowers (25 % split) and 64 on
# clothing (its test split; CE there at 48 was within 6 % of the minimum).
DEFAULT_SCALE = 48.0
_NORM_EPSILON = 1e-5


@dataclass
class ImprintingClass:
    """One row of the last layer: the running sum of its embeddings, and whether it may change."""

    weights: np.ndarray
    trainable: bool
    shots: int = 0


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.array(vectors, dtype=np.float64), where=norms > _NORM_EPSILON)


class ImprintingEngine:
    """PyCoral-compatible imprinting engine over a model with Coral's imprinting structure.

    Args:
        model_path: a model ending in ``L2_NORMALIZATION -> (QUANTIZE) -> CONV_2D -> MUL -> RESHAPE
            -> SOFTMAX`` (Coral's ``*_l2norm_quant`` models, or any model lastlayer wrote).
        keep_classes: keep the model's existing classes; those with imprinting metadata stay
            trainable, the others are fixed base classes.
        max_shots: optional cap on embeddings per class; extra ones are ignored with a warning.

    Use :meth:`from_extractor` to start from any extractor or classifier instead.
    """

    def __init__(self, model_path: PathLike | bytes, keep_classes: bool = False, *, max_shots: int | None = None) -> None:
        source = "<model bytes>" if isinstance(model_path, (bytes, bytearray)) else str(model_path)
        try:
            model = load_model(model_path)
        except ModelError as exc:
            raise ModelError(f"Failed to open file: {source} ({exc})") from None
        self._setup(model, source, keep_classes, max_shots)

    def _setup(self, model: schema.ModelT, source: str, keep_classes: bool, max_shots: int | None) -> None:
        self._model = model
        self._info = structure.validate(model, source)
        self.max_shots = max_shots
        self._classes: list[ImprintingClass] = []
        self._labels: list[str | None] = []
        self._samples: dict[int, list[np.ndarray]] = {}
        self._extractor_bytes: bytes | None = None
        if keep_classes:
            self._load_classes()

    def _load_classes(self) -> None:
        rows = structure.class_rows(self._model, self._info)
        state = structure.read_state(self._model) or {}
        norms = {int(k): float(v) for k, v in state.get("norms", {}).items()} or structure.parse_description(
            as_text(self._model.description))
        shots = {int(k): int(v) for k, v in state.get("shots", {}).items()}
        labels = embedded_labels(self._model) or {}
        for index, row in enumerate(rows):
            trainable = index in norms
            weights = row.astype(np.float64) * (norms[index] if trainable else 1.0)
            self._classes.append(ImprintingClass(weights, trainable, shots.get(index, 0)))
            self._labels.append(labels.get(index))

    @classmethod
    def from_extractor(
        cls,
        extractor_or_classifier: PathLike | bytes | schema.ModelT,
        scale: float = DEFAULT_SCALE,
        *,
        keep_classes: bool = False,
        max_shots: int | None = None,
    ) -> ImprintingEngine:
        """Build Coral's imprinting structure on any extractor, or on a classifier cut at its embedding.

        With ``keep_classes`` and a classifier, the classifier's own classes are kept as fixed rows
        (its class layer's rows, L2-normalised); the labels stored in the classifier come along.
        """
        if isinstance(extractor_or_classifier, schema.ModelT):
            model, source, data = copy.deepcopy(extractor_or_classifier), "<model>", None
        elif isinstance(extractor_or_classifier, (bytes, bytearray)):
            data, source = bytes(extractor_or_classifier), "<model bytes>"
            model = load_model(data)
        else:
            data, source = read_model_bytes(extractor_or_classifier), str(extractor_or_classifier)
            model = load_model(data)
        base_rows, base_labels = None, {}
        try:
            check_extractor(model, source)
        except ModelError as not_an_extractor:
            try:
                point = find_embedding(model, source)  # a classifier: cut it at its embedding
            except ModelError:
                raise not_an_extractor from None
            if keep_classes:
                base_rows = _cosine_class_rows(model, point, source)
                base_labels = embedded_labels(model, data) or {}
            cut(model, point.tensor, source)
        if keep_classes and base_rows is None:
            raise ModelError(f"{source} is an embedding extractor: it has no classes to keep; drop --keep-classes")
        structure.build(model, scale, source)
        engine = cls.__new__(cls)
        engine._setup(model, source, keep_classes=False, max_shots=max_shots)
        for index, row in enumerate(base_rows if base_rows is not None else []):
            engine._classes.append(ImprintingClass(row.astype(np.float64), trainable=False))
            engine._labels.append(base_labels.get(index))
        return engine

    # ------------------------------------------------------------------ PyCoral surface
    @property
    def embedding_dim(self) -> int:
        return self._info.embedding_dim

    @property
    def num_classes(self) -> int:
        return len(self._classes)

    @property
    def scale_factor(self) -> float:
        """The ``s`` of ``s * cos``."""
        return self._info.scale_factor

    def serialize_extractor_model(self) -> bytes:
        """The model up to the L2Norm output (the head really removed): feed its output to :meth:`train`."""
        if self._extractor_bytes is None:
            self._extractor_bytes = model_to_bytes(structure.extractor_part(self._model, self._info))
        return self._extractor_bytes

    def train(self, embedding: np.ndarray, class_id: int) -> None:
        """Add one embedding ``[D]`` or several ``[n, D]`` to class ``class_id``.

        ``class_id`` must be a trainable class or exactly :attr:`num_classes` (a new class).
        """
        array = np.asarray(embedding, dtype=np.float64)
        if array.ndim == 1:
            array = array[np.newaxis]
        if array.ndim != 2 or array.shape[1] != self.embedding_dim or len(array) == 0:
            raise TrainingError(f"Invalid weights array shape. Expected ({self.embedding_dim},) or (n, {self.embedding_dim}), got {list(np.shape(embedding))}.")
        if not np.isfinite(array).all():
            raise TrainingError("embeddings contain NaN or infinite values; check the extractor output")
        class_id = int(class_id)
        if class_id < 0:
            raise TrainingError(f"class id {class_id} is negative; class ids start at 0")
        if class_id < self.num_classes and not self._classes[class_id].trainable:
            raise TrainingError("Cannot change the base model classes not trained with imprinting method!")
        if class_id > self.num_classes:
            raise TrainingError(f"The class index of a new category is too large! (got {class_id}, the next new class is {self.num_classes})")
        if class_id == self.num_classes:
            self._classes.append(ImprintingClass(np.zeros(self.embedding_dim), trainable=True))
            self._labels.append(None)
        target = self._classes[class_id]
        if self.max_shots is not None and target.shots + len(array) > self.max_shots:
            room = max(0, self.max_shots - target.shots)
            warnings.warn(f"class {class_id} reached max_shots={self.max_shots}; {len(array) - room} embedding(s) ignored", stacklevel=2)
            array = array[:room]
        target.weights = target.weights + array.sum(axis=0)
        target.shots += len(array)
        if len(array):
            self._samples.setdefault(class_id, []).append(_unit(array))

    def serialize_model(self) -> bytes:
        """The model with one row per class, as ``.tflite`` bytes (PyCoral's edits and metadata)."""
        if not self._classes:
            raise TrainingError("Model is not trained.")
        units = self.class_rows()
        norms = {i: float(np.linalg.norm(c.weights)) for i, c in enumerate(self._classes) if c.trainable}
        structure.write_classes(self._model, self._info, units, norms)
        structure.write_state(self._model, {
            "norms": {str(i): n for i, n in norms.items()},
            "shots": {str(i): c.shots for i, c in enumerate(self._classes) if c.trainable},
            "scale": self.scale_factor,
        })
        set_embedded_labels(self._model, self.labels)
        return model_to_bytes(self._model)

    # ------------------------------------------------------------------ beyond PyCoral
    @property
    def labels(self) -> list[str]:
        """Class names (the id as text where none was given)."""
        return [label if label is not None else str(i) for i, label in enumerate(self._labels)]

    def set_label(self, class_id: int, name: str) -> None:
        """Name class ``class_id``; the name is stored in the saved model."""
        self._labels[class_id] = name

    def is_trainable(self, class_id: int) -> bool:
        return self._classes[class_id].trainable

    def shots(self, class_id: int) -> int:
        """How many embeddings class ``class_id`` was imprinted from (0 for base classes)."""
        return self._classes[class_id].shots

    def class_rows(self) -> np.ndarray:
        """The unit rows ``[C, D]`` (what the saved model stores, before quantization)."""
        return _unit(np.stack([c.weights for c in self._classes])).astype(np.float32)

    def fit(self, X: np.ndarray, y: np.ndarray, labels: Sequence[str] | None = None) -> ImprintingEngine:
        """Imprint each row of ``X`` into class ``y`` (ids existing or next, in ascending order)."""
        X = check_features(X, self.embedding_dim)
        y = check_labels(y, len(X))
        for class_id in np.unique(y):
            self.train(X[y == class_id], int(class_id))
            if labels is not None:
                self.set_label(int(class_id), labels[int(class_id)])
        return self

    def remove_class(self, class_id: int) -> None:
        """Delete class ``class_id``; the ids above it move down by one."""
        if not 0 <= class_id < self.num_classes:
            raise TrainingError(f"class id {class_id} does not exist (the model has {self.num_classes} classes)")
        del self._classes[class_id]
        del self._labels[class_id]
        self._samples = {(k - 1 if k > class_id else k): v for k, v in self._samples.items() if k != class_id}

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits as the saved model computes them: ``s * cos``, with the cosine on the 1/128 grid."""
        X = check_features(X, self.embedding_dim)
        info = self._info
        rows = dequantize(quantize(self.class_rows(), info.kernel_scale, info.kernel_zero_point), info.kernel_scale, info.kernel_zero_point)
        cosine = fake_quantize(X @ rows.T, structure.COSINE_SCALE, structure.COSINE_ZERO)
        return self.scale_factor * cosine

    def run_inference(self, X: np.ndarray) -> np.ndarray:
        """Class scores ``[n, C]`` for L2-normalised embeddings (the extractor model's outputs)."""
        return softmax(self.decision_function(X))

    predict_proba = run_inference

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.decision_function(X), axis=1)

    def finetune(self, steps: int = 300, learning_rate: float = 0.1, *, prior: float = 0.01, train_scale: bool = False) -> list[float]:
        """Refine the trainable rows by full-batch gradient steps of softmax cross-entropy on ``s * cos``.

        Uses the embeddings given to :meth:`train` in this session. Rows stay unit vectors (so the
        model keeps Coral's structure and stays resumable); ``prior`` pulls each row back towards
        its imprinted direction, which keeps 1-shot classes from drifting. Returns the loss per step.
        """
        if not self._samples:
            raise TrainingError("finetune needs the embeddings of this session; call train() first")
        X = np.concatenate([np.concatenate(v) for v in self._samples.values()])
        y = np.concatenate([np.full(sum(len(a) for a in v), k) for k, v in self._samples.items()])
        trainable = np.array([c.trainable for c in self._classes])
        rows = self.class_rows().astype(np.float64)
        anchor = rows.copy()
        norms = np.array([np.linalg.norm(c.weights) for c in self._classes])
        s = self.scale_factor
        losses = []
        n = len(X)
        for _ in range(int(steps)):
            logits = s * X @ rows.T
            probs = softmax(logits)
            losses.append(float(-np.log(probs[np.arange(n), y] + 1e-12).mean()))
            d_logits = probs
            d_logits[np.arange(n), y] -= 1.0
            d_logits /= n
            grad = s * d_logits.T @ X + prior * (rows - anchor)
            if train_scale:
                s = max(1.0, s - learning_rate * float((d_logits * (X @ rows.T)).sum()))
            rows[trainable] = _unit(rows[trainable] - learning_rate * grad[trainable])
        for index, klass in enumerate(self._classes):
            if klass.trainable:
                klass.weights = rows[index] * max(norms[index], 1.0)
        if train_scale:
            self._info.scale_factor = float(s)
            structure.set_scale_factor(self._model, self._info, s)
        return losses


# A class layer can become fixed imprinted rows only if it already ranks classes by cosine:
# equal row norms and no bias (then logit = |w| |x| cos). These bounds allow rounding noise only.
_MAX_NORM_RATIO = 1.1
_MAX_RELATIVE_BIAS = 0.05


def _cosine_class_rows(model: schema.ModelT, point: CutPoint, source: str) -> np.ndarray:
    """A classifier's class-layer rows, L2-normalised ``[C, D]``, if the layer is a cosine classifier.

    Otherwise a :class:`ModelError` says why its classes cannot be kept.
    """
    weights, bias = class_layer_parameters(model, point)
    norms = np.linalg.norm(weights, axis=1)
    median = float(np.median(norms))
    if norms.min() <= _NORM_EPSILON or norms.max() / norms.min() > _MAX_NORM_RATIO or np.abs(bias).max() > _MAX_RELATIVE_BIAS * median:
        raise ModelError(
            f"{source}: its classes cannot be kept as imprinted classes because its class layer is not a cosine classifier "
            f"(row norms {norms.min():.2f}..{norms.max():.2f}, biases up to {np.abs(bias).max():.2f}), so imprinted classes "
            "would outrank them; imprint without --keep-classes, or start from a Coral L2-norm imprinting model"
        )
    return weights / norms[:, None]
