"""Softmax and its cross-entropy gradient: the one piece of calculus every head shares."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def cross_entropy(logits: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Mean (weighted) softmax cross-entropy of ``logits`` [n, C] for labels ``y``, and d loss / d logits."""
    n = len(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    weights = np.ones(n, dtype=logits.dtype) if sample_weight is None else sample_weight
    loss = float(-(weights * log_p[np.arange(n), y]).sum() / n)
    d_logits = np.exp(log_p)
    d_logits[np.arange(n), y] -= 1.0
    d_logits *= (weights / n)[:, np.newaxis]
    return loss, d_logits
