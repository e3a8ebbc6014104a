"""Confusion PNGs drawn with Pillow: readable counts, bounded size, most-confused view, side by side."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lastlayer.report.plot import CELL, MAX_CLASSES, confusion_image, most_confused, save_confusion_png


def _report(matrix: np.ndarray) -> dict:
    names = [f"class{i:03d}" for i in range(len(matrix))]
    return {"confusion_matrix": matrix.tolist(), "classes": names, "columns": names}


def _cells(image: Image.Image, report: dict) -> list[np.ndarray]:
    """The pixels of each cell, found from the grid geometry (cells are CELL px squares at the bottom right)."""
    pixels = np.asarray(image.convert("L"), dtype=np.int32)
    n = len(report["classes"])
    bottom = pixels.shape[0] - 40
    left = next(x for x in range(pixels.shape[1]) if pixels[bottom - CELL // 2, x] < 250 and pixels[bottom - 2, x] < 250
                and x > 8 + 7 * len("class000"))
    return [pixels[bottom - (n - i) * CELL + 3: bottom - (n - i - 1) * CELL - 3, left + j * CELL + 3: left + (j + 1) * CELL - 3]
            for i in range(n) for j in range(n)]


def test_every_count_contrasts_with_its_cell_even_without_zero_cells():
    matrix = np.array([[40, 3, 2], [4, 30, 6], [1, 2, 50]])
    report = _report(matrix)
    image = confusion_image(report, "model.tflite on test")
    for cell in _cells(image, report):
        background = np.median(cell)
        assert np.abs(cell - background).max() > 100  # the digits stand out, dark cell or light


def test_size_grows_with_classes_then_stops_at_the_most_confused():
    twenty = confusion_image(_report(np.eye(20, dtype=int) * 3), "t")
    thirty = confusion_image(_report(np.eye(30, dtype=int) * 3), "t")
    assert thirty.width - twenty.width == 10 * CELL and thirty.height - twenty.height == 10 * CELL
    rng = np.random.default_rng(0)
    big = rng.integers(0, 3, size=(400, 400)) + np.eye(400, dtype=int) * 20
    image = confusion_image(_report(big), "t")
    assert image.width < (MAX_CLASSES + 12) * CELL and image.height < (MAX_CLASSES + 12) * CELL
    chosen = most_confused(big)
    errors = big.sum(0) + big.sum(1) - 2 * np.diag(big)
    assert len(chosen) == MAX_CLASSES and errors[chosen].min() >= np.sort(errors)[-MAX_CLASSES]


def test_two_models_side_by_side(tmp_path):
    report = _report(np.array([[3, 1], [0, 4]]))
    one = Image.open(save_confusion_png(report, tmp_path / "one.png", "a"))
    both = Image.open(save_confusion_png([report, report], tmp_path / "both.png", ["a", "b"]))
    assert both.width == 2 * one.width + 10 and both.height == one.height
    assert save_confusion_png(_report(np.zeros((0, 0), dtype=int)), tmp_path / "none.png") is None
