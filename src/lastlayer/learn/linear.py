"""The linear softmax head every dense learner shares once trained: logits, probabilities, saved scores, export.

A learner on :class:`LinearSoftmaxHead` sets ``W_`` ``[D, C]`` and ``b_`` ``[C]`` in ``fit``; the
head then predicts, scores, computes what its saved (quantized) model computes and exports the
:class:`~lastlayer.layer.DenseLayer` the model writers take. :func:`balanced_sample_weights` is
the ``class_weight="balanced"`` rule every learner uses.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lastlayer.errors import TrainingError
from lastlayer.layer import OUTPUT_TYPES, DenseLayer
from lastlayer.learn.losses import softmax
from lastlayer.learn.threads import blas_threads
from lastlayer.learn.validation import check_features, check_fitted, check_labels
from lastlayer.quantization import fake_quantize, range_quantization

CLASS_WEIGHTS = (None, "balanced")


def check_class_weight(class_weight: str | None) -> None:
    """Refuse a ``class_weight`` other than ``None`` or ``"balanced"``."""
    if class_weight not in CLASS_WEIGHTS:
        raise TrainingError(f"class_weight must be None or 'balanced', got {class_weight!r}")


def balanced_sample_weights(y: np.ndarray, num_classes: int, class_weight: str | None,
                            dtype: type = np.float32) -> np.ndarray | None:
    """Per-sample weights for ``class_weight``: ``None`` (all 1), or ``"balanced"``: ``n / (C * count[class])``."""
    if class_weight != "balanced":
        return None
    counts = np.bincount(y, minlength=num_classes).astype(dtype)
    per_class = np.divide(len(y), num_classes * counts, out=np.zeros_like(counts), where=counts > 0)
    return per_class[y]


class LinearSoftmaxHead:
    """What every dense + softmax learner shares once trained: inference, saved scores and export.

    A learner's ``fit`` sets ``W_`` ``[D, C]`` float32, ``b_`` ``[C]``, ``n_features_in_`` and
    ``num_classes_``, then calls :meth:`finish_fit`, which sets ``logit_range_`` (the logits seen in
    training, which set the saved model's output quantization).
    """

    W_: np.ndarray | None
    b_: np.ndarray
    n_features_in_: int
    num_classes_: int
    logit_range_: tuple[float, float]

    # ----------------------------------------------------------------- inference
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits ``X W + b``, shape [n, C]."""
        check_fitted(self, "W_")
        X = check_features(X, self.n_features_in_)
        with blas_threads(X.shape[0] * X.shape[1] * self.W_.shape[1]):
            return X @ self.W_ + self.b_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Softmax probabilities of the float layer, shape [n, C]."""
        return softmax(self.decision_function(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most likely class id of each row."""
        return np.argmax(self.decision_function(X), axis=1)

    def score(self, X: np.ndarray, y: Sequence[int] | np.ndarray) -> float:
        """Fraction of rows whose predicted class equals the label (0..1)."""
        check_fitted(self, "W_")
        labels = check_labels(np.asarray(y), len(np.atleast_2d(X)), self.num_classes_)
        return float(np.mean(self.predict(X) == labels))

    def saved_scores(self, X: np.ndarray, output_type: str = "uint8") -> np.ndarray:
        """Class scores ``[n, C]`` as the saved model computes them with the given output type.

        For ``uint8`` / ``int8`` the weights and logits are rounded to the grids the model file
        uses, so these match the device within about 1/256; ``float32`` equals :meth:`predict_proba`.
        """
        if output_type not in OUTPUT_TYPES:
            raise TrainingError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        if output_type == "float32":
            return self.predict_proba(X)
        check_fitted(self, "W_")
        X = check_features(X, self.n_features_in_)
        dtype = np.dtype(output_type)
        weights = self.W_.T
        w_scale, w_zero = range_quantization(weights.min(), weights.max(), dtype)
        with blas_threads(X.shape[0] * X.shape[1] * self.W_.shape[1]):
            logits = X @ fake_quantize(weights, w_scale, w_zero, dtype).T + self.b_
        l_scale, l_zero = range_quantization(*self.logit_range_, dtype)
        return softmax(fake_quantize(logits, l_scale, l_zero, dtype))

    def export(self, labels: Sequence[str] | None = None) -> DenseLayer:
        """The trained layer as plain arrays for :func:`lastlayer.model.export.write_head`."""
        check_fitted(self, "W_")
        names = list(labels) if labels is not None else [str(i) for i in range(self.num_classes_)]
        if len(names) != self.num_classes_:
            raise TrainingError(f"{len(names)} labels given for {self.num_classes_} classes")
        return DenseLayer(weights=self.W_.T.copy(), bias=self.b_.copy(), logit_range=self.logit_range_, labels=names)

    def finish_fit(self, X: np.ndarray, X_val: np.ndarray | None = None, advice: str = "") -> None:
        """End a ``fit``: refuse diverged weights, and set ``logit_range_`` from the training (and held-out) logits.

        The range sets the saved model's output quantization, so every learner on this head calls it last.
        """
        if not np.isfinite(self.W_).all():
            raise TrainingError(f"training diverged (weights became NaN/inf){advice}")
        logits = (X if X_val is None else np.concatenate([X, X_val])) @ self.W_ + self.b_
        self.logit_range_ = (float(logits.min()), float(logits.max()))
