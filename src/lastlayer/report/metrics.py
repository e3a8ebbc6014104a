"""Metrics of a classifier on labelled images: accuracy, per-class precision/recall, confusion matrix.

Dataset classes may be a subset of the model's classes (``class_ids`` maps them); predictions of
a class outside the dataset land in an extra "other" column of the confusion matrix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lastlayer.report.intervals import count

OTHER = "(other class)"


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, rows: int, columns: int | None = None) -> np.ndarray:
    """``matrix[true, predicted]`` counts."""
    matrix = np.zeros((rows, columns or rows), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    return matrix


_ROWS_AT_ONCE = 1024  # bounds the memory of top_k_accuracy to rows x classes booleans


def top_k_accuracy(scores: np.ndarray, y_true: np.ndarray, k: int) -> float:
    """Fraction of rows whose true class is among the ``k`` highest scores (ties go to the lower class id).

    Counts the classes ranked ahead of the true one instead of sorting: linear in the classes, and
    a few rows at a time, so 10,000 images x 1,000 classes need about a megabyte.
    """
    y_true = np.asarray(y_true, dtype=int)
    columns = np.arange(scores.shape[1])
    hits = 0
    for start in range(0, len(y_true), _ROWS_AT_ONCE):
        block, truth = scores[start:start + _ROWS_AT_ONCE], y_true[start:start + _ROWS_AT_ONCE]
        own = block[np.arange(len(block)), truth][:, None]
        ahead = np.count_nonzero(block > own, axis=1) + np.count_nonzero((block == own) & (columns < truth[:, None]), axis=1)
        hits += int(np.count_nonzero((ahead < k) & ~np.isnan(own[:, 0])))
    return hits / len(y_true) if len(y_true) else 0.0


def classification_report(
    y_true: np.ndarray, scores: np.ndarray, classes: Sequence[str], class_ids: Sequence[int] | None = None
) -> dict[str, Any]:
    """Top-1/top-5 accuracy, per-class precision/recall/support and the confusion matrix, JSON-ready.

    ``top1_right`` is how many were right and ``top1_interval`` the 95 % interval of the top-1 accuracy
    (Clopper-Pearson, see :mod:`lastlayer.report.intervals`).

    ``y_true`` holds dataset class indices (into ``classes``); ``scores`` is ``[n, model classes]``;
    ``class_ids[i]`` is the model's id of dataset class ``i`` (default: the same index).
    """
    y_true = np.asarray(y_true, dtype=int)
    ids = np.arange(len(classes)) if class_ids is None else np.asarray(class_ids, dtype=int)
    if len(y_true) == 0:
        return {"samples": 0, "top1_accuracy": None, "top1_right": 0, "top1_interval": None, "top5_accuracy": None,
                "per_class": {}, "confusion_matrix": [],
                "classes": list(classes), "columns": list(classes)}
    truth = ids[y_true]
    predicted = np.argmax(scores, axis=1)
    local = {int(m): i for i, m in enumerate(ids)}
    pred_local = np.array([local.get(int(p), len(classes)) for p in predicted])
    has_other = bool(np.any(pred_local == len(classes)))
    columns = list(classes) + ([OTHER] if has_other else [])
    matrix = confusion_matrix(y_true, pred_local, len(classes), len(columns))
    per_class = {}
    for i, name in enumerate(classes):
        support, predicted_as = int(matrix[i].sum()), int(matrix[:, i].sum())
        per_class[name] = {
            "precision": float(matrix[i, i] / predicted_as) if predicted_as else None,
            "recall": float(matrix[i, i] / support) if support else None,
            "support": support,
        }
    right = count(int(np.sum(predicted == truth)), len(y_true))
    return {
        "samples": int(len(y_true)),
        "top1_accuracy": float(np.mean(predicted == truth)),
        "top1_right": right.hits,
        "top1_interval": [round(right.low, 6), round(right.high, 6)],
        "top5_accuracy": top_k_accuracy(scores, truth, 5) if scores.shape[1] > 5 else None,  # always 1 with <= 5 classes
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "classes": list(classes),
        "columns": columns,
    }


def misclassified(
    paths: Sequence[Path | str], y_true: np.ndarray, scores: np.ndarray, classes: Sequence[str],
    class_ids: Sequence[int] | None = None, labels: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The images whose top-1 class is wrong, with what they were taken for."""
    ids = np.arange(len(classes)) if class_ids is None else np.asarray(class_ids, dtype=int)
    wrong = []
    for path, truth, row in zip(paths, np.asarray(y_true, dtype=int), scores):
        predicted = int(np.argmax(row))
        if predicted != int(ids[truth]):
            name = labels[predicted] if labels is not None and predicted < len(labels) else str(predicted)
            wrong.append({"file": str(path), "true": classes[truth], "predicted": name, "score": round(float(row[predicted]), 4)})
    return wrong


def text_table(report: dict[str, Any]) -> str:
    """A short per-class table with the overall accuracy, for the terminal."""
    width = max([len(c) for c in report["classes"]] + [5])
    lines = [f"{'class':<{width}}  precision  recall  support"]
    for name, row in report["per_class"].items():
        precision = "-" if row["precision"] is None else f"{row['precision']:.3f}"
        recall = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        lines.append(f"{name:<{width}}  {precision:>9}  {recall:>6}  {row['support']:>7}")
    if report["top1_accuracy"] is not None:
        top5 = "" if report.get("top5_accuracy") is None else f", top-5 {report['top5_accuracy']:.3f}"
        right = report.get("top1_right")
        honest = f" ({count(right, report['samples']).describe()})" if right is not None else f" on {report['samples']} images"
        lines.append(f"top-1 accuracy {report['top1_accuracy']:.3f}{honest}{top5}")
    return "\n".join(lines)


CURVE_POINTS = 101


def rejection_curve(known_similarity: np.ndarray, known_right: np.ndarray, other_similarity: np.ndarray | None = None,
                    points: int = CURVE_POINTS) -> dict[str, list[float] | None]:
    """What each unknown threshold would give, from the lowest to the highest similarity seen.

    Per threshold: ``known_accuracy`` (share of known photos accepted and right), ``known_rejected``
    (share of known photos answered unknown) and ``other_rejected`` (share of the other photos
    answered unknown; ``None`` without other photos). A photo is unknown when its similarity is
    below the threshold.
    """
    known = np.asarray(known_similarity, dtype=np.float64)
    right = np.asarray(known_right, dtype=bool)
    other = None if other_similarity is None else np.asarray(other_similarity, dtype=np.float64)
    seen = np.concatenate([known] + ([other] if other is not None else []))
    seen = seen[np.isfinite(seen)]
    low, high = (float(seen.min()), float(seen.max())) if len(seen) else (0.0, 1.0)
    thresholds = np.linspace(low, np.nextafter(high, np.inf), points)
    accepted = known[None, :] >= thresholds[:, None]
    return {
        "thresholds": [round(float(t), 6) for t in thresholds],
        "known_accuracy": [round(float(v), 6) for v in (accepted & right[None, :]).mean(axis=1)],
        "known_rejected": [round(float(v), 6) for v in 1.0 - accepted.mean(axis=1)],
        "other_rejected": None if other is None else [round(float(v), 6) for v in (other[None, :] < thresholds[:, None]).mean(axis=1)],
    }
