"""Last-layer backpropagation: a softmax-regression layer trained with mini-batch SGD in NumPy.

``SoftmaxRegression`` keeps PyCoral's surface (``train_with_sgd``, ``get_accuracy``,
``serialize_model``) and adds a scikit-learn one (``fit`` / ``predict`` / ``predict_proba``),
seeds, momentum, early stopping on validation loss, class weighting, class-mean initialisation
and ``.npz`` checkpoints that training can resume from. Unlike libcoral, ``reg`` really is an L2
penalty in the gradient, and the output quantization comes from the trained model's logits.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

from lastlayer.errors import TrainingError
from lastlayer.learn.validation import check_features, check_labels
from lastlayer.model.quant import fake_quantize, range_quantization

PathLike = Union[str, "os.PathLike[str]"]
_HYPERPARAMETERS = (
    "feature_dim", "num_classes", "weight_scale", "reg", "learning_rate", "num_iter", "batch_size",
    "momentum", "init", "class_weight", "early_stopping", "patience", "seed", "output_type",
)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def loss_and_gradients(
    W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, reg: float, sample_weight: np.ndarray | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean (weighted) softmax cross-entropy + ``0.5 * reg * ||W||^2`` and its gradients (dW, db)."""
    n = len(X)
    logits = X @ W + b
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_norm
    weights = np.ones(n, dtype=X.dtype) if sample_weight is None else sample_weight
    loss = float(-(weights * log_p[np.arange(n), y]).sum() / n + 0.5 * reg * np.sum(W * W))
    d_logits = np.exp(log_p)
    d_logits[np.arange(n), y] -= 1.0
    d_logits *= (weights / n)[:, np.newaxis]
    return loss, X.T @ d_logits + reg * W, d_logits.sum(axis=0)


class SoftmaxRegression:
    """A fully-connected + softmax layer trained on embeddings.

    Args:
        feature_dim, num_classes: layer size; inferred by ``fit`` when ``None``.
        weight_scale: standard deviation of the random initial weights.
        reg: L2 regularisation strength.
        learning_rate, num_iter, batch_size: SGD settings used by ``fit``.
        momentum: classical momentum (0 = plain SGD as in PyCoral).
        init: ``"random"`` (PyCoral) or ``"class_means"`` (imprinted start: faster, better with few shots).
        class_weight: ``None`` or ``"balanced"`` (weights inversely proportional to class frequency).
        early_stopping: stop when the validation loss has not improved for ``patience`` checks
            (one check per epoch) and keep the best weights.
        seed: makes initialisation and batch sampling reproducible.
        output_type: ``"uint8"``, ``"int8"`` or ``"float32"``: how the head will be stored, so that
            :meth:`run_inference` gives the scores the saved model computes. ``serialize_model``
            sets it from the extractor's output type.
    """

    def __init__(
        self,
        feature_dim: int | None = None,
        num_classes: int | None = None,
        weight_scale: float = 0.01,
        reg: float = 0.0,
        *,
        learning_rate: float = 0.01,
        num_iter: int = 500,
        batch_size: int = 100,
        momentum: float = 0.0,
        init: str = "random",
        class_weight: str | None = None,
        early_stopping: bool = False,
        patience: int = 5,
        seed: int | None = None,
        output_type: str = "uint8",
    ) -> None:
        if init not in ("random", "class_means"):
            raise TrainingError(f"init must be 'random' or 'class_means', got {init!r}")
        if output_type not in ("uint8", "int8", "float32"):
            raise TrainingError(f"output_type must be 'uint8', 'int8' or 'float32', got {output_type!r}")
        if class_weight not in (None, "balanced"):
            raise TrainingError(f"class_weight must be None or 'balanced', got {class_weight!r}")
        self.feature_dim, self.num_classes = feature_dim, num_classes
        self.weight_scale, self.reg = float(weight_scale), float(reg)
        self.learning_rate, self.num_iter, self.batch_size = float(learning_rate), int(num_iter), int(batch_size)
        self.momentum, self.init, self.class_weight = float(momentum), init, class_weight
        self.early_stopping, self.patience, self.seed = bool(early_stopping), int(patience), seed
        self.output_type = output_type
        self._rng = np.random.default_rng(seed)
        self.W_: np.ndarray | None = None
        self.b_: np.ndarray | None = None
        self._velocity: tuple[np.ndarray, np.ndarray] | None = None
        self.iterations_ = 0
        self.logit_range_: tuple[float, float] | None = None
        self.history_: list[dict[str, float]] = []
        if feature_dim is not None and num_classes is not None:
            self._initialise_random()

    # ----------------------------------------------------------------- set-up
    def _initialise_random(self) -> None:
        if self.num_classes is not None and self.num_classes < 2:
            raise TrainingError(f"a softmax layer needs at least 2 classes, got {self.num_classes}")
        self.W_ = (self.weight_scale * self._rng.standard_normal((self.feature_dim, self.num_classes))).astype(np.float32)
        self.b_ = np.zeros(self.num_classes, dtype=np.float32)
        self._velocity = None

    def _initialise_from_class_means(self, X: np.ndarray, y: np.ndarray) -> None:
        means = np.stack([X[y == c].mean(axis=0) if np.any(y == c) else np.zeros(X.shape[1], np.float32)
                          for c in range(self.num_classes)])
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        units = np.divide(means, norms, out=np.zeros_like(means), where=norms > 0)
        # Scale so a typical embedding gets logits of a few units: a confident but soft start.
        gain = 5.0 / max(float(np.linalg.norm(X, axis=1).mean()), 1e-6)
        self.W_ = (gain * (units - units.mean(axis=0))).T.astype(np.float32)
        self.b_ = np.zeros(self.num_classes, dtype=np.float32)
        self._velocity = None

    def _sample_weights(self, y: np.ndarray) -> np.ndarray | None:
        if self.class_weight != "balanced":
            return None
        counts = np.bincount(y, minlength=self.num_classes).astype(np.float32)
        per_class = np.divide(len(y), self.num_classes * counts, out=np.zeros_like(counts), where=counts > 0)
        return per_class[y]

    def _logit_range(self) -> tuple[float, float]:
        if self.logit_range_ is not None:
            return self.logit_range_
        return float(np.min(self.b_)), float(np.max(self.b_))

    def _require_trained(self) -> None:
        if self.W_ is None:
            raise TrainingError("the layer is not trained yet; call fit() or train_with_sgd() first")

    # ----------------------------------------------------------------- training
    def _train(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None,
        y_val: np.ndarray | None,
        num_iter: int,
        learning_rate: float,
        batch_size: int,
        print_every: int,
        log: Callable[[str], None],
    ) -> None:
        if self.feature_dim is None:
            self.feature_dim = X.shape[1]
        X = check_features(X, self.feature_dim, "training embeddings")
        if self.num_classes is None:
            self.num_classes = int(np.max(y)) + 1 if len(y) else 0
        y = check_labels(y, len(X), self.num_classes, "training labels")
        if self.num_classes < 2 or len(np.unique(y)) < 2:
            raise TrainingError("training needs at least 2 classes with examples; add images of another class")
        has_val = X_val is not None and y_val is not None and len(X_val) > 0
        if has_val:
            X_val = check_features(X_val, self.feature_dim, "validation embeddings")
            y_val = check_labels(y_val, len(X_val), self.num_classes, "validation labels")
        if batch_size < 1 or num_iter < 0 or not learning_rate > 0:
            raise TrainingError("batch_size must be >= 1, num_iter >= 0 and learning_rate > 0")
        if self.W_ is None or self.W_.shape != (self.feature_dim, self.num_classes):
            if self.init == "class_means":
                self._initialise_from_class_means(X, y)
            else:
                self._initialise_random()
        weights = self._sample_weights(y)
        if self._velocity is None:
            self._velocity = (np.zeros_like(self.W_), np.zeros_like(self.b_))
        vW, vb = self._velocity
        check_every = max(1, len(X) // batch_size)
        best = (np.inf, self.W_.copy(), self.b_.copy())
        stale = 0
        for step in range(num_iter):
            batch = self._rng.integers(0, len(X), size=batch_size)
            loss, dW, db = loss_and_gradients(self.W_, self.b_, X[batch], y[batch], self.reg,
                                              None if weights is None else weights[batch])
            vW *= self.momentum
            vW -= learning_rate * dW
            vb *= self.momentum
            vb -= learning_rate * db
            self.W_ += vW
            self.b_ += vb
            self.iterations_ += 1
            if print_every > 0 and step % print_every == 0:
                record = {"iteration": float(self.iterations_), "loss": loss, "train_acc": self.get_accuracy(X, y)}
                if has_val:
                    record["val_acc"] = self.get_accuracy(X_val, y_val)
                self.history_.append(record)
                val_text = f", val_acc: {100 * record['val_acc']:.2f}%" if has_val else ""
                log(f"Loss: {loss:.4f}, train_acc: {100 * record['train_acc']:.2f}%{val_text}")
            if self.early_stopping and has_val and (step + 1) % check_every == 0:
                val_loss = loss_and_gradients(self.W_, self.b_, X_val, y_val, self.reg)[0]
                if val_loss < best[0] - 1e-6:
                    best, stale = (val_loss, self.W_.copy(), self.b_.copy()), 0
                else:
                    stale += 1
                    if stale >= self.patience:
                        log(f"early stop at iteration {self.iterations_}: validation loss {best[0]:.4f} did not improve")
                        break
        if self.early_stopping and has_val and np.isfinite(best[0]):
            self.W_, self.b_ = best[1], best[2]
        if not np.isfinite(self.W_).all():
            raise TrainingError("training diverged (weights became NaN/inf); lower the learning rate")
        self._update_logit_range(X if not has_val else np.concatenate([X, X_val]))

    def _update_logit_range(self, X: np.ndarray) -> None:
        logits = X @ self.W_ + self.b_
        self.logit_range_ = (float(logits.min()), float(logits.max()))

    def train_with_sgd(
        self,
        data: Mapping[str, Any],
        num_iter: int,
        learning_rate: float,
        batch_size: int = 100,
        print_every: int = 100,
    ) -> None:
        """PyCoral-compatible training on ``data`` = {data_train, labels_train[, data_val, labels_val]}."""
        missing = [key for key in ("data_train", "labels_train") if key not in data]
        if missing:
            raise TrainingError(f"data needs the keys data_train and labels_train (missing: {', '.join(missing)})")
        self._train(np.asarray(data["data_train"]), np.asarray(data["labels_train"]),
                    None if data.get("data_val") is None else np.asarray(data["data_val"]),
                    None if data.get("labels_val") is None else np.asarray(data["labels_val"]),
                    num_iter, learning_rate, batch_size, print_every, lambda line: print(line, file=sys.stdout))

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        *,
        print_every: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> SoftmaxRegression:
        """Train with the settings given to the constructor (continues if already trained)."""
        self._train(np.asarray(X), np.asarray(y), X_val, y_val, self.num_iter, self.learning_rate, self.batch_size,
                    print_every, log or (lambda line: print(line, file=sys.stderr)))
        return self

    # ----------------------------------------------------------------- inference
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits ``X W + b``, shape [n, num_classes]."""
        self._require_trained()
        return check_features(X, self.feature_dim) @ self.W_ + self.b_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Softmax probabilities of the float layer, shape [n, num_classes]."""
        return softmax(self.decision_function(X))

    def run_inference(self, mat_x: np.ndarray) -> np.ndarray:
        """Class scores as the saved model computes them, shape [n, num_classes].

        For a quantized head (``output_type`` uint8/int8) the weights and logits are rounded to the
        same grids as in the ``.tflite`` file, so these scores match the device's within about
        1/256; :meth:`predict_proba` gives the unrounded float layer.
        """
        if self.output_type == "float32":
            return self.predict_proba(mat_x)
        X = check_features(mat_x, self.feature_dim)
        dtype = np.dtype(self.output_type)
        weights = self.W_.T
        w_scale, w_zero = range_quantization(weights.min(), weights.max(), dtype)
        logits = X @ fake_quantize(weights, w_scale, w_zero, dtype).T + self.b_
        low, high = self._logit_range()
        l_scale, l_zero = range_quantization(low, high, dtype)
        return softmax(fake_quantize(logits, l_scale, l_zero, dtype))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most likely class id of each row."""
        return np.argmax(self.decision_function(X), axis=1)

    def get_accuracy(self, mat_x: np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
        """Fraction of rows whose predicted class equals the label (0..1, as PyCoral)."""
        labels = check_labels(np.asarray(labels), len(np.atleast_2d(mat_x)), self.num_classes)
        return float(np.mean(self.predict(mat_x) == labels))

    score = get_accuracy

    # ----------------------------------------------------------------- model file
    def serialize_model(self, in_model_path: PathLike | bytes, labels: Sequence[str] | None = None) -> bytes:
        """The extractor at ``in_model_path`` with this layer appended, as ``.tflite`` bytes."""
        from lastlayer.model.heads import append_dense_softmax_head
        from lastlayer.model.io import load_model, model_to_bytes
        from lastlayer.model.labels import set_embedded_labels

        self._require_trained()
        source = "<extractor bytes>" if isinstance(in_model_path, (bytes, bytearray)) else str(in_model_path)
        model = load_model(in_model_path)
        embedding = append_dense_softmax_head(model, self.W_.T, self.b_, self._logit_range(), source=source)
        self.output_type = str(embedding.dtype)
        if labels is not None:
            set_embedded_labels(model, list(labels))
        return model_to_bytes(model)

    # ----------------------------------------------------------------- checkpoints
    def save(self, path: PathLike) -> Path:
        """Write weights, hyper-parameters and training state (RNG, momentum) to a ``.npz``."""
        import io

        from lastlayer.files import atomic_write_bytes

        self._require_trained()
        state = {
            "hyperparameters": {k: getattr(self, k) for k in _HYPERPARAMETERS},
            "iterations": self.iterations_,
            "logit_range": self.logit_range_,
            "rng": self._rng.bit_generator.state,
            "history": self.history_,
        }
        vW, vb = self._velocity or (np.zeros_like(self.W_), np.zeros_like(self.b_))
        buffer = io.BytesIO()
        np.savez(buffer, W=self.W_, b=self.b_, vW=vW, vb=vb, state=np.array(json.dumps(state)))
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: PathLike) -> SoftmaxRegression:
        """Restore a layer saved with :meth:`save`; ``fit`` then continues where it stopped."""
        try:
            with np.load(path) as stored:
                state = json.loads(str(stored["state"]))
                layer = cls(**state["hyperparameters"])
                layer.W_, layer.b_ = stored["W"].astype(np.float32), stored["b"].astype(np.float32)
                layer._velocity = (stored["vW"].astype(np.float32), stored["vb"].astype(np.float32))
        except (OSError, KeyError, ValueError) as exc:
            raise TrainingError(f"cannot load checkpoint {path}: {exc}; it must be a file written by SoftmaxRegression.save") from None
        layer.iterations_ = int(state["iterations"])
        layer.logit_range_ = tuple(state["logit_range"]) if state["logit_range"] else None
        layer._rng.bit_generator.state = state["rng"]
        layer.history_ = list(state["history"])
        return layer
