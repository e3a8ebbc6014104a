"""The one renderer of synthetic parts: camera scenes for the live tests and the demo's dataset of parts and defects."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lastlayer.images.decode import resize_array
from lastlayer.images.render import DEFECT_KINDS, KINDS, render_frame, segment_labels

from conftest import EXTRACTOR, need


def test_defects_are_their_part_with_something_missing():
    assert set(DEFECT_KINDS) <= set(KINDS)
    for defect, part in (("gear_chipped", "gear"), ("washer_scratched", "washer"), ("bracket_missing_hole", "bracket")):
        broken = render_frame(defect, 3, (160, 120), seed=2)
        np.testing.assert_array_equal(broken, render_frame(defect, 3, (160, 120), seed=2))  # deterministic
        whole = render_frame(part, 3, (160, 120), seed=2)
        differ = np.abs(broken.astype(int) - whole.astype(int)).max(axis=2) > 40
        assert 0.002 < differ.mean() < 0.2, defect  # a local change, not another scene


def test_the_demo_dataset_is_drawn_by_the_same_renderer(tmp_path):
    import zlib

    from lastlayer.demo import IMAGE_SIDE, make_dataset

    make_dataset(tmp_path, ["gear_chipped", "washer"], per_class=2, seed=0)
    saved = np.asarray(Image.open(tmp_path / "gear_chipped" / "gear_chipped_001.png"))
    surface = zlib.crc32(b"0:1")  # photo 1 of seed 0: the same work surface in every class
    np.testing.assert_array_equal(saved, render_frame("gear_chipped", 1, (IMAGE_SIDE, IMAGE_SIDE), surface))


# --- renderer ------------------------------------------------------------------------------------


def test_render_is_deterministic_and_jittered():
    a, b = render_frame("gear", 3), render_frame("gear", 3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (240, 320, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, render_frame("gear", 4))
    assert not np.array_equal(a, render_frame("gear", 3, seed=1))
    assert render_frame("washer", 0, size=(64, 48)).shape == (48, 64, 3)
    np.testing.assert_array_equal(render_frame("red", 0, size=(4, 2)), np.full((2, 4, 3), (255, 0, 0), np.uint8))
    assert {"gear", "washer", "bracket", "nut", "empty"} <= set(KINDS)
    with pytest.raises(ValueError, match="unknown kind"):
        render_frame("sprocket", 0)
    assert segment_labels([("gear", 2), ("nut", 1)]) == ["gear", "gear", "nut"]


def test_rendered_parts_are_separable_by_nearest_class_mean(models_dir):
    from lastlayer.runtime import Interpreter

    interpreter = Interpreter(need(models_dir / EXTRACTOR))
    kinds = ["gear", "washer", "bracket", "nut", "empty"]

    def embed(kind: str, indices: range) -> np.ndarray:
        rows = np.stack([interpreter.run(resize_array(render_frame(kind, i), interpreter.input_size)) for i in indices])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    means = np.stack([embed(kind, range(5)).mean(axis=0) for kind in kinds])
    for truth, kind in enumerate(kinds):
        predicted = np.argmax(embed(kind, range(100, 106)) @ means.T, axis=1)
        assert (predicted == truth).all(), (kind, [kinds[p] for p in predicted])
