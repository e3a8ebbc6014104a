"""The guarded gradient descent behind :meth:`lastlayer.learn.imprinting.ImprintingHead.finetune`, and what it reports."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from lastlayer.learn.cosine import unit_rows
from lastlayer.learn.losses import cross_entropy

# Fine-tuning monitors a held-out part of the examples (HOLDOUT_RATIO of each class, at least one)
# when every class with examples has at least HOLDOUT_MIN_PER_CLASS of them; else the training loss.
# Measured (benchmarks/accuracy.py): at 10 per class the 2 held-out examples were too few to judge and
# cost up to 0.014 against monitoring the training loss; with all shots (40-60 per class) it was within
# 0.006 of it on flowers and clothing, and 0.013 better on a large imbalanced pool that diverged.
HOLDOUT_RATIO = 0.2
HOLDOUT_MIN_PER_CLASS = 20
# Halvings of the step size (each after a step that raised the training objective) before stopping.
MAX_STEP_REDUCTIONS = 10
# A monitored loss this low before fine-tuning (it prints as 0.000) leaves nothing to learn: the imprinted rows
# already give every monitored example nearly all of its probability.
NOTHING_TO_LEARN = 5e-4


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

    @property
    def nothing_to_learn(self) -> bool:
        """Whether the imprinted rows already fit the monitored examples (loss below :data:`NOTHING_TO_LEARN`)."""
        return self.loss_before < NOTHING_TO_LEARN

    def summary(self) -> str:
        """One line for a log, e.g. ``loss 0.713 -> 0.402 (held-out, best of 120 steps at step 92, 1 step reduction)``.

        When there was :attr:`nothing_to_learn`, it says so instead of ``loss 0.000 -> 0.000``.
        """
        if self.nothing_to_learn:
            kept = "kept the imprinted rows" if not self.improved else f"kept step {self.best_step} of {self.steps_run}"
            return (f"nothing to learn: the imprinted rows already fit the examples ({self.monitored_on} loss "
                    f"{self.loss_before:.1e} before, {self.loss_after:.1e} after; {kept})")
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


def holdout_split(y: np.ndarray, ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
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
class Descent:
    """Guarded projected gradient descent on unit rows: the math of :meth:`ImprintingHead.finetune`."""

    anchor: np.ndarray
    trainable: np.ndarray
    prior: float
    train_scale: bool
    stop: threading.Event | None = None  # when set, the run ends after the current step

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
            if self.stop is not None and self.stop.is_set():
                run.stopped_early = True
                break
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
