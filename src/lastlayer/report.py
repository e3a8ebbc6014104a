"""Metrics of a classifier on labelled data: accuracy, per-class precision/recall, confusion matrix."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``matrix[true, predicted]`` counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    return matrix


def top_k_accuracy(scores: np.ndarray, y_true: np.ndarray, k: int) -> float:
    """Fraction of rows whose true class is among the ``k`` highest scores."""
    if len(y_true) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == np.asarray(y_true)[:, None], axis=1)))


def classification_report(y_true: np.ndarray, scores: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Top-1/top-5 accuracy, per-class precision/recall/support and the confusion matrix, JSON-ready."""
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.argmax(scores, axis=1) if len(y_true) else np.zeros(0, dtype=int)
    matrix = confusion_matrix(y_true, y_pred, len(classes))
    per_class = {}
    for i, name in enumerate(classes):
        support = int(matrix[i].sum())
        predicted = int(matrix[:, i].sum())
        per_class[name] = {
            "precision": float(matrix[i, i] / predicted) if predicted else None,
            "recall": float(matrix[i, i] / support) if support else None,
            "support": support,
        }
    return {
        "samples": int(len(y_true)),
        "top1_accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else None,
        "top5_accuracy": top_k_accuracy(scores, y_true, 5) if len(y_true) else None,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "classes": list(classes),
    }
