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
from typing import Iterator, Sequence

import numpy as np

from lastlayer.errors import TrainingError
from lastlayer.layer import DenseLayer
from lastlayer.learn.losses import cross_entropy, softmax
from lastlayer.learn.threads import blas_threads
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


# Fine-tuning monitors a held-out part of the examples (HOLDOUT_RATIO of each class, at least one)
# when every class with examples has at least HOLDOUT_MIN_PER_CLASS of them; else the training loss.
# Measured (benchmarks/accuracy.py): at 10 per class the 2 held-out examples were too few to judge and
# cost up to 0.014 against monitoring the training loss; with all shots (40-60 per class) it was within
# 0.006 of it on flowers and clothing, and 0.013 better on a large imbalanced pool that diverged.
HOLDOUT_RATIO = 0.2
HOLDOUT_MIN_PER_CLASS = 20
# Halvings of the step size (each after a step that raised the training objective) before stopping.
MAX_STEP_REDUCTIONS = 10


@dataclass
class FinetuneResult:
    """What :meth:`ImprintingHead.finetune` did.

    Attributes:
        losses: training cross-entropy at the start of each step tried, ``losses[0]`` that of the rows the
            monitored run started from (what ``finetune`` returned before, one entry per step;
            ``result[0]``, ``result[-1]``, ``len(result)`` still work).
        monitored: the monitored loss (held-out or training cross-entropy) of the start rows and after
            each accepted step; the rows kept are those of its minimum.
        monitored_on: ``"held-out"`` or ``"training"``.
        loss_before: monitored loss of the imprinted rows.
        loss_after: monitored loss of the rows kept (never above ``loss_before``).
        best_step: the step whose rows were kept (0: the imprinted rows, nothing changed).
        steps_run: gradient steps tried (accepted and undone).
        step_reductions: how often a rise of the training objective halved the step.
        stopped_early: stopped before ``steps`` (no new best for ``patience`` steps, or the step became too small).
        learning_rate: the step size at the end.
        scale: ``s`` of the rows kept.
        held_out: examples held out for monitoring (0 when monitoring the training loss).
        refit_steps: steps rerun on all examples after a held-out run (0 otherwise).
        train_loss_before, train_loss_after: training cross-entropy on all examples of the imprinted
            and the kept rows.
    """

    losses: list[float]
    monitored: list[float]
    monitored_on: str
    loss_before: float
    loss_after: float
    best_step: int
    steps_run: int
    step_reductions: int
    stopped_early: bool
    learning_rate: float
    scale: float
    held_out: int
    refit_steps: int
    train_loss_before: float
    train_loss_after: float

    @property
    def improved(self) -> bool:
        """Whether rows other than the imprinted ones were kept."""
        return self.best_step > 0

    def summary(self) -> str:
        """One line for a log, e.g. ``loss 0.713 -> 0.402 (held-out, best of 120 steps at step 92, 1 step reduction)``."""
        text = f"loss {self.loss_before:.3f} -> {self.loss_after:.3f} ({self.monitored_on} loss, "
        text += f"best of {self.steps_run} steps at step {self.best_step}" if self.improved else \
            f"no step improved on imprinting in {self.steps_run}; kept the imprinted rows"
        if self.step_reductions:
            text += f", {self.step_reductions} step reduction{'s' if self.step_reductions > 1 else ''}"
        return text + (", stopped early)" if self.stopped_early else ")")

    def __len__(self) -> int:
        return len(self.losses)

    def __getitem__(self, index: int) -> float:
        return self.losses[index]

    def __iter__(self) -> Iterator[float]:
        return iter(self.losses)


def _holdout_split(y: np.ndarray, ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices: ``ratio`` of each class held out if every class has >= HOLDOUT_MIN_PER_CLASS examples."""
    counts = np.bincount(y)
    if ratio <= 0 or counts[counts > 0].min() < HOLDOUT_MIN_PER_CLASS:
        return np.arange(len(y)), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    held = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: max(1, round(ratio * counts[c]))] for c in np.flatnonzero(counts)])
    return np.setdiff1d(np.arange(len(y)), held), np.sort(held)


@dataclass
class _Run:
    losses: list[float]
    monitored: list[float]
    best_rows: np.ndarray
    best_scale: float
    best_step: int
    steps_run: int
    reductions: int
    stopped_early: bool
    learning_rate: float


@dataclass
class _Descent:
    """Guarded projected gradient descent on unit rows: the math of :meth:`ImprintingHead.finetune`."""

    anchor: np.ndarray
    trainable: np.ndarray
    prior: float
    train_scale: bool

    def objective(self, rows: np.ndarray, s: float, X: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray, float]:
        """(cross-entropy, objective with the prior, gradient wrt rows, gradient wrt s)."""
        cosine = X @ rows.T
        loss, d_logits = cross_entropy(s * cosine, y)
        grad = s * d_logits.T @ X + self.prior * (rows - self.anchor)
        penalty = 0.5 * self.prior * float(np.sum((rows - self.anchor)[self.trainable] ** 2))
        return loss, loss + penalty, grad, float((d_logits * cosine).sum())

    def run(self, X: np.ndarray, y: np.ndarray, X_mon: np.ndarray, y_mon: np.ndarray, scale: float, steps: int,
            learning_rate: float, patience: int) -> _Run:
        same = X_mon is X
        rows, s, lr = self.anchor.copy(), scale, learning_rate
        loss, objective, grad, grad_s = self.objective(rows, s, X, y)
        monitored = loss if same else cross_entropy(s * (X_mon @ rows.T), y_mon)[0]
        run = _Run([], [monitored], rows, s, 0, 0, 0, False, lr)
        accepted = stale = 0
        while run.steps_run < steps:
            run.steps_run += 1
            run.losses.append(loss)
            candidate = rows.copy()
            candidate[self.trainable] = unit_rows(rows[self.trainable] - lr * grad[self.trainable])
            s_new = max(1.0, s - lr * grad_s) if self.train_scale else s
            c_loss, c_objective, c_grad, c_grad_s = self.objective(candidate, s_new, X, y)
            if not c_objective <= objective:
                run.reductions += 1
                lr *= 0.5
                if run.reductions > MAX_STEP_REDUCTIONS:
                    run.stopped_early = True
                    break
                continue
            rows, s, loss, objective, grad, grad_s = candidate, s_new, c_loss, c_objective, c_grad, c_grad_s
            accepted += 1
            monitored = loss if same else cross_entropy(s * (X_mon @ rows.T), y_mon)[0]
            run.monitored.append(monitored)
            if monitored < min(run.monitored[:-1]):
                run.best_rows, run.best_scale, run.best_step, stale = rows, s, accepted, 0
            else:
                stale += 1
                if stale >= patience:
                    run.stopped_early = run.steps_run < steps
                    break
        run.learning_rate = lr
        return run


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
    def finetune(self, steps: int = 300, learning_rate: float = 0.1, *, prior: float = 0.01, train_scale: bool = False,
                 holdout: float = HOLDOUT_RATIO, patience: int = 30, seed: int = 0) -> FinetuneResult:
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
        problem = _Descent(rows, np.array([c.trainable for c in self.classes_]), float(prior), bool(train_scale))
        train, held = _holdout_split(y, float(holdout), int(seed))
        with blas_threads(len(X) * X.shape[1] * len(rows)):
            if len(held):
                # Start the monitored run from rows imprinted without the held-out examples, so that
                # step 0 is judged on examples it has not seen either.
                sums = np.stack([c.weights for c in self.classes_])
                np.add.at(sums, y[held], -X[held])
                start = np.where(problem.trainable[:, None], unit_rows(sums), rows)
                first = _Descent(start, problem.trainable, problem.prior, problem.train_scale).run(
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
