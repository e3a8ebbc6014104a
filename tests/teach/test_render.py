"""The one renderer of synthetic parts: camera scenes for the live tests and the demo's dataset of parts and defects."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lastlayer.teach.render import DEFECT_KINDS, KINDS, render_frame


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
