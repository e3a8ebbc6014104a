"""Report arithmetic: top-k accuracy without sorting, ties and chunks included."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer import report
from lastlayer.report import classification_report, top_k_accuracy


def _by_sorting(scores: np.ndarray, truth: np.ndarray, k: int) -> float:
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == truth[:, None], axis=1)))


@pytest.mark.parametrize("ties", [False, True])
def test_top_k_counts_the_classes_ahead_like_a_stable_sort(monkeypatch, ties):
    monkeypatch.setattr(report, "_ROWS_AT_ONCE", 7)  # several chunks, the last one partial
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 3, (50, 12)).astype(np.float32) if ties else rng.random((50, 12), dtype=np.float32)
    truth = rng.integers(0, 12, 50)
    for k in (1, 2, 5, 12):
        assert top_k_accuracy(scores, truth, k) == _by_sorting(scores, truth, k)


def test_top_k_edge_cases():
    scores = np.array([[0.1, 0.9, 0.5], [np.nan, 0.2, 0.3], [0.5, 0.5, 0.5]], dtype=np.float32)
    assert top_k_accuracy(scores, np.array([1, 0, 2]), 1) == pytest.approx(1 / 3)  # NaN never counts; a tie goes to id 0
    assert top_k_accuracy(scores, np.array([1, 0, 2]), 3) == pytest.approx(2 / 3)
    assert top_k_accuracy(np.zeros((0, 3)), np.array([], dtype=int), 5) == 0.0


def test_report_top5_on_many_classes():
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(40), 3)
    scores = rng.random((120, 40), dtype=np.float32)
    scores[np.arange(120), truth] += np.arange(120) % 2  # every second image clearly right
    result = classification_report(truth, scores, [f"c{i}" for i in range(40)])
    assert result["top5_accuracy"] == _by_sorting(scores, truth, 5)
    assert result["top1_accuracy"] >= 0.5 and result["top5_accuracy"] >= result["top1_accuracy"]
