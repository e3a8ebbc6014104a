from __future__ import annotations

import os

import numpy as np
import pytest

from lastlayer.embeddings.cache import embed_dataset
from lastlayer.errors import DatasetError, ImageError
from lastlayer.files.datasets import DatasetWarning, load_dataset, stratified_split, take_shots, too_small_to_hold_out
from lastlayer.runtime import Interpreter

from conftest import EXTRACTOR


def _copy(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())


@pytest.fixture
def folder(tmp_path, images_dir):
    root = tmp_path / "data"
    _copy(images_dir / "cat.bmp", root / "chat noir" / "a.bmp")
    _copy(images_dir / "owl.jpg", root / "chat noir" / "b.jpg")
    _copy(images_dir / "parrot.jpg", root / "Ölvogel ü" / "p.jpg")
    _copy(images_dir / "bird.bmp", root / "Ölvogel ü" / "q.bmp")
    (root / "chat noir" / "notes.txt").write_text("not an image")
    (root / "chat noir" / ".DS_Store").write_text("hidden")
    (root / ".hidden_class").mkdir()
    return root


def test_scan_sorts_classes_skips_hidden_and_counts_non_images(folder):
    with pytest.warns(DatasetWarning, match="skipped 1 file"):
        dataset = load_dataset(folder)
    assert dataset.classes == ["chat noir", "Ölvogel ü"]
    assert dataset.counts() == {"chat noir": 2, "Ölvogel ü": 2}
    assert [p.name for p in dataset.paths] == ["a.bmp", "b.jpg", "p.jpg", "q.bmp"]


def test_symlinked_files_and_class_folders_are_followed(folder, tmp_path, images_dir):
    outside = tmp_path / "elsewhere"
    _copy(images_dir / "dragonfly.bmp", outside / "d.bmp")
    os.symlink(outside, folder / "linked class")
    os.symlink(images_dir / "sunflower.bmp", folder / "chat noir" / "link.bmp")
    with pytest.warns(DatasetWarning):
        dataset = load_dataset(folder)
    assert dataset.counts()["linked class"] == 1 and dataset.counts()["chat noir"] == 3


def test_empty_class_and_only_non_images_are_errors(folder):
    (folder / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty has no images"):
        load_dataset(folder)
    (folder / "empty" / "readme.md").write_text("x")
    with pytest.raises(DatasetError, match="empty has no images"):
        load_dataset(folder)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(folder / "nope")


@pytest.mark.parametrize("use_cache", [True, False])
def test_duplicate_across_classes_is_a_warning_naming_both_where_the_images_are_embedded(tmp_path, images_dir, models_dir,
                                                                                        use_cache):
    _copy(images_dir / "cat.bmp", tmp_path / "d" / "a" / "x.bmp")
    _copy(images_dir / "cat.bmp", tmp_path / "d" / "b" / "y.bmp")
    dataset = load_dataset(tmp_path / "d")
    assert dataset.notes == []  # loading reads no image content
    with pytest.warns(DatasetWarning, match=r"several classes: .*x\.bmp, .*y\.bmp"):
        embedded = embed_dataset(Interpreter(models_dir / EXTRACTOR), dataset, progress=False, use_cache=use_cache)
    assert any("several classes" in note for note in embedded.dataset.notes)


def test_loading_a_dataset_reads_no_image_and_opens_no_cache(folder, tmp_path, monkeypatch):
    from lastlayer.embeddings import digests

    monkeypatch.setenv("LASTLAYER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(digests, "sha256_file", lambda path: pytest.fail(f"{path} was read"))
    with pytest.warns(DatasetWarning, match="skipped 1 file"):
        dataset = load_dataset(folder)
    assert len(dataset) == 4 and not (tmp_path / "cache").exists()


def test_unreadable_image_is_skipped_by_name_or_fatal_when_strict(folder, models_dir):
    (folder / "chat noir" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.warns(DatasetWarning):
        dataset = load_dataset(folder)
    interpreter = Interpreter(models_dir / EXTRACTOR)
    with pytest.warns(DatasetWarning, match="broken.jpg"):
        embedded = embed_dataset(interpreter, dataset, progress=False, use_cache=False)
    assert embedded.unreadable == [str(folder / "chat noir" / "broken.jpg")] and len(embedded.y) == 4
    assert not np.isnan(embedded.X).any()
    with pytest.raises(ImageError, match="broken.jpg"):
        embed_dataset(interpreter, dataset, progress=False, use_cache=False, strict=True)


def test_split_keeps_a_training_image_per_class_and_is_seeded():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 2)
    train, test = stratified_split(labels, 0.5, seed=3)
    assert set(labels[train]) == {0, 1, 2} and len(set(train) & set(test)) == 0 and len(train) + len(test) == 15
    assert np.array_equal(stratified_split(labels, 0.5, seed=3)[1], test)
    assert not np.array_equal(stratified_split(labels, 0.5, seed=4)[1], test)
    assert len(stratified_split(labels, 0.0)[1]) == 0
    # classes below the minimum keep every image: here only class 0 (10 images) gives up any
    assert set(labels[test]) == {0} and (labels[train] == 1).sum() == 3 and (labels[train] == 2).sum() == 2
    assert too_small_to_hold_out(labels, ["a", "b", "c"], 0.5) == ["b", "c"] and too_small_to_hold_out(labels, ["a", "b", "c"], 0) == []
    few_train, few_test = stratified_split(labels, 0.5, seed=3, min_to_hold_out=2)  # the old rule: anything with 2 images
    assert set(labels[few_test]) == {0, 1, 2} and set(labels[few_train]) == {0, 1, 2}
    with pytest.raises(DatasetError, match="ratio"):
        stratified_split(labels, 1.0)
    shots = take_shots(train, labels, 2, seed=0)
    assert [int((labels[shots] == c).sum()) for c in range(3)] == [2, 2, 2]
    assert set(shots) <= set(train) and len(set(shots)) == len(shots)
    assert not np.array_equal(take_shots(train, labels, 2, seed=1), shots) or len(train) <= 4


def test_csv_lists(tmp_path, images_dir):
    _copy(images_dir / "cat.bmp", tmp_path / "imgs" / "c.bmp")
    _copy(images_dir / "owl.jpg", tmp_path / "imgs" / "o.jpg")
    listing = tmp_path / "list.csv"
    listing.write_text("path,label\nimgs/c.bmp,cat\nimgs/o.jpg,owl\n")
    dataset = load_dataset(listing)
    assert dataset.classes == ["cat", "owl"] and dataset.labels.tolist() == [0, 1]
    listing.write_text("imgs/c.bmp,cat\nimgs/missing.jpg,owl\n")
    with pytest.raises(DatasetError, match=r"row 2: image .*missing\.jpg does not exist"):
        load_dataset(listing)


def test_hidden_files_and_folders_are_ignored_at_every_depth(folder, images_dir):
    _copy(images_dir / "owl.jpg", folder / "chat noir" / ".cache" / "x.jpg")
    _copy(images_dir / "owl.jpg", folder / "chat noir" / "sub" / ".thumbs" / "y.jpg")
    _copy(images_dir / "owl.jpg", folder / "chat noir" / "sub" / "z.jpg")
    with pytest.warns(DatasetWarning):
        dataset = load_dataset(folder)
    names = [p.name for p in dataset.paths]
    assert "x.jpg" not in names and "y.jpg" not in names and "z.jpg" in names


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "bell\x07", "sep\u2028x", "nel\x85x", "gear\u202e", "ge\u200bar"])
def test_class_names_that_cannot_be_one_label_line_are_refused(tmp_path, images_dir, name):
    _copy(images_dir / "owl.jpg", tmp_path / "d" / name / "a.jpg")
    _copy(images_dir / "cat.bmp", tmp_path / "d" / "cat" / "b.bmp")
    with pytest.raises(DatasetError, match=r"class folder .* holds .*\(U\+[0-9A-F]{4}.*rename it") as info:
        load_dataset(tmp_path / "d")
    assert len(str(info.value).splitlines()) == 1
    (tmp_path / "list.csv").write_text(f'path,label\nd/cat/b.bmp,"{name}"\n')
    with pytest.raises(DatasetError, match=r"list.csv row 1: label .* holds .*character"):
        load_dataset(tmp_path / "list.csv")


def test_class_names_are_nfc_and_look_alikes_are_refused(tmp_path, images_dir):
    _copy(images_dir / "owl.jpg", tmp_path / "d" / "cafe\u0301" / "a.jpg")  # NFD, as a Mac names folders
    _copy(images_dir / "cat.bmp", tmp_path / "d" / "cat" / "b.bmp")
    assert load_dataset(tmp_path / "d").classes == ["caf\u00e9", "cat"]
    _copy(images_dir / "cat.bmp", tmp_path / "d" / "CAT" / "c.bmp")
    with pytest.raises(DatasetError, match=r"classes 'CAT' and 'cat', which differ only in case"):
        load_dataset(tmp_path / "d")
    (tmp_path / "list.csv").write_text("d/cat/b.bmp,gear\nd/CAT/c.bmp,\uff27ear\nd/cat/b.bmp,cafe\u0301\n")
    with pytest.raises(DatasetError, match=r"list.csv has classes 'gear' and '\uff27ear'"):
        load_dataset(tmp_path / "list.csv")
    (tmp_path / "list.csv").write_text("d/cat/b.bmp,caf\u00e9\nd/CAT/c.bmp,cafe\u0301\n")
    assert load_dataset(tmp_path / "list.csv").classes == ["caf\u00e9"]  # one class, however it was typed


def test_csv_encodings_folders_and_files_in_the_wrong_place(tmp_path, images_dir):
    _copy(images_dir / "cat.bmp", tmp_path / "c.bmp")
    (tmp_path / "bom.csv").write_bytes("\ufeffpath,label\nc.bmp,chat\n".encode())
    assert load_dataset(tmp_path / "bom.csv").classes == ["chat"]
    (tmp_path / "latin1.csv").write_bytes("c.bmp,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin1.csv is not UTF-8 text \(byte 0xe9 at offset 9\); save it as UTF-8"):
        load_dataset(tmp_path / "latin1.csv")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DatasetError, match=r"dir.csv is a folder, not a CSV file"):
        load_dataset(tmp_path / "dir.csv")
    with pytest.raises(DatasetError, match=r"dataset path .*c.bmp is a file, not a folder"):
        load_dataset(tmp_path / "c.bmp")


