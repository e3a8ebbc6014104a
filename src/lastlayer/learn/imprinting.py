"""Weight imprinting (Qi, Brown, Lowe: "Low-Shot Learning with Imprinted Weights"), as NumPy math.

Each class's row is the normalised sum of its L2-normalised embeddings and the logit is
``s * cos(embedding, row)``. Classes are added at any time from a few examples, without backprop.
:class:`ImprintingHead` knows no file format: :meth:`ImprintingHead.export` hands plain arrays
(unit rows, scale, norms, shots, labels) to the model writer, and :meth:`ImprintingHead.from_layer`
continues from what a saved model holds.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from lastlayer.errors import NotFoundError, TrainingError
from lastlayer.layer import DenseLayer
from lastlayer.learn.cosine import leave_one_out, unit_rows
from lastlayer.learn.descent import (
    HOLDOUT_MIN_PER_CLASS,
    HOLDOUT_RATIO,
    MAX_STEP_REDUCTIONS,
    Descent,
    FinetuneResult,
    holdout_split,
)
from lastlayer.learn.losses import softmax
from lastlayer.learn.threads import blas_threads
from lastlayer.learn.validation import check_class_id, check_features, check_fitted, check_labels
from lastlayer.quantization import dequantize, fake_quantize, quantize

# Chosen by measurement (benchmarks/imprint.py prints the sweep): with the MobileNet v1 extractor, the
# s minimising held-out cross-entropy of plain imprinting was 48 on flowers (25 % split) and 64 on
# clothing (its test split; CE there at 48 was within 6 % of the minimum).
DEFAULT_SCALE = 48.0
# How the rows and cosines are stored in an imprinting model (uint8 encoding of [-1, 1]).
COSINE_QUANTIZATION = (1.0 / 128.0, 128)
__all__ = ["COSINE_QUANTIZATION", "DEFAULT_SCALE", "HOLDOUT_MIN_PER_CLASS", "HOLDOUT_RATIO", "MAX_STEP_REDUCTIONS", "FinetuneResult",
           "ImprintingHead", "leave_one_out", "unit_rows"]


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

    def remove_example(self, class_id: int, index: int) -> None:
        """Forget the ``index``-th example added to class ``class_id`` (from 0, in the order added): its unit
        embedding leaves the class's running sum, and the class counts one shot less.

        A row changed by :meth:`finetune` is not the sum of its examples any more: to start again from
        imprinted rows, build the head anew with :meth:`from_examples`.
        """
        klass = self._class(class_id)
        examples = self.examples(class_id)
        if not 0 <= int(index) < len(examples):
            raise NotFoundError(f"class {klass.label!r} has {len(examples)} example(s); there is no example {index}")
        klass.weights = klass.weights - examples[int(index)]
        klass.shots -= 1
        kept = np.delete(examples, int(index), axis=0)
        klass.examples = [kept] if len(kept) else []

    def examples(self, class_id: int) -> np.ndarray:
        """The unit embeddings ``[n, D]`` added to class ``class_id`` since this head was made (base rows excluded)."""
        klass = self._class(class_id)
        return np.concatenate(klass.examples) if klass.examples else np.zeros((0, self.embedding_dim_ or 0))

    # ----------------------------------------------------------------- inference
    def sums(self) -> np.ndarray:
        """The running sums ``[C, D]`` (unit rows times their norms): what :meth:`from_examples` takes back as ``rows``."""
        check_fitted(self, "classes_")
        return np.stack([c.weights for c in self.classes_]) if self.classes_ else np.zeros((0, self.embedding_dim_ or 0))

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
    def finetune(self, steps: int = 300, learning_rate: float = 0.1, *, prior: float = 0.01, train_scale: bool = False,
                 holdout: float = HOLDOUT_RATIO, patience: int = 30, seed: int = 0,
                 stop: threading.Event | None = None) -> FinetuneResult:
        """Refine the trainable rows by full-batch gradient steps of softmax cross-entropy on ``s * cos``; never worse.

        Uses the examples added since this head was created or loaded. Rows stay unit vectors (so the
        model keeps Coral's structure and stays resumable); ``prior`` pulls each row back towards
        its imprinted direction, which keeps 1-shot classes from drifting.

        Guarded so it cannot end worse than where it started:

        * a step that raises the training objective is undone and the step size halved
          (after :data:`MAX_STEP_REDUCTIONS` halvings it stops);
        * the loss is monitored on ``holdout`` of the examples of each class, held out of the
          steps, when every class with examples has at least :data:`HOLDOUT_MIN_PER_CLASS` of
          them (else on the training examples); it stops after ``patience`` steps without a new
          best, and the rows with the lowest monitored loss are kept, the imprinted ones (step 0)
          included, so the monitored loss after is never above the one before;
        * when examples were held out, the kept number of steps is then rerun on all examples
          (with the same guard, keeping the lowest training loss).

        Args:
            steps: most gradient steps (rejected ones count).
            learning_rate: the first step size.
            prior: weight of ``0.5 * ||row - imprinted row||^2``.
            train_scale: also learn ``s``.
            holdout: fraction of each class's examples held out to monitor (0: monitor training loss).
            patience: steps without a new lowest monitored loss before stopping.
            seed: chooses the held-out examples.
            stop: an event that, once set (e.g. at shutdown), ends the fine-tune after the current step;
                the best rows found until then are kept, as when it stops early.

        Returns:
            a :class:`FinetuneResult` (its ``losses`` is the training loss per step, what this
            method returned before; the result also indexes and iterates like that list).
        """
        pairs = [(k, e) for k, c in enumerate(self.classes_ or []) for e in c.examples]
        if not pairs:
            raise TrainingError("finetune needs the examples of this session; add examples first")
        if int(steps) < 0 or not float(learning_rate) > 0 or not 0 <= float(holdout) < 1 or int(patience) < 1 or float(prior) < 0:
            raise TrainingError("finetune needs steps >= 0, learning_rate > 0, 0 <= holdout < 1, patience >= 1 and prior >= 0")
        X = np.concatenate([e for _, e in pairs])
        y = np.concatenate([np.full(len(e), k) for k, e in pairs])
        rows = self.rows().astype(np.float64)
        problem = Descent(rows, np.array([c.trainable for c in self.classes_]), float(prior), bool(train_scale), stop)
        train, held = holdout_split(y, float(holdout), int(seed))
        with blas_threads(len(X) * X.shape[1] * len(rows)):
            if len(held):
                # Start the monitored run from rows imprinted without the held-out examples, so that
                # step 0 is judged on examples it has not seen either.
                sums = np.stack([c.weights for c in self.classes_])
                np.add.at(sums, y[held], -X[held])
                start = np.where(problem.trainable[:, None], unit_rows(sums), rows)
                first = Descent(start, problem.trainable, problem.prior, problem.train_scale, stop).run(
                    X[train], y[train], X[held], y[held], float(self.scale), int(steps), float(learning_rate), int(patience))
                final = problem.run(X, y, X, y, float(self.scale), first.best_step, float(learning_rate), first.best_step + 1)
                result = FinetuneResult(
                    losses=first.losses, monitored=first.monitored, monitored_on="held-out", loss_before=first.monitored[0],
                    loss_after=min(first.monitored), best_step=first.best_step, steps_run=first.steps_run,
                    step_reductions=first.reductions, stopped_early=first.stopped_early, learning_rate=first.learning_rate,
                    scale=final.best_scale, held_out=int(len(held)), refit_steps=final.best_step,
                    train_loss_before=final.monitored[0], train_loss_after=min(final.monitored))
            else:
                final = problem.run(X, y, X, y, float(self.scale), int(steps), float(learning_rate), int(patience))
                result = FinetuneResult(
                    losses=final.losses, monitored=final.monitored, monitored_on="training", loss_before=final.monitored[0],
                    loss_after=min(final.monitored), best_step=final.best_step, steps_run=final.steps_run,
                    step_reductions=final.reductions, stopped_early=final.stopped_early, learning_rate=final.learning_rate,
                    scale=final.best_scale, held_out=0, refit_steps=0,
                    train_loss_before=final.monitored[0], train_loss_after=min(final.monitored))
        for index, klass in enumerate(self.classes_):
            if klass.trainable:
                klass.weights = final.best_rows[index] * max(float(np.linalg.norm(klass.weights)), 1.0)
        self.scale = final.best_scale
        return result

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

    @classmethod
    def from_examples(cls, X: np.ndarray, y: np.ndarray, labels: Sequence[str], *, scale: float = DEFAULT_SCALE,
                      base_rows: np.ndarray | None = None, base_shots: Sequence[int] | None = None,
                      trainable: Sequence[bool] | None = None, rows: Mapping[int, np.ndarray] | None = None,
                      dim: int | None = None) -> ImprintingHead:
        """A head with one class per label, imprinted from kept examples: class ``c`` from the rows ``X[y == c]``.

        How a caller that stores examples itself (e.g. a teaching state) rebuilds the head in one call.

        Args:
            X: embeddings ``[n, D]`` (normalised here; ``n`` may be 0).
            y: the class of each row, ``0 .. len(labels) - 1``.
            labels: the class names, in class-id order.
            scale: the ``s`` of ``s * cos``.
            base_rows: ``[C, D]`` running sums the classes start from (e.g. carried over from a saved model);
                zeros when ``None``.
            base_shots: how many examples each base row stands for.
            trainable: ``False`` marks a fixed base class (it takes no examples).
            rows: running sums replacing the imprinted ones of some classes (e.g. rows kept from a
                fine-tune, see :meth:`sums`).
            dim: ``D``, needed only when there are neither examples nor base rows.
        """
        names = [str(label) for label in labels]
        if np.size(X):
            X = check_features(X, dim).astype(np.float64)
            width = X.shape[1]
        else:
            width = int(np.shape(base_rows)[-1]) if base_rows is not None else dim
            if width is None:
                raise TrainingError("from_examples needs examples, base rows or dim to know the embedding size")
            X = np.zeros((0, width))
        y = check_labels(y, len(X), len(names)) if len(X) else np.zeros(0, dtype=np.int64)
        base = np.zeros((len(names), width)) if base_rows is None or not names else \
            check_features(base_rows, width, "base rows").astype(np.float64)
        head = cls(scale=scale)
        classes = head._ensure_started(width)
        units = unit_rows(X)
        for index, label in enumerate(names):
            mine = units[y == index]
            fixed = trainable is not None and not trainable[index]
            if fixed and len(mine):
                raise TrainingError(f"class {label!r} is a fixed base class and cannot take examples")
            weights = np.asarray(rows[index], dtype=np.float64) if rows is not None and index in rows else base[index] + mine.sum(axis=0)
            shots = (0 if base_shots is None else int(base_shots[index])) + len(mine)
            classes.append(_Class(weights, not fixed, label, shots, [mine] if len(mine) else []))
        return head
