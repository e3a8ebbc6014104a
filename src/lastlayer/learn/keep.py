"""Keep a classifier's own classes and append new ones from a few examples each, as NumPy math.

The original class layer (rows ``W [C, D]``, biases ``b [C]``) is never changed. New class ``k``
scores relative to the picture's own best original logit, through a gate::

    logit_k = max_c(W_c . x + b_c) + g(r_k),   r_k = s * (cos_k - tau_k),   g(r) = r (r >= 0), steepness * r (r < 0)

so a new class outscores every original class exactly when the picture is more similar to it than
its threshold ``tau_k``, and among the new classes the most similar one wins, as when imprinting
them alone. How large the original logits are does not enter the decision (measured on four
MobileNets with the best threshold chosen in hindsight: adding the original model's top logit,
margin or top probability to the similarity did not take more new-class pictures at the same
agreement with the original model; comparing ``s * cos + b`` with the original logits, as the first
version of this rule did, took up to 0.07 fewer).

* ``cos_k``: the cosine between the picture's embedding and the class's row, both with their common
  all-ones component removed (each vector minus its own mean). Embeddings after ReLU6 share a large
  component along the all-ones direction; left in, it makes every picture look alike.
* The row ``u_k``: the class's mean embedding, centred so, L2-normalised.
* ``tau_k = factor(n_k) * affinity``: ``affinity`` is how similar a picture is, in this model, to
  concepts it does not show: the 99th percentile of an example's cosines with the original rows
  (centred and normalised too), averaged over every new-class example. ``factor`` is
  :data:`THRESHOLD_FACTOR` (1 example .. :data:`MANY_SHOTS` or more, interpolated). A threshold
  learned from the examples' similarities to their own class (as the unknown rule does) bounds how
  many of the class's own pictures are rejected, not how many other pictures are taken: measured on
  four MobileNets at 5 examples, the 10th percentile of the examples' leave-one-out similarities
  kept the original top-1 on 0.87-0.997 of other pictures, this threshold on 0.993 or more.
* ``s``: in float the top of :data:`SCALE_RANGE`; quantized, as steep as the joined range allows:
  a picture the original model is as sure of as of the class's surest example, at the cosine new
  pictures of the class reach one time in ten (:data:`REACH`), must stay below the range's top
  (above it new logits saturate and tie).
* ``steepness``: below its threshold a new class falls faster, so that pictures of none of the new
  classes keep their original probabilities (at cosine 0 a new class sits at least :data:`DEPTH`
  logits below the best original one).

:class:`KeepClassesHead` knows no file format: the original layer comes in as arrays (and the
range of logits the saved model can represent, if any), :meth:`KeepClassesHead.export` hands the
new rows, the steepness, labels and the state to resume from to the model writer as
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

# Chosen by measurement (benchmarks/keep_classes.py prints the table; the figures are in the README):
# about the lowest factors at which the original model's top-1 stayed >= 0.99 (5 and 10 examples per
# class) and >= 0.995 (1 example) on pictures of none of the new classes, on each of four MobileNets
# (in float, 1.8 gave 0.992-0.996 at 5 and 10 examples; 2.0 gave 0.995-0.998 at 1).
AFFINITY_QUANTILE = 0.99
THRESHOLD_FACTOR = (2.0, 1.8)  # (1 example, MANY_SHOTS or more)
MANY_SHOTS = 5
# s: at least, at most (the top also in float). The quantized logits' step limits how finely new classes
# are told apart (step / s in cosine): below 20 the MobileNet v1 models lost up to 0.007 of new-class top-1.
SCALE_RANGE = (4.0, 32.0)
# The cosine to its row that new pictures of a class with n examples exceed 1 time in 10:
# REACH[0] + REACH[1] * ln(n), at most REACH[2] (measured on four MobileNets: 0.48-0.50 at 1 example,
# 0.55-0.58 at 2, 0.63-0.66 at 5, 0.66-0.70 at 10, clothing and flowers).
REACH = (0.5, 0.08, 0.8)
# At cosine 0 a new class sits at least DEPTH logits below the best original one (e^-8: its probability
# rounds to 0 in uint8); the steepness that takes is at most MAX_STEEPNESS.
DEPTH = 8.0
MAX_STEEPNESS = 16.0
STATE_METHOD = "keep_classes"
STATE_VERSION = 2

# A new class "looks like" an original class when the original model ranks at least half of its
# examples first as that class, with at least this mean score on them.
LOOKALIKE_MIN_SCORE = 0.5

Labels = Union[Sequence[str], Mapping[int, str]]


def centred(vectors: np.ndarray) -> np.ndarray:
    """Each row minus its own mean: the component along the all-ones direction removed."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors - vectors.mean(axis=-1, keepdims=True)


def centred_units(vectors: np.ndarray) -> np.ndarray:
    """Each row centred (:func:`centred`), then L2-normalised (rows of zeros stay zero)."""
    vectors = centred(vectors)
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
    """One appended class: the running sums of its embeddings and of their affinities, the highest original
    logit any of them got, this session's examples."""

    label: str
    total: np.ndarray
    count: int = 0
    affinity: float = 0.0
    peak: float = -np.inf
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
        threshold: ``tau`` of every new class, a cosine in [0, 1): lower takes more pictures for the
            new classes (also pictures of none of them); ``None``: from the examples (module docstring).
        scale: ``s``, the slope of a new logit above its threshold; ``None``: as steep as the
            logits' range allows.
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
                 threshold: float | None = None, scale: float | None = None,
                 logit_range: tuple[float, float] | None = None, max_logit_shift: float = 0.0) -> None:
        check_features(weights, name="the original class rows")
        weights = np.asarray(weights, dtype=np.float64)  # the original rows in full precision
        bias = np.asarray(bias, dtype=np.float64).reshape(-1)
        if bias.shape != (len(weights),) or not np.isfinite(bias).all():
            raise TrainingError(f"the original class layer has {len(weights)} rows but {bias.size} biases (or non-finite ones)")
        if threshold is not None and not 0 <= float(threshold) < 1:
            raise TrainingError(f"the threshold of new classes must be a cosine in [0, 1), got {threshold}", subject="threshold")
        if scale is not None and (not float(scale) > 0 or not np.isfinite(float(scale))):
            raise TrainingError(f"the scale of new classes must be a positive number, got {scale}", subject="scale")
        if logit_range is not None and not logit_range[0] < logit_range[1]:
            raise TrainingError(f"the logit range {logit_range} is empty")
        self.weights = weights
        self.bias = bias
        self.base_labels = _label_list(labels, len(weights))
        self.threshold = None if threshold is None else float(threshold)
        self.given_scale = None if scale is None else float(scale)
        self.logit_range = None if logit_range is None else (float(logit_range[0]), float(logit_range[1]))
        self.max_logit_shift = max(0.0, float(max_logit_shift))
        self.new_classes_: list[_NewClass] = []
        self._original_units = centred_units(weights)

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

    def affinity(self, X: np.ndarray) -> np.ndarray:
        """``[n]``: how similar each embedding is to the original classes' rows (the 99th percentile of its
        cosines with them, all centred): the unit of the new classes' thresholds."""
        units = centred_units(check_features(X, self.embedding_dim))
        with blas_threads(len(units) * self.embedding_dim * self.base_classes):
            return np.quantile(units @ self._original_units.T, AFFINITY_QUANTILE, axis=1)

    @property
    def thresholds(self) -> np.ndarray:
        """``tau`` of each new class (``[K]``): as given, or ``factor(examples) * mean affinity``."""
        if self.threshold is not None:
            return np.full(len(self.new_classes_), self.threshold)
        counts = np.array([c.count for c in self.new_classes_], dtype=np.float64)
        mean_affinity = sum(c.affinity for c in self.new_classes_) / max(1.0, counts.sum())
        few, many = THRESHOLD_FACTOR
        weight = np.clip((MANY_SHOTS - counts) / (MANY_SHOTS - 1), 0.0, 1.0)
        return (many + weight * (few - many)) * mean_affinity

    def _means(self) -> np.ndarray:
        return np.stack([c.total / c.count for c in self.new_classes_])

    def _reach(self) -> np.ndarray:
        """How far above its threshold a new picture of each class typically comes at most (``[K]``, >= 0.05)."""
        counts = np.array([c.count for c in self.new_classes_], dtype=np.float64)
        cosine = np.minimum(REACH[0] + REACH[1] * np.log(counts), REACH[2])
        return np.maximum(cosine - self.thresholds, 0.05)

    @property
    def scale(self) -> float:
        """``s``: as given; in float the top of :data:`SCALE_RANGE`; quantized, the largest slope (within
        :data:`SCALE_RANGE`) at which, for every class, a picture the original model is as sure of as of
        the class's surest example and as close to the class as :data:`REACH` stays within the joined range."""
        if self.given_scale is not None:
            return self.given_scale
        if self.logit_range is None or not self.new_classes_:
            return SCALE_RANGE[1]
        peaks = np.minimum([c.peak for c in self.new_classes_], self.logit_range[1])
        room = self.logit_range[1] + self.max_logit_shift - peaks
        return float(np.clip(np.min(room / self._reach()), *SCALE_RANGE))

    @property
    def steepness(self) -> float:
        """How many times faster a new logit falls below its threshold than it rises above it."""
        lowest = float(np.min(self.thresholds)) if self.new_classes_ else 0.0
        if lowest <= 0:
            return MAX_STEEPNESS
        return float(np.clip(DEPTH / (self.scale * lowest), 1.0, MAX_STEEPNESS))

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
        target.affinity += float(self.affinity(array).sum())
        with blas_threads(len(array) * self.embedding_dim * self.base_classes):
            target.peak = max(target.peak, float(np.max(array @ self.weights.T + self.bias)))
        target.examples.append(array)
        return len(array)

    def add_saved_class(self, label: str, total: np.ndarray, count: int, affinity: float, peak: float) -> int:
        """Append a new class from what :meth:`state` keeps of it (the sum of its ``count`` embeddings, of their
        affinities, and their highest original logit), e.g. carried from a saved model into a teaching state.
        Returns its id; examples :meth:`add`\\ ed to it later join them."""
        total = np.asarray(total, dtype=np.float64).reshape(-1)
        check_features(total, self.embedding_dim, "a saved class's sum")
        if int(count) < 1 or not np.isfinite([affinity, peak]).all():
            raise TrainingError(f"saved class {label!r}: {count} examples, affinity {affinity}, peak {peak}: imprint it again",
                                subject="resume")
        self.new_classes_.append(_NewClass(str(label), total, int(count), float(affinity), float(peak)))
        return self.num_classes - 1

    def rename(self, class_id: int, label: str) -> None:
        """Give new class ``class_id`` another name."""
        if not self.is_trainable(class_id):
            raise TrainingError("Cannot change the base model classes not trained with imprinting method!")
        self.new_classes_[int(class_id) - self.base_classes].label = str(label)

    # ----------------------------------------------------------------- inference
    def new_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The appended rows ``s * u_k`` ``[K, D]`` and biases ``-s * tau_k`` ``[K]``: ``r_k`` of the gate is
        ``rows_k . unit(centred(x)) + bias_k``."""
        if not self.new_classes_:
            raise TrainingError("no new classes yet; add examples first")
        scale = self.scale
        return scale * centred_units(self._means()), -scale * self.thresholds

    def logit_window(self) -> tuple[float, float] | None:
        """The range the joined logits are represented in: ``logit_range`` moved up by ``max_logit_shift``
        once there are new classes (room for them above the original logits); ``None`` for float."""
        if self.logit_range is None:
            return None
        low, high = self.logit_range
        if not self.new_classes_:
            return low, high
        return low + self.max_logit_shift, high + self.max_logit_shift

    def _logits(self, X: np.ndarray, rows: np.ndarray | None = None, bias: np.ndarray | None = None) -> np.ndarray:
        with blas_threads(len(X) * self.embedding_dim * self.num_classes):
            old = X @ self.weights.T + self.bias
            window = self.logit_window()
            if window is not None:  # as the saved model: original logits in their range, then in the joined one
                old = np.clip(np.clip(old, *self.logit_range), *window)
            if not self.new_classes_:
                return old
            if rows is None:
                rows, bias = self.new_rows()
            relative = centred_units(X) @ rows.T + bias
        new = old.max(axis=1, keepdims=True) + relative - (self.steepness - 1.0) * np.maximum(0.0, -relative)
        if window is not None:
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
        each predicted with its own class's row rebuilt without it (thresholds and scale as they are)."""
        truth, predicted = [], []
        rows, bias = self.new_rows() if self.new_classes_ else (None, None)
        for index, klass in enumerate(self.new_classes_):
            if klass.count < 2:
                continue
            for x in (x for batch in klass.examples for x in batch):
                held_out = rows.copy()
                held_out[index] = self.scale * centred_units((klass.total - x) / (klass.count - 1))
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
            "method": STATE_METHOD, "version": STATE_VERSION, "threshold": self.threshold, "scale": self.given_scale,
            "base_classes": self.base_classes,
            "classes": [{"label": c.label, "count": c.count, "sum": _encode(c.total), "affinity": c.affinity,
                         "peak": c.peak}
                        for c in self.new_classes_],
        }

    def export(self) -> AppendedClasses:
        """The new rows, the steepness, all labels and the state, for the model writer."""
        rows, bias = self.new_rows()
        return AppendedClasses(weights=rows.astype(np.float32), bias=bias.astype(np.float32), labels=self.labels, state=self.state(),
                               logit_range=self.logit_window(), steepness=self.steepness)

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
        if state.get("method") != STATE_METHOD or state.get("version") != STATE_VERSION:
            raise TrainingError(f"the stored state is not lastlayer's keep-classes state version {STATE_VERSION}; "
                                "imprint the new classes again from their photos", subject="resume")
        head = cls(weights, bias, labels, threshold=state.get("threshold"), scale=state.get("scale"),
                   logit_range=logit_range, max_logit_shift=max_logit_shift)
        if state.get("base_classes") != head.base_classes:
            raise TrainingError(f"the stored state was made for {state.get('base_classes')} original classes, the model has "
                                f"{head.base_classes}", subject="resume")
        for entry in state.get("classes", []):
            try:
                count, affinity, peak = int(entry["count"]), float(entry["affinity"]), float(entry["peak"])
            except (KeyError, TypeError, ValueError):
                raise TrainingError("the stored state of the appended classes is damaged (a class lacks its count, affinity "
                                    "or peak); imprint the new classes again from their photos", subject="resume") from None
            head.add_saved_class(str(entry.get("label")), _decode(entry.get("sum", ""), head.embedding_dim), count, affinity, peak)
        return head


def _label_list(labels: Labels | None, count: int) -> list[str]:
    if labels is None:
        return [str(i) for i in range(count)]
    if isinstance(labels, Mapping):
        return [str(labels.get(i, i)) for i in range(count)]
    if len(labels) != count:
        raise TrainingError(f"{len(labels)} labels for {count} original classes; give one label per class", subject="labels")
    return [str(label) for label in labels]
