"""Report arithmetic: top-k accuracy without sorting, ties and chunks included."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.report import metrics as report
from lastlayer.report.metrics import classification_report, top_k_accuracy


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


def test_rejection_curve_counts_each_threshold():
    from lastlayer.report.metrics import rejection_curve

    curve = rejection_curve(np.array([0.2, 0.5, 0.8, 0.9]), np.array([True, False, True, True]), np.array([0.1, 0.6]), points=3)
    assert curve["thresholds"][0] == 0.1 and curve["thresholds"][-1] == pytest.approx(0.9)
    # from the lowest similarity (nothing below it) to just above the highest (everything below it)
    assert curve["known_accuracy"] == [0.75, 0.5, 0.0]  # accepted (similarity >= threshold) and right, of all known
    assert curve["known_rejected"] == [0.0, 0.5, 1.0]  # the middle threshold lies just above 0.5
    assert curve["other_rejected"] == [0.0, 0.5, 1.0]
    assert rejection_curve(np.array([0.3]), np.array([True]))["other_rejected"] is None


def test_threshold_curve_png_marks_the_threshold_in_use():
    import io

    from PIL import Image

    from lastlayer.report.metrics import rejection_curve
    from lastlayer.report.plot import threshold_curve_png

    curve = rejection_curve(np.linspace(0.3, 0.9, 50), np.ones(50, dtype=bool), np.linspace(0.1, 0.5, 20))
    image = Image.open(io.BytesIO(threshold_curve_png(curve, 0.4, "t"))).convert("RGB")
    pixels = np.asarray(image)
    marker = np.all(pixels == (200, 30, 30), axis=2)
    assert image.format is None and marker.any()  # the red line of the threshold in use
    unmarked = np.asarray(Image.open(io.BytesIO(threshold_curve_png(curve, 5.0, "t"))).convert("RGB"))
    assert not np.all(unmarked == (200, 30, 30), axis=2).any()  # outside the curve: no marker


def test_top1_says_on_how_many_with_its_interval():
    scores = np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1, 2, 0]]
    truth = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 1])  # 9 / 10 right
    found = classification_report(truth, scores, ["a", "b", "c"])
    assert found["top1_right"] == 9 and found["top1_interval"] == pytest.approx([0.5550, 0.9975], abs=1e-4)  # R: binom.test(9, 10)
    assert report.text_table(found).splitlines()[-1] == "top-1 accuracy 0.900 (9 / 10 right, 95 % interval 0.55-1.00)"
