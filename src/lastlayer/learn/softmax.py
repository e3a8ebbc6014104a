"""Last-layer backpropagation: a softmax-regression layer trained with mini-batch SGD in NumPy.

A learner of the contract in :mod:`lastlayer.learn.base` (scikit-learn's conventions):
``__init__`` only stores parameters, :meth:`SoftmaxRegression.fit` starts over,
:meth:`~SoftmaxRegression.partial_fit` continues, and the shared
:class:`~lastlayer.learn.linear.LinearSoftmaxHead` predicts, computes the saved model's scores and
exports plain arrays to the model writer. :meth:`~SoftmaxRegression.training_state` is everything a
checkpoint needs (:mod:`lastlayer.files.checkpoints` writes it). PyCoral's surface (``train_with_sgd`` ...)
lives in ``lastlayer.pycoral``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import numpy as np

from lastlayer.errors import TrainingError
from lastlayer.layer import OUTPUT_TYPES
from lastlayer.learn.base import FitReport, Log, Params
from lastlayer.learn.linear import LinearSoftmaxHead, balanced_sample_weights, check_class_weight
from lastlayer.learn.losses import cross_entropy
from lastlayer.learn.threads import blas_threads
from lastlayer.learn.validation import check_features, check_fitted, check_labels

__all__ = ["OUTPUT_TYPES", "SoftmaxRegression", "loss_and_gradients"]
PathLike = Union[str, "os.PathLike[str]"]


def loss_and_gradients(
    W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, reg: float, sample_weight: np.ndarray | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean (weighted) softmax cross-entropy + ``0.5 * reg * ||W||^2`` and its gradients (dW, db)."""
    loss, d_logits = cross_entropy(X @ W + b, y, sample_weight)
    if not reg:
        return loss, X.T @ d_logits, d_logits.sum(axis=0)
    return loss + float(0.5 * reg * np.sum(W * W)), X.T @ d_logits + reg * W, d_logits.sum(axis=0)


class SoftmaxRegression(Params, LinearSoftmaxHead):
    """A fully-connected + softmax layer trained on embeddings with mini-batch SGD.

    Args:
        learning_rate, num_iter, batch_size: SGD settings.
        reg: L2 regularisation strength (part of the gradient, unlike libcoral).
        momentum: classical momentum (0 = plain SGD as in PyCoral).
        weight_scale: standard deviation of the random initial weights.
        init: ``"random"`` (PyCoral) or ``"class_means"`` (imprinted start: faster, better with few shots).
        class_weight: ``None`` or ``"balanced"`` (weights inversely proportional to class frequency).
        early_stopping: stop when the validation loss has not improved for ``patience`` checks
            (one check per epoch) and keep the best weights; needs validation data.
        patience: see ``early_stopping``.
        num_classes: the number of classes; inferred from the labels (largest id + 1) when ``None``.
        seed: makes initialisation and batch sampling reproducible.
        print_every: log loss and accuracy every this many iterations (from the first; 0: never).

    Learned attributes end in ``_``: ``W_`` ``[D, C]``, ``b_``, ``n_iter_``, ``history_``,
    ``logit_range_``, ``n_features_in_``, ``stopped_early_``.
    """

    def __init__(
        self,
        *,
        learning_rate: float = 0.01,
        num_iter: int = 500,
        batch_size: int = 100,
        reg: float = 0.0,
        momentum: float = 0.0,
        weight_scale: float = 0.01,
        init: str = "random",
        class_weight: str | None = None,
        early_stopping: bool = False,
        patience: int = 5,
        num_classes: int | None = None,
        seed: int | None = None,
        print_every: int = 0,
    ) -> None:
        self.learning_rate = learning_rate
        self.num_iter = num_iter
        self.batch_size = batch_size
        self.reg = reg
        self.momentum = momentum
        self.weight_scale = weight_scale
        self.init = init
        self.class_weight = class_weight
        self.early_stopping = early_stopping
        self.patience = patience
        self.num_classes = num_classes
        self.seed = seed
        self.print_every = print_every
        self.W_: np.ndarray | None = None

    # ----------------------------------------------------------------- parameters
    def _check_params(self) -> None:
        if self.init not in ("random", "class_means"):
            raise TrainingError(f"init must be 'random' or 'class_means', got {self.init!r}")
        check_class_weight(self.class_weight)
        if not (int(self.batch_size) >= 1 and int(self.num_iter) >= 0 and float(self.learning_rate) > 0
                and np.isfinite(float(self.learning_rate)) and float(self.reg) >= 0 and 0 <= float(self.momentum) < 1):
            raise TrainingError("batch_size must be >= 1, num_iter >= 0, learning_rate > 0, reg >= 0 and momentum in [0, 1)")

    # ----------------------------------------------------------------- set-up
    def _start(self, X: np.ndarray, y: np.ndarray) -> None:
        self._rng = np.random.default_rng(self.seed)
        self.n_features_in_ = X.shape[1]
        self.num_classes_ = int(self.num_classes) if self.num_classes is not None else int(y.max()) + 1
        if self.num_classes_ < 2:
            raise TrainingError(f"a softmax layer needs at least 2 classes, got {self.num_classes_}")
        if self.init == "class_means":
            self.W_ = self._class_mean_weights(X, y)
        else:
            self.W_ = (float(self.weight_scale) * self._rng.standard_normal((X.shape[1], self.num_classes_))).astype(np.float32)
        self.b_ = np.zeros(self.num_classes_, dtype=np.float32)
        self._velocity = (np.zeros_like(self.W_), np.zeros_like(self.b_))
        self.n_iter_ = 0
        self.history_: list[dict[str, float]] = []
        self.logit_range_: tuple[float, float] = (0.0, 0.0)
        self.stopped_early_ = False

    def initialize(self, n_features: int) -> SoftmaxRegression:
        """Draw the random initial weights (``weight_scale * N(0, 1)``, zero bias) without training.

        What :meth:`fit` does first; :meth:`partial_fit` then trains from these weights. Needs
        ``num_classes`` and ``init="random"``.
        """
        self._check_params()
        if self.num_classes is None or self.init != "random":
            raise TrainingError("initialize() needs num_classes and init='random'; otherwise call fit() with data")
        self._start(np.zeros((1, int(n_features)), np.float32), np.zeros(1, np.int64))
        return self

    def _class_mean_weights(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        means = np.stack([X[y == c].mean(axis=0) if np.any(y == c) else np.zeros(X.shape[1], np.float32)
                          for c in range(self.num_classes_)])
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        units = np.divide(means, norms, out=np.zeros_like(means), where=norms > 0)
        # Scale so a typical embedding gets logits of a few units: a confident but soft start.
        gain = 5.0 / max(float(np.linalg.norm(X, axis=1).mean()), 1e-6)
        return (gain * (units - units.mean(axis=0))).T.astype(np.float32)

    # ----------------------------------------------------------------- training
    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
            *, print_every: int | None = None, log: Log | None = None) -> SoftmaxRegression:
        """Train from scratch for ``num_iter`` iterations; validation data enables early stopping and logs.

        ``print_every`` overrides the parameter of the same name for this call.
        """
        self._check_params()
        X, y = self._checked(X, y, None)
        self._start(X, y)
        with blas_threads(self._work(X, X_val)):
            return self._run(X, y, X_val, y_val, int(self.num_iter), print_every, log)

    def partial_fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                    *, num_iter: int | None = None, print_every: int | None = None, log: Log | None = None) -> SoftmaxRegression:
        """Continue training (``num_iter`` more iterations, default the constructor's); starts if not fitted."""
        self._check_params()
        if self.W_ is None:
            X, y = self._checked(X, y, None)
            self._start(X, y)
        else:
            X, y = self._checked(X, y, self.n_features_in_)
        with blas_threads(self._work(X, X_val)):
            return self._run(X, y, X_val, y_val, int(self.num_iter if num_iter is None else num_iter), print_every, log)

    def _work(self, X: np.ndarray, X_val: np.ndarray | None) -> int:
        """Multiply-adds of the largest product of a run (the logits of all training and validation rows)."""
        rows = len(X) + (0 if X_val is None else len(np.atleast_2d(X_val)))
        return rows * X.shape[1] * self.num_classes_

    def _checked(self, X: np.ndarray, y: np.ndarray, dim: int | None) -> tuple[np.ndarray, np.ndarray]:
        X = check_features(X, dim, "training embeddings")
        y = check_labels(y, len(X), self.num_classes if self.W_ is None else self.num_classes_, "training labels")
        if len(np.unique(y)) < 2:
            raise TrainingError("training needs at least 2 classes with examples; add images of another class")
        return X, y

    def _run(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None, y_val: np.ndarray | None, num_iter: int,
             print_every: int | None, log: Log | None) -> SoftmaxRegression:
        print_every = int(self.print_every if print_every is None else print_every)
        has_val = X_val is not None and y_val is not None and len(X_val) > 0
        if has_val:
            X_val = check_features(X_val, self.n_features_in_, "validation embeddings")
            y_val = check_labels(y_val, len(X_val), self.num_classes_, "validation labels")
        say = log or (lambda line: None)
        weights = balanced_sample_weights(y, self.num_classes_, self.class_weight)
        vW, vb = self._velocity
        batch_size, lr, momentum, reg = int(self.batch_size), float(self.learning_rate), float(self.momentum), float(self.reg)
        check_every = max(1, len(X) // batch_size)
        best = (np.inf, self.W_.copy(), self.b_.copy())
        stale = 0
        for step in range(num_iter):
            batch = self._rng.integers(0, len(X), size=batch_size)
            loss, dW, db = loss_and_gradients(self.W_, self.b_, X[batch], y[batch], reg, None if weights is None else weights[batch])
            if momentum:
                vW *= momentum
                vW -= lr * dW
                vb *= momentum
                vb -= lr * db
                self.W_ += vW
                self.b_ += vb
            else:  # plain SGD (PyCoral): the same numbers without the velocity round trip
                dW *= lr
                self.W_ -= dW
                self.b_ -= lr * db
            self.n_iter_ += 1
            if print_every > 0 and step % print_every == 0:
                record = {"iteration": float(self.n_iter_), "loss": loss, "train_acc": self.score(X, y)}
                if has_val:
                    record["val_acc"] = self.score(X_val, y_val)
                self.history_.append(record)
                val_text = f", val_acc: {100 * record['val_acc']:.2f}%" if has_val else ""
                say(f"Loss: {loss:.4f}, train_acc: {100 * record['train_acc']:.2f}%{val_text}")
            if self.early_stopping and has_val and (step + 1) % check_every == 0:
                val_loss = loss_and_gradients(self.W_, self.b_, X_val, y_val, reg)[0]
                if val_loss < best[0] - 1e-6:
                    best, stale = (val_loss, self.W_.copy(), self.b_.copy()), 0
                else:
                    stale += 1
                    if stale >= int(self.patience):
                        say(f"early stop at iteration {self.n_iter_}: validation loss {best[0]:.4f} did not improve")
                        self.stopped_early_ = True
                        break
        if self.early_stopping and has_val and np.isfinite(best[0]):
            self.W_, self.b_ = best[1], best[2]
            self._velocity = (np.zeros_like(self.W_), np.zeros_like(self.b_))
        self.finish_fit(X, X_val if has_val else None, "; lower the learning rate")
        return self

    def fit_report(self) -> FitReport:
        """Iterations run, whether early stopping ended the fit, and the L2 strength used."""
        check_fitted(self, "W_")
        return FitReport(iterations=int(self.n_iter_), stopped_early=bool(self.stopped_early_), reg=float(self.reg))

    # ----------------------------------------------------------------- checkpoints
    def training_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Everything :meth:`partial_fit` needs to go on where it stopped: arrays and JSON-able values.

        ``(arrays, state)``: ``W``, ``b`` and the momentum ``vW``, ``vb``; the parameters, iteration count,
        logit range, RNG state and history. :meth:`from_training_state` restores it.
        """
        check_fitted(self, "W_")
        state = {"params": self.get_params(), "n_iter": self.n_iter_, "logit_range": self.logit_range_,
                 "rng": self._rng.bit_generator.state, "history": self.history_, "num_classes": self.num_classes_}
        return {"W": self.W_, "b": self.b_, "vW": self._velocity[0], "vb": self._velocity[1]}, state

    @classmethod
    def from_training_state(cls, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> SoftmaxRegression:
        """The layer :meth:`training_state` described (a ``KeyError``, ``TypeError`` or ``ValueError`` if it is not one)."""
        layer = cls(**state["params"])
        layer.W_, layer.b_ = np.asarray(arrays["W"], np.float32), np.asarray(arrays["b"], np.float32)
        layer._velocity = (np.asarray(arrays["vW"], np.float32), np.asarray(arrays["vb"], np.float32))
        layer.n_features_in_, layer.num_classes_ = layer.W_.shape
        layer.n_iter_ = int(state["n_iter"])
        layer.logit_range_ = tuple(state["logit_range"])
        layer._rng = np.random.default_rng()
        layer._rng.bit_generator.state = state["rng"]
        layer.history_ = list(state["history"])
        layer.stopped_early_ = False
        return layer

    def save(self, path: PathLike) -> Path:
        """Write a checkpoint file (:func:`lastlayer.files.checkpoints.save_checkpoint`)."""
        from lastlayer.files.checkpoints import save_checkpoint

        return save_checkpoint(self, path)

    @classmethod
    def load(cls, path: PathLike) -> SoftmaxRegression:
        """Read a checkpoint written by :meth:`save`; :meth:`partial_fit` then continues where it stopped."""
        from lastlayer.files.checkpoints import load_checkpoint

        return load_checkpoint(path, cls)
