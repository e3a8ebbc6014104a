"""Keep a classifier's own classes and append new ones from a few examples each, as NumPy math.

The original class layer (rows ``W [C, D]``, biases ``b [C]``) is never changed. New class ``k`` gets
the row ``s * u_k`` and the bias ``b_new``, so its logit is ``s * (u_k . x) + b_new``:

* ``u_k``: the mean of the class's embeddings with the common all-ones component removed (each
  vector minus its own mean), L2-normalised. Embeddings after ReLU6 share a large component along
  the all-ones direction that trained rows are nearly orthogonal to; a raw class mean therefore
  scores high on every image and takes the original classes' images away.
* ``s = strength * median |W_c - mean(W_c)|``: one scale for all new rows, in the units of the
  original logits (a typical original row's norm, centred the same way).
* ``b_new = median(b) - s * threshold * m``, with ``m`` the median norm of the centred example
  embeddings: the original biases' typical value, lowered so that a new class outscores the original
  model only where an image's response to its row exceeds ``threshold * m``.
* ``strength`` and ``threshold`` follow the number of examples (see :data:`PROTOTYPE` and
  :data:`CLASS_MEAN`) unless given.

:class:`KeepClassesHead` knows no file format: the original layer comes in as arrays (and the
range of logits the saved model can represent, if any), :meth:`KeepClassesHead.export` hands the
new rows, labels and the state to resume from to the model writer as
:class:`~lastlayer.layer.AppendedClasses`, and :meth:`KeepClassesHead.restore` continues from it.
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

import numpy as np

from lastlayer.errors import TrainingError
from lastlayer.layer import AppendedClasses
from lastlayer.learn.losses import softmax
from lastlayer.learn.threads import blas_threads
from lastlayer.learn.validation import check_class_id, check_features, check_labels

# (strength, threshold) for classes built from few examples (a median of at most FEW_SHOTS per new
# class) and from many (at least MANY_SHOTS); in between, interpolated. Chosen by measurement
# (benchmarks/keep_classes.py prints the table; the figures are in the README): a row from one or two
# examples is a prototype, best made to fire sharply near them and not elsewhere (a steep row and a
# threshold), which is also what PyCoral's keep-classes test expects of an ordinary classifier; a mean
# of several examples generalises, and a gentler row without threshold lost less to the top of the
# quantized logits' range (new logits that saturate there tie, and the first of them wins).
PROTOTYPE = (1.5, 0.15)
CLASS_MEAN = (0.8, 0.0)
FEW_SHOTS, MANY_SHOTS = 2, 5
# How far above the highest new logit at a new class's mean embedding the quantized logits' range
# should reach (in logits), when the range may move up (see KeepClassesHead.logit_window).
HEADROOM = 2.0
STATE_METHOD = "keep_classes"
STATE_VERSION = 1

# A new class "looks like" an original class when the original model ranks at least half of its
# examples first as that class, with at least this mean score on them.
LOOKALIKE_MIN_SCORE = 0.5

Labels = Union[Sequence[str], Mapping[int, str]]


def centred(vectors: np.ndarray) -> np.ndarray:
    """Each row minus its own mean: the component along the all-ones direction removed."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors - vectors.mean(axis=-1, keepdims=True)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 1e-12)


def _encode(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f8").tobytes()).decode("ascii")


def _decode(text: str, length: int | None = None) -> np.ndarray:
    try:
        values = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype="<f8").astype(np.float64)
    except (ValueError, TypeError, AttributeError):
        raise TrainingError("the stored state of the appended classes is damaged (a vector is not base64 float64); "
                            "imprint the new classes again from their photos", subject="resume") from None
    if length is not None and len(values) != length:
        raise TrainingError(f"the stored state of the appended classes holds a vector of {len(values)} values, not {length}; "
                            "imprint the new classes again from their photos", subject="resume")
    return values


@dataclass
class _NewClass:
    """One appended class: the running sum of its embeddings, their centred norms, this session's examples."""

    label: str
    total: np.ndarray
    count: int = 0
    norms: list[float] = field(default_factory=list)
    examples: list[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True)
class ShotSummary:
    """How the original classes fared on one new class's examples of this session.

    Attributes:
        class_id, label: the new class.
        shots: its examples in this session.
        original_top: the original class the original model ranks first most often on them.
        original_top_count: on how many of the examples it does.
        original_top_score: the original model's mean score for that class on those examples.
        kept_by_original: how many of the examples the model with the new classes still ranks first as
            an original class (the new class did not win on its own example).
        looks_like_original: the original model ranks at least half of the examples first as one class
            with a mean score of at least :data:`LOOKALIKE_MIN_SCORE`.
    """

    class_id: int
    label: str
    shots: int
    original_top: str
    original_top_count: int
    original_top_score: float
    kept_by_original: int
    looks_like_original: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def warning(self) -> str | None:
        """One line when the class looks like an original one or loses on its own examples, else ``None``."""
        parts = []
        if self.looks_like_original:
            parts.append(f"new class {self.label!r} looks like the original class {self.original_top!r}: the original model "
                         f"ranks {self.original_top_count} of its {self.shots} example(s) first as it "
                         f"(mean score {self.original_top_score:.2f})")
        if self.kept_by_original:
            parts.append(f"{self.kept_by_original} of the {self.shots} example(s) of {self.label!r} still score highest as an "
                         "original class")
        if not parts:
            return None
        return "; ".join(parts) + "; photos like them may go to the original class: add more varied photos of the new class"


class KeepClassesHead:
    """A classifier's own class layer, kept fixed, with new classes appended (scikit-learn conventions).

    Args:
        weights: the original rows ``[C, D]`` (dequantized).
        bias: the original biases ``[C]``.
        labels: the original class names (``C``; ids as text when ``None``).
        strength: ``s`` in units of a typical original row's norm (see the module docstring);
            ``None``: by the number of examples.
        threshold: how far above zero an image's response to a new row must be for the new class to
            reach the original biases' typical value, as a fraction of the examples' typical centred
            norm; ``None``: by the number of examples.
        logit_range: the (min, max) logit the original model can represent (its logits' quantization);
            ``None``: no limit (float).
        max_logit_shift: how far the joined logits' range may move up from ``logit_range`` (0: not at
            all). New logits above the range's top saturate there and tie; in front of a softmax, a
            range moved up by whole quantization steps leaves the original logits as they are, except
            those below its new bottom, whose probabilities round to 0 anyway.

    Class ids are the model's: ``0 .. C-1`` the original classes (fixed), ``C ..`` the new ones, added
    in order. ``fit`` drops the new classes and starts over, ``partial_fit`` / ``add`` add examples to a
    new class or start the next one.
    """

    def __init__(self, weights: np.ndarray, bias: np.ndarray, labels: Labels | None = None, *,
                 strength: float | None = None, threshold: float | None = None,
                 logit_range: tuple[float, float] | None = None, max_logit_shift: float = 0.0) -> None:
        check_features(weights, name="the original class rows")
        weights = np.asarray(weights, dtype=np.float64)  # the original rows in full precision
        bias = np.asarray(bias, dtype=np.float64).reshape(-1)
        if bias.shape != (len(weights),) or not np.isfinite(bias).all():
            raise TrainingError(f"the original class layer has {len(weights)} rows but {bias.size} biases (or non-finite ones)")
        if strength is not None and (not float(strength) > 0 or not np.isfinite(float(strength))):
            raise TrainingError(f"the strength of new classes must be a positive number, got {strength}", subject="strength")
        if threshold is not None and not 0 <= float(threshold) < 1:
            raise TrainingError(f"the threshold of new classes must be in [0, 1), got {threshold}", subject="threshold")
        if logit_range is not None and not logit_range[0] < logit_range[1]:
            raise TrainingError(f"the logit range {logit_range} is empty")
        self.weights = weights
        self.bias = bias
        self.base_labels = _label_list(labels, len(weights))
        self.strength = None if strength is None else float(strength)
        self.threshold = None if threshold is None else float(threshold)
        self.logit_range = None if logit_range is None else (float(logit_range[0]), float(logit_range[1]))
        self.max_logit_shift = max(0.0, float(max_logit_shift))
        self.new_classes_: list[_NewClass] = []
        self._row_norm = float(np.median(np.linalg.norm(centred(weights), axis=1)))

    # ----------------------------------------------------------------- state
    @property
    def base_classes(self) -> int:
        """How many original classes there are (the first ids)."""
        return len(self.weights)

    @property
    def num_classes(self) -> int:
        return self.base_classes + len(self.new_classes_)

    @property
    def embedding_dim(self) -> int:
        return int(self.weights.shape[1])

    @property
    def labels(self) -> list[str]:
        """Every class name in id order, the original classes first."""
        return self.base_labels + [c.label for c in self.new_classes_]

    def is_trainable(self, class_id: int) -> bool:
        """True for the new classes; the original ones are fixed."""
        return check_class_id(class_id, self.num_classes) >= self.base_classes

    def shots(self, class_id: int) -> int:
        """How many embeddings class ``class_id`` was built from (0 for the original classes)."""
        class_id = check_class_id(class_id, self.num_classes)
        return 0 if class_id < self.base_classes else self.new_classes_[class_id - self.base_classes].count

    def settings(self) -> tuple[float, float]:
        """(strength, threshold) in use: as given, or by the median number of examples per new class."""
        counts = [c.count for c in self.new_classes_]
        shots = float(np.median(counts)) if counts else 1.0
        weight = float(np.clip((MANY_SHOTS - shots) / (MANY_SHOTS - FEW_SHOTS), 0.0, 1.0))
        auto = [mean + weight * (prototype - mean) for prototype, mean in zip(PROTOTYPE, CLASS_MEAN)]
        return (auto[0] if self.strength is None else self.strength, auto[1] if self.threshold is None else self.threshold)

    @property
    def scale(self) -> float:
        """``s``: the norm of every new row."""
        return self.settings()[0] * self._row_norm

    @property
    def new_bias(self) -> float:
        """The bias of every new row (``median(b) - s * threshold * m``)."""
        norms = [n for c in self.new_classes_ for n in c.norms]
        typical = float(np.median(norms)) if norms else 0.0
        return float(np.median(self.bias)) - self.scale * self.settings()[1] * typical

    # ----------------------------------------------------------------- teaching
    def fit(self, X: np.ndarray, y: np.ndarray, labels: Labels | None = None) -> KeepClassesHead:
        """Drop the new classes and append ``X``'s classes ``y`` (ids from ``base_classes`` on)."""
        self.new_classes_ = []
        return self.partial_fit(X, y, labels)

    def partial_fit(self, X: np.ndarray, y: np.ndarray, labels: Labels | None = None) -> KeepClassesHead:
        """Add examples: each id is a new class added before or the next new id (ascending)."""
        X = check_features(X, self.embedding_dim)
        y = check_labels(y, len(X))
        for class_id in np.unique(y):
            name = None
            if labels is not None:
                name = labels.get(int(class_id)) if isinstance(labels, Mapping) else \
                    (labels[int(class_id)] if int(class_id) < len(labels) else None)
            self.add(X[y == class_id], int(class_id), name)
        return self

    def add(self, embeddings: np.ndarray, class_id: int, label: str | None = None) -> int:
        """Add one ``[D]`` or several ``[n, D]`` embeddings to new class ``class_id`` (or start it as the next id).

        Returns how many were added.
        """
        if np.ndim(embeddings) not in (1, 2) or np.shape(embeddings)[-1] != self.embedding_dim:
            raise TrainingError(f"Invalid weights array shape. Expected ({self.embedding_dim},) or (n, {self.embedding_dim}), "
                                f"got {list(np.shape(embeddings))}.")
        array = check_features(embeddings, self.embedding_dim).astype(np.float64)
        class_id = check_class_id(class_id, self.num_classes, allow_new=True)
        if class_id < self.base_classes:
            raise TrainingError("Cannot change the base model classes not trained with imprinting method!")
        index = class_id - self.base_classes
        if index == len(self.new_classes_):
            self.new_classes_.append(_NewClass(str(label) if label is not None else str(class_id), np.zeros(self.embedding_dim)))
        target = self.new_classes_[index]
        if label is not None:
            target.label = str(label)
        target.total = target.total + array.sum(axis=0)
        target.count += len(array)
        target.norms.extend(float(n) for n in np.linalg.norm(centred(array), axis=1))
        target.examples.append(array)
        return len(array)

    def rename(self, class_id: int, label: str) -> None:
        """Give new class ``class_id`` another name."""
        if not self.is_trainable(class_id):
            raise TrainingError("Cannot change the base model classes not trained with imprinting method!")
        self.new_classes_[int(class_id) - self.base_classes].label = str(label)

    # ----------------------------------------------------------------- inference
    def new_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The appended rows ``[K, D]`` and biases ``[K]``."""
        if not self.new_classes_:
            raise TrainingError("no new classes yet; add examples first")
        means = np.stack([c.total / c.count for c in self.new_classes_])
        return self.scale * _unit(centred(means)), np.full(len(means), self.new_bias)

    def logit_window(self) -> tuple[float, float] | None:
        """The range the joined logits are represented in: ``logit_range`` moved up (by at most
        ``max_logit_shift``) until it reaches :data:`HEADROOM` above the highest logit a new class has
        at its own mean embedding; ``None`` for float."""
        if self.logit_range is None:
            return None
        low, high = self.logit_range
        if not self.new_classes_ or not self.max_logit_shift:
            return low, high
        rows, bias = self.new_rows()
        means = np.stack([c.total / c.count for c in self.new_classes_])
        peak = float(np.max(np.sum(means * rows, axis=1) + bias))
        shift = float(np.clip(peak + HEADROOM - high, 0.0, self.max_logit_shift))
        return low + shift, high + shift

    def _logits(self, X: np.ndarray, rows: np.ndarray | None = None, bias: np.ndarray | None = None) -> np.ndarray:
        with blas_threads(len(X) * self.embedding_dim * self.num_classes):
            old = X @ self.weights.T + self.bias
            if rows is None:
                rows, bias = self.new_rows() if self.new_classes_ else (np.zeros((0, self.embedding_dim)), np.zeros(0))
            new = X @ rows.T + bias
        window = self.logit_window()
        if window is not None:  # as the saved model: original logits in their range, then both in the joined one
            old = np.clip(np.clip(old, *self.logit_range), *window)
            new = np.clip(new, *window)
        return np.concatenate([old, new], axis=1)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits ``[n, C + K]``: the original layer's, then the new classes' (as the saved model represents them)."""
        return self._logits(check_features(X, self.embedding_dim).astype(np.float64))

    def original_decision_function(self, X: np.ndarray) -> np.ndarray:
        """The original layer's logits ``[n, C]`` (clipped to ``logit_range``): what the model did before."""
        X = check_features(X, self.embedding_dim).astype(np.float64)
        logits = X @ self.weights.T + self.bias
        return logits if self.logit_range is None else np.clip(logits, *self.logit_range)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities ``softmax(logits)``, shape ``[n, C + K]``."""
        return softmax(self.decision_function(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most likely class id of each row (original or new)."""
        return np.argmax(self.decision_function(X), axis=1)

    def leave_one_out(self) -> tuple[np.ndarray, np.ndarray]:
        """(true ids, predicted ids) for this session's examples of new classes with at least 2 embeddings,
        each predicted with its own class's row rebuilt without it."""
        truth, predicted = [], []
        rows, bias = self.new_rows() if self.new_classes_ else (None, None)
        for index, klass in enumerate(self.new_classes_):
            if klass.count < 2:
                continue
            for x in (x for batch in klass.examples for x in batch):
                held_out = rows.copy()
                held_out[index] = self.scale * _unit(centred((klass.total - x) / (klass.count - 1)))
                truth.append(self.base_classes + index)
                predicted.append(int(np.argmax(self._logits(x[np.newaxis], held_out, bias)[0])))
        return np.array(truth, dtype=np.int64), np.array(predicted, dtype=np.int64)

    def shot_report(self) -> list[ShotSummary]:
        """For each new class with examples in this session, how the original classes fared on them."""
        summaries = []
        for index, klass in enumerate(self.new_classes_):
            if not klass.examples:
                continue
            X = np.concatenate(klass.examples)
            original = softmax(self.original_decision_function(X))
            tops = np.argmax(original, axis=1)
            top, count = Counter(tops.tolist()).most_common(1)[0]
            score = float(original[tops == top, top].mean())
            kept = int(np.sum(self.predict(X) < self.base_classes))
            summaries.append(ShotSummary(self.base_classes + index, klass.label, len(X), self.base_labels[top], int(count),
                                         score, kept, bool(count * 2 >= len(X) and score >= LOOKALIKE_MIN_SCORE)))
        return summaries

    # ----------------------------------------------------------------- export / restore
    def state(self) -> dict[str, Any]:
        """What a later session needs to add classes or examples: JSON-able."""
        return {
            "method": STATE_METHOD, "version": STATE_VERSION, "strength": self.strength, "threshold": self.threshold,
            "base_classes": self.base_classes,
            "classes": [{"label": c.label, "count": c.count, "sum": _encode(c.total), "norms": _encode(c.norms)}
                        for c in self.new_classes_],
        }

    def export(self) -> AppendedClasses:
        """The new rows, all labels and the state, for the model writer."""
        rows, bias = self.new_rows()
        return AppendedClasses(weights=rows.astype(np.float32), bias=bias.astype(np.float32), labels=self.labels, state=self.state(),
                               logit_range=self.logit_window())

    @classmethod
    def from_class_layer(cls, layer: Any, labels: Labels | None = None) -> KeepClassesHead:
        """A head over a classifier's class layer as the model reader hands it over (anything with ``weights``,
        ``bias``, ``labels``, ``logit_range``, ``max_logit_shift`` and ``state``, e.g.
        :class:`lastlayer.model.keep.ClassLayer`), with the classes appended before when ``state`` holds them.
        ``labels`` overrides the original classes' names."""
        names = layer.labels if labels is None else labels
        if layer.state is not None:
            return cls.restore(layer.weights, layer.bias, names, layer.state, logit_range=layer.logit_range,
                               max_logit_shift=layer.max_logit_shift)
        return cls(layer.weights, layer.bias, names, logit_range=layer.logit_range, max_logit_shift=layer.max_logit_shift)

    @classmethod
    def restore(cls, weights: np.ndarray, bias: np.ndarray, labels: Labels | None, state: Mapping[str, Any],
                logit_range: tuple[float, float] | None = None, max_logit_shift: float = 0.0) -> KeepClassesHead:
        """Continue from :meth:`state` stored with a model: the same original layer, the same new classes."""
        if state.get("method") != STATE_METHOD or int(state.get("version", 0)) != STATE_VERSION:
            raise TrainingError(f"the stored state is not lastlayer's keep-classes state version {STATE_VERSION}; "
                                "imprint the new classes again from their photos", subject="resume")
        head = cls(weights, bias, labels, strength=state.get("strength"), threshold=state.get("threshold"),
                   logit_range=logit_range, max_logit_shift=max_logit_shift)
        if int(state.get("base_classes", -1)) != head.base_classes:
            raise TrainingError(f"the stored state was made for {state.get('base_classes')} original classes, the model has "
                                f"{head.base_classes}", subject="resume")
        for entry in state.get("classes", []):
            count = int(entry["count"])
            norms = _decode(entry["norms"], count)
            head.new_classes_.append(_NewClass(str(entry["label"]), _decode(entry["sum"], head.embedding_dim), count,
                                               norms.tolist()))
        return head


def _label_list(labels: Labels | None, count: int) -> list[str]:
    if labels is None:
        return [str(i) for i in range(count)]
    if isinstance(labels, Mapping):
        return [str(labels.get(i, i)) for i in range(count)]
    if len(labels) != count:
        raise TrainingError(f"{len(labels)} labels for {count} original classes; give one label per class", subject="labels")
    return [str(label) for label in labels]
