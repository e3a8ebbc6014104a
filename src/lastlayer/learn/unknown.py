"""Know what a head does not know: the *unknown* rule, derived from the examples each class already has.

A picture belongs to none of the taught classes when its embedding is less similar to every class
than pictures of the taught classes are to their own class. No extra "none" class and no
pictures of other things are needed: the rule is learned from the user's own examples, each left
out of its class in turn.

The math (NumPy only; it knows no file format):

* each embedding ``x`` (what the extractor outputs, e.g. 1024 MobileNet features) is mapped to
  ``t(x) = unit(sign(x) |x|^p)`` with ``p = power`` (:data:`POWER`; ``p = 1`` is the plain unit
  vector imprinting uses);
* class ``c``'s centre is ``unit(sum of t(x_i) over its examples)`` (for ``p = 1`` exactly the
  imprinted row);
* a picture's *similarity* is ``max_c t(x) . centre_c`` (a cosine, -1..1), and it is *unknown*
  when the similarity is below :attr:`UnknownRule.threshold`;
* the threshold comes from leave-one-out: each example's similarity to its own class's centre
  computed without it, over the examples whose left-out centre is still the most similar one
  (the pictures a head gets right, so rejecting them is what costs accuracy). It is a lower
  tolerance bound of a normal fit of those similarities: with :data:`CONFIDENCE` confidence, at most
  :data:`TARGET_REJECTION` of such pictures fall below it. With few examples the bound moves down
  (fewer known pictures rejected), with many it approaches the plain quantile.

The rule does not depend on the head: an imprinted head and a softmax head trained on the same
examples get the same rule, because logits and probabilities of a softmax head cannot tell
"far from every class" (measured in ``benchmarks/unknown.py --design``: at a cost of 0.03
known-class accuracy, probabilities or logits of a tuned softmax head rejected 0.24-0.72 of
far-away photos, the similarity to class centres 0.995-1.000).

Typical use (phase 2 of the feature wires these calls into the jobs that write models)::

    rule = UnknownRule.fit(X, y)                      # X [n, D] embeddings, y class ids 0..C-1
    layer = rule.attach(head.export())                # write_head stores it in the model's metadata
    rule.accepts(X_new)                               # bool [n]: True = one of the taught classes
    rule.similarity(X_new)                            # [n] the value compared with rule.threshold
    UnknownRule.from_dict(rule.to_dict())             # the same rule (class means stored as float16)
    rule.with_threshold(0.6)                          # a user's override
    rule.partial_fit(X_more, y_more)                  # more examples or classes later (a resumed model)
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, replace
from functools import cached_property
from statistics import NormalDist
from typing import Any, Mapping

import numpy as np

from lastlayer.errors import TrainingError
from lastlayer.layer import DenseLayer
from lastlayer.learn.validation import check_features, check_labels

# Chosen by measurement (benchmarks/unknown.py, clothing with 2 of 10 classes held out, MobileNet v1
# and v2 embeddings): p = 2 rejected more held-out clothing photos than p = 1 at the same cost in
# known-class accuracy (paired over 45 held-out pairs), and as many far-away photos.
POWER = 2.0
# The threshold is a lower tolerance bound: with CONFIDENCE, at most TARGET_REJECTION of the correctly
# classified pictures of taught classes fall below it. Measured (benchmarks/unknown.py, 45 draws): it cost
# 0.011-0.015 known-class accuracy on average with 5 and with all shots (a plain 5 % quantile: up to 0.029).
TARGET_REJECTION = 0.05
CONFIDENCE = 0.9
# Fewer left-out examples than this cannot place a threshold.
MIN_LEFT_OUT = 3
FORMAT = "lastlayer-unknown-1"
_EPSILON = 1e-8


class TooFewExamplesError(TrainingError):
    """The examples are too few to derive an unknown rule (e.g. one per class); a caller may go without one."""


def embed_features(X: np.ndarray, power: float = POWER) -> np.ndarray:
    """``unit(sign(x) |x|^power)`` of each row, float64 (rows of zeros stay zero)."""
    X = np.asarray(X, dtype=np.float64)
    powered = X if power == 1 else np.sign(X) * np.abs(X) ** power
    norms = np.linalg.norm(powered, axis=1, keepdims=True)
    return np.divide(powered, norms, out=np.zeros_like(powered), where=norms > _EPSILON)


@dataclass(frozen=True)
class ClassSpread:
    """How a class's examples sit around its centre: their similarities when each is left out."""

    examples: int
    mean: float | None = None  # mean left-out similarity of the examples a head gets right (None: none)
    spread: float | None = None  # their standard deviation (None with fewer than 2)


def _rounded(values: np.ndarray) -> tuple[float, ...]:
    return tuple(round(float(v), 6) for v in values)


@dataclass(frozen=True)
class LeftOut:
    """Leave-one-out similarities of the examples: to their own class's centre and to the best other one."""

    own: np.ndarray  # [n] similarity to the own class's centre without the example (NaN: the only example)
    other: np.ndarray  # [n] the highest similarity to another class's centre (-inf: no other class)

    @property
    def usable(self) -> np.ndarray:
        """The examples whose left-out own centre exists and is the most similar: those a head gets right."""
        return np.isfinite(self.own) & (self.own >= self.other)


def left_out_similarities(T: np.ndarray, y: np.ndarray, num_classes: int, sums: np.ndarray | None = None) -> LeftOut:
    """For unit features ``T`` [n, D] of classes ``y``: :class:`LeftOut`, in O(n C D) without refitting.

    ``sums`` [C, D] are the classes' sums of features, ``T``'s rows included (default: those of ``T`` alone).
    """
    if sums is None:
        sums = np.zeros((num_classes, T.shape[1]))
        np.add.at(sums, y, T)
    dots = T @ sums.T  # [n, C]
    norms = np.linalg.norm(sums, axis=1)
    rows = np.arange(len(T))
    own_dot, self_dot = dots[rows, y], np.sum(T * T, axis=1)
    own_norm = np.sqrt(np.maximum(norms[y] ** 2 - 2 * own_dot + self_dot, 0.0))
    own = np.where(own_norm > 1e-6, (own_dot - self_dot) / np.maximum(own_norm, 1e-6), np.nan)
    cosines = np.where(norms > _EPSILON, dots / np.maximum(norms, _EPSILON), -np.inf)
    cosines[rows, y] = -np.inf
    return LeftOut(own, cosines.max(axis=1) if num_classes > 1 else np.full(len(T), -np.inf))


def tolerance_bound(values: np.ndarray, share: float, confidence: float = CONFIDENCE) -> float:
    """A lower bound below which at most ``share`` of the population lies, with ``confidence``, from a normal fit.

    ``mean - k * sd`` with the one-sided normal tolerance factor ``k = z(1 - share) + z(confidence) *
    sqrt(1/n + z(1 - share)^2 / (2 (n - 1)))`` (Natrella's approximation): the plain quantile for large
    ``n``, lower for few values.
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n < 2:
        raise TrainingError("a tolerance bound needs at least 2 values")
    normal = NormalDist()
    quantile = normal.inv_cdf(1 - share)
    k = quantile + normal.inv_cdf(confidence) * math.sqrt(1 / n + quantile ** 2 / (2 * (n - 1)))
    return float(np.mean(values) - k * np.std(values, ddof=1))


def _check_settings(power: float, target: float, confidence: float) -> None:
    if not (0 < float(target) < 1 and 0 < float(confidence) < 1 and float(power) > 0 and math.isfinite(float(power))):
        raise TrainingError(f"the unknown rule needs 0 < target < 1, 0 < confidence < 1 and power > 0, got target {target}, "
                            f"confidence {confidence} and power {power}")


@dataclass(frozen=True, eq=False)
class UnknownRule:
    """When a picture belongs to none of the taught classes (see the module docstring).

    Attributes:
        means: ``[C, D]`` each class's mean of its examples' features (:func:`embed_features`), float16
            as stored in a model; zeros for a class without examples (e.g. a model's own classes
            kept beside imprinted ones): a picture taken for such a class is never judged.
        examples: how many examples each class has.
        left_out: per class, the left-out similarities of its examples that a head gets right (what
            the threshold is derived from), 6 decimals.
        threshold: pictures whose :meth:`similarity` is below it are unknown.
        power: the ``p`` of :func:`embed_features`.
        target, confidence: the derived threshold rejects at most ``target`` of the correctly
            classified pictures of taught classes, with ``confidence`` (see :func:`tolerance_bound`).
        derived_threshold: the threshold derived from the examples (``threshold`` differs after an override).
    """

    means: np.ndarray
    examples: tuple[int, ...]
    left_out: tuple[tuple[float, ...], ...]
    threshold: float
    power: float = POWER
    target: float = TARGET_REJECTION
    confidence: float = CONFIDENCE
    derived_threshold: float | None = None

    # ----------------------------------------------------------------- learning
    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, *, num_classes: int | None = None, power: float = POWER,
            target: float = TARGET_REJECTION, confidence: float = CONFIDENCE) -> UnknownRule:
        """Derive the rule from embeddings ``X`` [n, D] of classes ``y`` (ids ``0..num_classes-1``).

        Classes without examples get no centre. Raises :class:`TooFewExamplesError` when fewer than
        :data:`MIN_LEFT_OUT` examples can be left out usefully (e.g. one example per class).
        """
        _check_settings(power, target, confidence)
        X = check_features(X)
        count = int(num_classes) if num_classes is not None else int(check_labels(y, len(X)).max()) + 1
        empty = np.zeros((count, X.shape[1]))
        return cls._grown(empty, (0,) * count, ((),) * count, X, y, float(power), float(target), float(confidence))

    def partial_fit(self, X: np.ndarray, y: np.ndarray, *, num_classes: int | None = None) -> UnknownRule:
        """This rule with more examples: of its classes or of new ones (the next ids), e.g. when a model is resumed.

        The new examples are left out of their classes exactly; the left-out similarities of the
        earlier examples are kept as they were (their examples are not at hand), which slightly
        underrates a class that grows. Returns a new rule with a newly derived threshold (an
        override is dropped).
        """
        X = check_features(X, self.dim)
        labels = check_labels(y, len(X))
        count = max(self.num_classes, int(num_classes or 0), int(labels.max()) + 1 if len(labels) else 0)
        extra = count - self.num_classes
        sums = np.concatenate([self.means.astype(np.float64) * np.asarray(self.examples, dtype=np.float64)[:, None],
                               np.zeros((extra, self.dim))])
        return self._grown(sums, self.examples + (0,) * extra, self.left_out + ((),) * extra, X, labels,
                           self.power, self.target, self.confidence)

    @classmethod
    def _grown(cls, sums: np.ndarray, examples: tuple[int, ...], left_out: tuple[tuple[float, ...], ...], X: np.ndarray,
               y: np.ndarray, power: float, target: float, confidence: float) -> UnknownRule:
        y = check_labels(y, len(X), len(sums))
        T = embed_features(X, power)
        sums = sums.copy()
        np.add.at(sums, y, T)
        left = left_out_similarities(T, y, len(sums), sums)
        usable = left.usable
        grown = tuple(old + _rounded(left.own[usable & (y == c)]) for c, old in enumerate(left_out))
        values = np.array([v for per_class in grown for v in per_class])
        if len(values) < MIN_LEFT_OUT:
            raise TooFewExamplesError(f"too few examples to learn when a picture is unknown ({len(values)} usable when left out, "
                                      f"at least {MIN_LEFT_OUT} needed); give 2 or more examples to some classes")
        counts = tuple(old + int(np.sum(y == c)) for c, old in enumerate(examples))
        means = (sums / np.maximum(np.asarray(counts, dtype=np.float64), 1)[:, None]).astype(np.float16)
        threshold = tolerance_bound(values, target, confidence)
        return cls(means, counts, grown, threshold, power, target, confidence, threshold)

    # ----------------------------------------------------------------- deciding
    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @cached_property
    def centres(self) -> np.ndarray:
        """``[C, D]`` unit class centres, float64; a row of NaN for a class without examples (computed once per rule)."""
        means = self.means.astype(np.float64)
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        centres = np.where(norms > _EPSILON, means / np.maximum(norms, _EPSILON), np.nan)
        centres.setflags(write=False)
        return centres

    @cached_property
    def _judged(self) -> np.ndarray:
        """``[C]`` whether each class has examples (a centre the rule judges by)."""
        judged = np.asarray(self.examples) > 0
        judged.setflags(write=False)
        return judged

    @cached_property
    def _judged_centres(self) -> np.ndarray:
        return np.ascontiguousarray(self.centres[self._judged])

    @property
    def classes(self) -> tuple[ClassSpread, ...]:
        """Each class's :class:`ClassSpread`."""
        spreads = []
        for count, values in zip(self.examples, self.left_out):
            array = np.asarray(values, dtype=np.float64)
            spreads.append(ClassSpread(count, round(float(array.mean()), 6) if len(array) else None,
                                       round(float(array.std(ddof=1)), 6) if len(array) > 1 else None))
        return tuple(spreads)

    def similarities(self, X: np.ndarray) -> np.ndarray:
        """``[n, C]`` similarity of each picture to each class centre (NaN for classes without a centre)."""
        X = check_features(X, self.dim)
        return embed_features(X, self.power) @ self.centres.T

    def similarity(self, X: np.ndarray) -> np.ndarray:
        """``[n]`` similarity to the closest class centre: the value compared with the threshold."""
        X = check_features(X, self.dim)
        if not self._judged.any():
            return np.full(len(X), np.inf)
        return (embed_features(X, self.power) @ self._judged_centres.T).max(axis=1)

    def accepts(self, X: np.ndarray, threshold: float | None = None, predicted: np.ndarray | None = None) -> np.ndarray:
        """``[n]`` booleans: True where a picture is one of the taught classes, False where it is unknown.

        ``threshold`` overrides :attr:`threshold` for this call. ``predicted`` (the head's class id per
        picture) lets pictures taken for a class without examples through: the rule knows nothing of it.
        """
        limit = self.threshold if threshold is None else float(threshold)
        accepted = self.similarity(X) >= limit
        if predicted is not None:
            accepted |= ~self._judged[np.asarray(predicted, dtype=np.int64)]
        return accepted

    def with_threshold(self, threshold: float) -> UnknownRule:
        """The same rule deciding at ``threshold`` (the derived one stays in :attr:`derived_threshold`)."""
        if not math.isfinite(float(threshold)):
            raise TrainingError(f"the unknown threshold must be a finite number, got {threshold}")
        return replace(self, threshold=float(threshold))

    def describe(self) -> str:
        """One line, e.g. ``unknown below similarity 0.624 (derived from 40 examples, each left out in turn)``."""
        text = f"unknown below similarity {self.threshold:.3f}"
        if self.derived_threshold is not None and self.threshold != self.derived_threshold:
            return text + f" (set by hand; derived {self.derived_threshold:.3f})"
        return text + f" (derived from {sum(self.examples)} examples, each left out in turn)"

    # ----------------------------------------------------------------- storing
    def attach(self, layer: DenseLayer) -> DenseLayer:
        """``layer`` carrying this rule (:func:`lastlayer.model.export.write_head` stores it with the model).

        The rule must be for the layer's classes and embedding size (a :class:`TrainingError` otherwise).
        """
        if (self.num_classes, self.dim) != (layer.num_classes, layer.dim):
            raise TrainingError(f"the unknown rule is for {self.num_classes} classes of {self.dim} features but the head has "
                                f"{layer.num_classes} classes of {layer.dim}; fit the rule on the head's examples")
        return replace(layer, unknown=self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`from_dict` reads back to an equal rule.

        Only the means of classes with examples are stored (base64 float16, ``rows`` says whose).
        """
        rows = [c for c, count in enumerate(self.examples) if count > 0]
        means = np.ascontiguousarray(self.means[rows], dtype="<f2")
        return {"format": FORMAT, "power": self.power, "threshold": self.threshold, "target": self.target,
                "confidence": self.confidence, "derived_threshold": self.derived_threshold,
                "classes": self.num_classes, "dim": self.dim, "examples": list(self.examples),
                "means": {"dtype": "float16", "rows": rows, "base64": base64.b64encode(means.tobytes()).decode("ascii")},
                "left_out": [list(values) for values in self.left_out]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnknownRule:
        """The rule of :meth:`to_dict`; a :class:`ValueError` says what is wrong with damaged data."""
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r} is not {FORMAT!r}")
            count, dim = int(data["classes"]), int(data["dim"])
            examples = tuple(int(n) for n in data["examples"])
            stored = data["means"]
            rows = [int(r) for r in stored["rows"]]
            if count < 1 or dim < 1 or len(examples) != count or min(examples) < 0 or stored.get("dtype") != "float16":
                raise ValueError(f"{count} classes of {dim} features with {len(examples)} example counts")
            if rows != [c for c, n in enumerate(examples) if n > 0]:
                raise ValueError("the stored means are not those of the classes with examples")
            raw = base64.b64decode(stored["base64"], validate=True)
            if len(raw) != 2 * len(rows) * dim:
                raise ValueError(f"the means hold {len(raw)} bytes, not the {2 * len(rows) * dim} of {len(rows)} x {dim}")
            means = np.zeros((count, dim), dtype=np.float16)
            means[rows] = np.frombuffer(raw, dtype="<f2").reshape(len(rows), dim)
            if not np.isfinite(means).all():
                raise ValueError("a class mean holds NaN or infinite values")
            left_out = tuple(tuple(float(v) for v in values) for values in data["left_out"])
            if len(left_out) != count:
                raise ValueError(f"{len(left_out)} left-out lists for {count} classes")
            threshold, power = float(data["threshold"]), float(data["power"])
            target, confidence = float(data["target"]), float(data["confidence"])
            derived = data.get("derived_threshold")
            _check_settings(power, target, confidence)
            if not math.isfinite(threshold):
                raise ValueError("the threshold is not a finite number")
        except (KeyError, TypeError, AttributeError, ValueError) as exc:  # binascii.Error and TrainingError are ValueErrors
            raise ValueError(f"unreadable unknown rule: {exc}") from None
        return cls(means, examples, left_out, threshold, power, target, confidence, None if derived is None else float(derived))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UnknownRule):
            return NotImplemented
        return (self.examples, self.left_out, self.threshold, self.power, self.target, self.confidence, self.derived_threshold) == \
            (other.examples, other.left_out, other.threshold, other.power, other.target, other.confidence, other.derived_threshold) \
            and np.array_equal(self.means, other.means)

    __hash__ = None  # type: ignore[assignment]
