"""Datasets: a folder with one sub-folder per class, or a CSV of ``path,label`` rows.

A :class:`Dataset` is file paths and labels: loading one lists files and reads no image. Class ids
follow the sorted class names, so they are the same on every machine. Splits are stratified and
seeded; every class keeps at least one training image. The images' content hashes are taken where
they are embedded (:func:`lastlayer.embeddings.cache.dataset_digests`), which also reports the same file
in several classes (:func:`note_duplicates`).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from lastlayer.errors import DatasetError
from lastlayer.files.names import checked_name, name_key, normalized_name

DataSource = Union[str, "os.PathLike[str]"]
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
)


def is_image_file(path: DataSource) -> bool:
    """True when the file name has a common image extension (the content is not checked)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


class DatasetWarning(UserWarning):
    """Something in a dataset was skipped or looks wrong, but the run can go on."""


@dataclass
class Dataset:
    """Image files with integer labels; ``classes[label]`` is the class name."""

    classes: list[str]
    paths: list[Path]
    labels: np.ndarray
    notes: list[str] = field(default_factory=list)
    source: str = ""  # the folder or CSV it was read from, for messages

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        """Images per class name."""
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.classes)}

    def subset(self, indices: np.ndarray) -> Dataset:
        """The images at ``indices`` (same classes)."""
        indices = np.asarray(indices, dtype=int)
        return Dataset(self.classes, [self.paths[i] for i in indices], self.labels[indices], list(self.notes), self.source)


def _note(notes: list[str], message: str) -> None:
    notes.append(message)
    warnings.warn(message, DatasetWarning, stacklevel=3)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _check_class_name(name: str, where: str) -> str:
    """The class name (NFC) under the rule of :mod:`lastlayer.files.names`, else :class:`DatasetError` naming ``where``."""
    return checked_name(name, where, DatasetError, subject="data")


def _check_look_alikes(names: list[str], where: str) -> None:
    """Refuse two class names that differ only in case, width or spacing (one class for lastlayer, two in the data)."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name_key(name), name)
        if other != name:
            raise DatasetError(f"{where} has classes {other!r} and {name!r}, which differ only in case, width or spacing; "
                               "merge them or rename one", subject="data")


def _image_files(class_dir: Path) -> list[Path]:
    """Files under ``class_dir`` at any depth, skipping hidden files and folders (``.cache/x.jpg`` too), sorted.

    Symlinked files are followed; symlinked sub-folders are not (no loops).
    """
    found = []
    for parent, folders, files in os.walk(class_dir, onerror=None):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            path = Path(parent) / name
            if not name.startswith(".") and path.is_file():
                found.append(path)
    return sorted(found, key=str)


def image_files_under(folder: DataSource) -> list[Path]:
    """The image files under ``folder`` at any depth (by extension; hidden files and folders left out), sorted by path."""
    return [path for path in _image_files(Path(folder)) if is_image_file(path)]


def _check_is_folder(folder: Path) -> None:
    if folder.is_dir():
        return
    if folder.exists():
        raise DatasetError(f"dataset path {folder} is a file, not a folder; pass a folder with one sub-folder of images per class, "
                           "or a .csv list of path,label rows", subject="data")
    raise DatasetError(f"dataset folder {folder} does not exist; pass a folder with one sub-folder of images per class", subject="data")


def scan_folder(root: DataSource) -> Dataset:
    """Read ``root/<class>/<image>``; hidden files and folders are ignored, non-images skipped with a warning."""
    folder = Path(root)
    _check_is_folder(folder)
    try:
        class_dirs = sorted((d for d in folder.iterdir() if _visible(d) and d.is_dir()), key=lambda d: normalized_name(d.name))
    except OSError as exc:
        raise DatasetError(f"cannot read dataset folder {folder}: {exc.strerror or exc}; check its permissions", subject="data") from None
    if not class_dirs:
        raise DatasetError(f"dataset folder {folder} has no class sub-folders; put each class's images in {folder}/<class name>/", subject="data")
    notes: list[str] = []
    paths: list[Path] = []
    labels: list[int] = []
    skipped = 0
    classes = [_check_class_name(class_dir.name, f"class folder {folder}/") for class_dir in class_dirs]
    _check_look_alikes(classes, f"dataset folder {folder}")
    for label, class_dir in enumerate(class_dirs):
        files = _image_files(class_dir)
        images = [f for f in files if is_image_file(f)]
        skipped += len(files) - len(images)
        if not images:
            raise DatasetError(f"class folder {class_dir} has no images; add images to it or remove the folder", subject="data")
        paths.extend(images)
        labels.extend([label] * len(images))
    if skipped:
        _note(notes, f"skipped {skipped} file(s) in {folder} that are not images (by extension)")
    return Dataset(classes, paths, np.array(labels, dtype=np.int64), notes, source=str(folder))


def _csv_rows(csv_path: Path) -> list[list[str]]:
    """The non-blank rows of a UTF-8 CSV (a byte-order mark is allowed), or a one-line DatasetError."""
    if csv_path.is_dir():
        raise DatasetError(f"dataset list {csv_path} is a folder, not a CSV file; pass the CSV's path, "
                           "or a folder with one sub-folder of images per class", subject="data")
    try:
        text = csv_path.read_bytes().decode("utf-8-sig")
        return [row for row in csv.reader(io.StringIO(text, newline="")) if row and any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise DatasetError(f"dataset list {csv_path} does not exist; check the path", subject="data") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"dataset list {csv_path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                           "save it as UTF-8", subject="data") from None
    except csv.Error as exc:
        raise DatasetError(f"dataset list {csv_path} is not a readable CSV ({exc}); write one 'path,label' line per image",
                           subject="data") from None
    except OSError as exc:
        raise DatasetError(f"cannot read dataset list {csv_path}: {exc.strerror or exc}; check its permissions", subject="data") from None


def read_csv(path: DataSource) -> Dataset:
    """Read a CSV of ``path,label`` rows (a header row is allowed; relative paths are from the CSV's folder)."""
    csv_path = Path(path)
    rows = _csv_rows(csv_path)
    if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image"):
        rows = rows[1:]
    if not rows:
        raise DatasetError(f"dataset list {csv_path} has no rows; write one 'path,label' line per image", subject="data")
    entries = []
    for number, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise DatasetError(f"{csv_path} row {number} needs 'path,label', got {','.join(row)!r}", subject="data")
        label = _check_class_name(row[1], f"{csv_path} row {number}: label")
        image = Path(row[0].strip())
        image = image if image.is_absolute() else csv_path.parent / image
        if not image.is_file():
            problem = "is a folder" if image.is_dir() else "does not exist"
            raise DatasetError(f"{csv_path} row {number}: image {image} {problem}; fix the path or remove the row", subject="data")
        entries.append((image, label))
    classes = sorted({label for _, label in entries})
    _check_look_alikes(classes, f"dataset list {csv_path}")
    ids = {name: i for i, name in enumerate(classes)}
    return Dataset(classes, [p for p, _ in entries], np.array([ids[n] for _, n in entries], dtype=np.int64), source=str(csv_path))


def load_dataset(source: DataSource) -> Dataset:
    """A dataset from a class-per-folder directory or a ``.csv`` list."""
    path = Path(source)
    if path.suffix.lower() == ".csv" and (path.is_file() or (path.is_dir() and not _has_class_folders(path))):
        return read_csv(path)
    return scan_folder(path)


def _has_class_folders(folder: Path) -> bool:
    try:
        return any(_visible(d) and d.is_dir() for d in folder.iterdir())
    except OSError:
        return False


def note_duplicates(dataset: Dataset, digests: list[str]) -> None:
    """Note (and warn) where the same image content, ``digests[row]`` of each row, is in several classes."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for index, digest in enumerate(digests):
        by_hash[digest].append(index)
    for indices in by_hash.values():
        if len({int(dataset.labels[i]) for i in indices}) > 1:
            places = ", ".join(str(dataset.paths[i]) for i in indices)
            _note(dataset.notes, f"the same image is in several classes: {places}")


# A class with fewer photos than this keeps all of them for learning: holding one back from a handful
# costs more than the accuracy figure it buys. Jobs then report leave-one-out accuracy instead.
MIN_IMAGES_TO_HOLD_OUT = 10


def stratified_split(labels: np.ndarray, test_ratio: float, seed: int = 0, *,
                     min_to_hold_out: int = MIN_IMAGES_TO_HOLD_OUT) -> tuple[np.ndarray, np.ndarray]:
    """Per class, shuffle and send ``round(test_ratio * n)`` images to test (at least 1, keeping >= 1 for training).

    Classes with fewer than ``min_to_hold_out`` images keep every image for training (see
    :func:`too_small_to_hold_out`). Returns (train indices, test indices), each sorted; ``test_ratio`` 0
    gives an empty test set.
    """
    if not 0 <= test_ratio < 1:
        raise DatasetError(f"the held-out ratio {test_ratio} must be in [0, 1)", subject="ratio")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = 0
        if test_ratio > 0 and len(members) >= max(2, min_to_hold_out):
            n_test = min(max(int(round(test_ratio * len(members))), 1), len(members) - 1)
        test.extend(members[:n_test])
        train.extend(members[n_test:])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(test, dtype=int))


def too_small_to_hold_out(labels: np.ndarray, classes: list[str], test_ratio: float,
                          min_to_hold_out: int = MIN_IMAGES_TO_HOLD_OUT) -> list[str]:
    """The classes :func:`stratified_split` keeps whole because they have too few images."""
    if not test_ratio:
        return []
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=len(classes))
    return [name for name, count in zip(classes, counts) if 0 < count < max(2, min_to_hold_out)]


def take_shots(indices: np.ndarray, labels: np.ndarray, shots: int, seed: int = 0) -> np.ndarray:
    """At most ``shots`` of ``indices`` per class, chosen at random with ``seed``."""
    if shots < 1:
        raise DatasetError(f"the number of shots must be at least 1, got {shots}", subject="shots")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels[indices]):
        members = rng.permutation(indices[labels[indices] == label])
        chosen.extend(members[:shots])
    return np.sort(np.array(chosen, dtype=int))
