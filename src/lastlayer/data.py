"""Datasets: a folder with one sub-folder per class, or a CSV of ``path,label`` rows.

Class ids follow the sorted class names, so they are the same on every machine. Splits are
stratified and seeded; every class keeps at least one training image.
"""

from __future__ import annotations

import csv
import hashlib
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from lastlayer.errors import DatasetError
from lastlayer.images import is_image_file

DataSource = Union[str, "os.PathLike[str]"]


class DatasetWarning(UserWarning):
    """Something in a dataset was skipped or looks wrong, but the run can go on."""


@dataclass
class Dataset:
    """Image files with integer labels; ``classes[label]`` is the class name."""

    classes: list[str]
    paths: list[Path]
    labels: np.ndarray
    notes: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list, repr=False)

    def file_digests(self) -> list[str]:
        """SHA-256 of each file's content (computed once); keys of the embedding cache."""
        if len(self.digests) != len(self.paths):
            self.digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in self.paths]
        return self.digests

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        """Images per class name."""
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.classes)}

    def subset(self, indices: np.ndarray) -> Dataset:
        """The images at ``indices`` (same classes)."""
        indices = np.asarray(indices, dtype=int)
        digests = [self.digests[i] for i in indices] if len(self.digests) == len(self.paths) else []
        return Dataset(self.classes, [self.paths[i] for i in indices], self.labels[indices], list(self.notes), digests)


def _note(notes: list[str], message: str) -> None:
    notes.append(message)
    warnings.warn(message, DatasetWarning, stacklevel=3)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def scan_folder(root: DataSource) -> Dataset:
    """Read ``root/<class>/<image>``; hidden files are ignored, non-images skipped with a warning."""
    folder = Path(root)
    if not folder.is_dir():
        raise DatasetError(f"dataset folder {folder} does not exist; pass a folder with one sub-folder of images per class", subject="data")
    class_dirs = sorted((d for d in folder.iterdir() if d.is_dir() and _visible(d)), key=lambda d: d.name)
    if not class_dirs:
        raise DatasetError(f"dataset folder {folder} has no class sub-folders; put each class's images in {folder}/<class name>/", subject="data")
    notes: list[str] = []
    paths: list[Path] = []
    labels: list[int] = []
    skipped = 0
    for label, class_dir in enumerate(class_dirs):
        files = sorted((f for f in class_dir.rglob("*") if f.is_file() and _visible(f)), key=lambda f: str(f))
        images = [f for f in files if is_image_file(f)]
        skipped += len(files) - len(images)
        if not images:
            raise DatasetError(f"class folder {class_dir} has no images; add images to it or remove the folder", subject="data")
        paths.extend(images)
        labels.extend([label] * len(images))
    if skipped:
        _note(notes, f"skipped {skipped} file(s) in {folder} that are not images (by extension)")
    dataset = Dataset([d.name for d in class_dirs], paths, np.array(labels, dtype=np.int64), notes)
    _warn_duplicates(dataset)
    return dataset


def read_csv(path: DataSource) -> Dataset:
    """Read a CSV of ``path,label`` rows (a header row is allowed; relative paths are from the CSV's folder)."""
    csv_path = Path(path)
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except OSError as exc:
        raise DatasetError(f"cannot read dataset list {csv_path}: {exc.strerror or exc}") from None
    if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image"):
        rows = rows[1:]
    if not rows:
        raise DatasetError(f"dataset list {csv_path} has no rows; write one 'path,label' line per image", subject="data")
    entries = []
    for number, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise DatasetError(f"{csv_path} row {number} needs 'path,label', got {','.join(row)!r}", subject="data")
        image = Path(row[0].strip())
        image = image if image.is_absolute() else csv_path.parent / image
        if not image.is_file():
            raise DatasetError(f"{csv_path} row {number}: image {image} does not exist; fix the path or remove the row", subject="data")
        entries.append((image, row[1].strip()))
    classes = sorted({label for _, label in entries})
    ids = {name: i for i, name in enumerate(classes)}
    dataset = Dataset(classes, [p for p, _ in entries], np.array([ids[n] for _, n in entries], dtype=np.int64))
    _warn_duplicates(dataset)
    return dataset


def load_dataset(source: DataSource) -> Dataset:
    """A dataset from a class-per-folder directory or a ``.csv`` list."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_csv(path)
    return scan_folder(path)


def _warn_duplicates(dataset: Dataset) -> None:
    by_hash: dict[str, list[int]] = defaultdict(list)
    for index, digest in enumerate(dataset.file_digests()):
        by_hash[digest].append(index)
    for indices in by_hash.values():
        if len({int(dataset.labels[i]) for i in indices}) > 1:
            places = ", ".join(str(dataset.paths[i]) for i in indices)
            _note(dataset.notes, f"the same image is in several classes: {places}")


def stratified_split(labels: np.ndarray, test_ratio: float, seed: int = 0,
                     classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per class, shuffle and send ``round(test_ratio * n)`` images to test; keep >= 1 for training.

    Returns (train indices, test indices), each sorted. ``test_ratio`` 0 gives an empty test set.
    ``classes`` names the classes in messages.
    """
    if not 0 <= test_ratio < 1:
        raise DatasetError(f"the held-out ratio {test_ratio} must be in [0, 1)", subject="ratio")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(test_ratio * len(members)))
        if test_ratio > 0 and len(members) < 2:
            name = classes[int(label)] if classes is not None else str(label)
            raise DatasetError(f"class {name!r} has only {len(members)} image: it needs at least 2 to hold one out; "
                               "add images or hold none out (ratio 0)", subject="ratio")
        n_test = min(max(n_test, 1 if test_ratio > 0 else 0), len(members) - 1)
        test.extend(members[:n_test])
        train.extend(members[n_test:])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(test, dtype=int))


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
