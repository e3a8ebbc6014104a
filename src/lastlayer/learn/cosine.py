"""Cosine geometry of imprinting: unit rows, and how well imprinting predicts its own examples left out one by one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from lastlayer.report.intervals import Count, count
from lastlayer.report.metrics import confusion_matrix

NORM_EPSILON = 1e-5


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (rows with a norm below 1e-5 are left as they are), float64."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.array(vectors, dtype=np.float64), where=norms > NORM_EPSILON)


def leave_one_out(units: np.ndarray, y: np.ndarray, num_classes: int, scale: float) -> np.ndarray:
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
        cosine = np.where(norms > NORM_EPSILON, rows @ u / np.maximum(norms, NORM_EPSILON), -np.inf)
        logits[i] = scale * cosine
    predicted = np.argmax(logits, axis=1)
    predicted[~np.isfinite(logits.max(axis=1))] = -1
    return predicted


@dataclass
class LeaveOneOutReport:
    """Leave-one-out accuracy per class (``None`` for a class with one example) and over all, with the confusion matrix.

    ``confusion[i][j]`` counts examples of class ``labels[i]`` predicted as ``labels[j]``. ``right`` and
    ``per_class_right`` say on how many examples each accuracy was counted, with its 95 % interval
    (:meth:`summary`: ``leave-one-out 25 / 25 right, 95 % interval 0.86-1.00``).
    """

    labels: list[str]
    per_class: dict[str, float | None]
    accuracy: float | None
    confusion: list[list[int]]
    examples: int
    notes: list[str] = field(default_factory=list)
    right: Count | None = None
    per_class_right: dict[str, Count | None] = field(default_factory=dict)

    def summary(self) -> str:
        """``leave-one-out 25 / 25 right, 95 % interval 0.86-1.00``, or why there is no figure."""
        if self.right is None:
            return "leave-one-out: " + ("; ".join(self.notes) or "no figures")
        return f"leave-one-out {self.right.describe()}"

    def to_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "per_class": self.per_class, "accuracy": self.accuracy,
                "confusion": self.confusion, "examples": self.examples, "notes": self.notes,
                "right": None if self.right is None else self.right.to_dict(),
                "per_class_right": {k: None if v is None else v.to_dict() for k, v in self.per_class_right.items()},
                "summary": self.summary(),
                "per_class_summary": {k: None if v is None else v.describe() for k, v in self.per_class_right.items()}}


def leave_one_out_report(units_by_class: Sequence[np.ndarray], labels: Sequence[str], scale: float) -> LeaveOneOutReport:
    """Predict each example from the classes imprinted without it (``units_by_class[i]``: ``[n_i, D]`` of ``labels[i]``).

    Classes without examples are left out; fewer than two classes with examples give no figures, only a note.
    """
    taught = [(str(label), np.asarray(units, dtype=np.float64)) for label, units in zip(labels, units_by_class) if len(units)]
    names = [label for label, _ in taught]
    if len(taught) < 2:
        return LeaveOneOutReport(names, {n: None for n in names}, None, [], sum(len(u) for _, u in taught),
                                 ["evaluation needs at least 2 classes with examples"])
    X = np.concatenate([units for _, units in taught])
    y = np.concatenate([np.full(len(units), i) for i, (_, units) in enumerate(taught)])
    predicted = leave_one_out(X, y, len(taught), scale)
    per_class: dict[str, float | None] = {}
    per_class_right: dict[str, Count | None] = {}
    notes = []
    for index, (name, units) in enumerate(taught):
        if len(units) < 2:
            per_class[name] = per_class_right[name] = None
            notes.append(f"class {name!r} has 1 example: leave-one-out needs at least 2")
        else:
            per_class_right[name] = count(int(np.sum(predicted[y == index] == index)), len(units))
            per_class[name] = per_class_right[name].value
    counted = np.isin(y, [i for i, (_, units) in enumerate(taught) if len(units) >= 2])
    right = count(int(np.sum(predicted[counted] == y[counted])), int(counted.sum())) if counted.any() else None
    known = predicted >= 0
    confusion = confusion_matrix(y[known], predicted[known], len(taught)).tolist()
    return LeaveOneOutReport(names, per_class, None if right is None else right.value, confusion, len(y), notes, right,
                             per_class_right)
