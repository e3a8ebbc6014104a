"""embed_dataset over the pool: identical files run once, unreadable rows dropped in place, cache filled straight into X."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from lastlayer.embeddings.cache import embed_dataset
from lastlayer.files.datasets import DatasetWarning, load_dataset
from lastlayer.images.decode import load_resized
from lastlayer.runtime import Interpreter
from lastlayer.runtime import batch as batch_module

from conftest import EXTRACTOR


def _dataset(images_dir: Path, folder: Path) -> Path:
    """Two classes; ``a`` holds the same photo under three names, ``b`` a broken file and its copy."""
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        (folder / "a" / name).symlink_to(images_dir / "owl.jpg")
    (folder / "b" / "cat.bmp").symlink_to(images_dir / "cat.bmp")
    broken = (images_dir / "parrot.jpg").read_bytes()[:300]
    (folder / "b" / "broken.jpg").write_bytes(broken)
    (folder / "b" / "broken copy.jpg").write_bytes(broken)
    (folder / "b" / "parrot.jpg").symlink_to(images_dir / "parrot.jpg")
    return folder


def test_identical_files_are_run_once_and_unreadable_rows_are_dropped(model_file, images_dir, tmp_path, monkeypatch):
    data = load_dataset(_dataset(images_dir, tmp_path / "d"))
    decoded: list[str] = []
    real = batch_module.load_resized
    monkeypatch.setattr(batch_module, "load_resized", lambda path, size: decoded.append(Path(path).name) or real(path, size))
    interpreter = Interpreter(model_file(EXTRACTOR))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embedded = embed_dataset(interpreter, data, progress=False, use_cache=False)
    assert sorted(decoded) == ["1.jpg", "broken copy.jpg", "cat.bmp", "parrot.jpg"]  # one decode per distinct content
    assert sorted(Path(p).name for p in embedded.unreadable) == ["broken copy.jpg", "broken.jpg"]
    # the broken file and its copy are one content: one warning, both rows dropped
    assert len([w for w in caught if issubclass(w.category, DatasetWarning) and "unreadable" in str(w.message)]) == 1
    names = [p.name for p in embedded.dataset.paths]
    assert names == ["1.jpg", "2.jpg", "3.jpg", "cat.bmp", "parrot.jpg"] and embedded.y.tolist() == [0, 0, 0, 1, 1]
    assert embedded.X.shape == (5, 1024) and embedded.X.flags.c_contiguous
    for row, path in zip(embedded.X, embedded.dataset.paths):
        np.testing.assert_array_equal(row, interpreter.run(load_resized(path, interpreter.input_size)))


def test_a_warm_run_fills_every_row_from_the_cache(model_file, images_dir, tmp_path):
    data = _dataset(images_dir, tmp_path / "d")
    interpreter = Interpreter(model_file(EXTRACTOR))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        cold = embed_dataset(interpreter, load_dataset(data), progress=False)
        warm = embed_dataset(interpreter, load_dataset(data), progress=False)
    assert cold.cached == 0 and warm.cached == 5  # the readable ones; the broken two are tried again
    np.testing.assert_array_equal(warm.X, cold.X)
    assert [p.name for p in warm.dataset.paths] == [p.name for p in cold.dataset.paths]
