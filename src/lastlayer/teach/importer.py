"""A folder of photos, one sub-folder per class, put into a teaching state at once (``lastlayer teach --import DIR``).

:func:`scan_photos` reads the folder (the classes, the photos, their content digests) without touching
any state, so a command can check it before the state folder is created. :func:`import_photos` embeds
every photo that is new (by content: a photo the state already holds, or a copy of one earlier in the
set, is skipped) with a progress bar, then stores them all in one change
(:meth:`~lastlayer.teach.session.TeachingSession.add_labelled_examples`): every photo is added, or
none, whatever fails (an unreadable photo, a class that cannot take examples, a full disk, Ctrl-C).
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lastlayer.embeddings.digests import file_digests
from lastlayer.errors import DatasetError, ImageError
from lastlayer.files.datasets import Dataset, load_dataset
from lastlayer.images.decode import load_image
from lastlayer.runtime.batch import progress_bar
from lastlayer.teach.embedder import THUMBNAIL_SIZE

Log = Callable[[str], None]


@dataclass(frozen=True)
class PhotoSet:
    """A folder of photos by class, read and hashed (nothing embedded yet)."""

    folder: Path
    dataset: Dataset
    digests: list[str]


@dataclass
class ImportResult:
    """What an import added: photos per class, the classes it created, and what it skipped."""

    folder: str
    added: dict[str, int] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    already_there: int = 0  # photos whose content the state already held
    repeated: int = 0  # copies of a photo earlier in the set

    @property
    def total(self) -> int:
        return sum(self.added.values())

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "added": self.added, "total": self.total, "created": self.created,
                "already_there": self.already_there, "repeated": self.repeated}

    def to_text(self) -> str:
        skipped = [f"{self.already_there} already in the state"] if self.already_there else []
        skipped += [f"{self.repeated} {'copy' if self.repeated == 1 else 'copies'} of another photo of the set"] if self.repeated else []
        per_class = ", ".join(f"{name} +{count}" for name, count in self.added.items() if count) or "nothing new"
        return (f"imported {self.total} photos from {self.folder}: {per_class}"
                + (f" (new classes: {', '.join(self.created)})" if self.created else "")
                + (f"; skipped {' and '.join(skipped)}" if skipped else ""))


def scan_photos(folder: str | os.PathLike[str]) -> PhotoSet:
    """The photos of ``folder`` (``folder/<class>/<photos>``, or a ``path,label`` CSV) with their content digests.

    Raises :class:`~lastlayer.errors.DatasetError` naming the problem (no such folder, no classes, a class
    without photos, a file that cannot be read).
    """
    dataset = load_dataset(folder)
    try:
        digests = file_digests(dataset.paths)
    except OSError as exc:
        raise DatasetError(f"cannot read {getattr(exc, 'filename', None) or folder}: {exc.strerror or exc}; check its permissions",
                           subject="data") from None
    return PhotoSet(Path(folder), dataset, digests)


def _prepared(session: Any, path: Path, lane: int | None) -> tuple[np.ndarray, np.ndarray]:
    """A photo's unit embedding and a thumbnail-sized copy of its pixels, from one decode."""
    from PIL import Image

    picture = load_image(path, min_size=max(session.input_size))
    unit = session.embed(np.asarray(picture), lane=lane)
    picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.BILINEAR, reducing_gap=1.0)
    return unit, np.asarray(picture)


def import_photos(session: Any, photos: PhotoSet | str | os.PathLike[str], *, progress: bool = True,
                  log: Log | None = None) -> ImportResult:
    """Add a photo set to ``session``'s state: all its new photos in one change, or nothing (see the module docstring).

    ``photos``: a folder, or what :func:`scan_photos` read. ``log`` gets one line with the classes and counts;
    ``progress`` shows a bar on a terminal while photos are embedded. Nothing is stored when a photo cannot be
    read: the :class:`~lastlayer.errors.DatasetError` names it.
    """
    photos = photos if isinstance(photos, PhotoSet) else scan_photos(photos)
    dataset = photos.dataset
    say = log or (lambda line: None)
    counts = dataset.counts()
    say(f"{len(dataset)} photos in {len(counts)} classes: " + ", ".join(f"{name} ({count})" for name, count in counts.items()))
    result = ImportResult(str(photos.folder), added={name: 0 for name in dataset.classes})
    known = session.known_digests(sorted(set(photos.digests)))
    seen: set[str] = set()
    rows = []
    for row, digest in enumerate(photos.digests):
        if digest in known:
            result.already_there += 1
        elif digest in seen:
            result.repeated += 1
        else:
            seen.add(digest)
            rows.append(row)
    existing = {info.name for info in session.classes()}
    lanes = max(1, int(getattr(session, "lanes", 1) or 1))
    prepared: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(rows)
    failures: list[tuple[Path, ImageError]] = []
    worker, numbers = threading.local(), itertools.count()

    with progress_bar(len(rows), f"importing {photos.folder}", progress) as advance:

        def prepare(index: int) -> None:
            if not hasattr(worker, "lane"):  # each of the pool's threads runs on a lane of its own
                worker.lane = next(numbers) if lanes > 1 else None
            path = dataset.paths[rows[index]]
            try:
                prepared[index] = _prepared(session, path, worker.lane)
            except ImageError as error:
                failures.append((path, error))
            finally:
                advance()

        pool = ThreadPoolExecutor(lanes, thread_name_prefix="lastlayer-import")
        try:
            for done in [pool.submit(prepare, index) for index in range(len(rows))]:
                done.result()  # any other failure is raised here
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    if failures:
        failures.sort(key=lambda failure: str(failure[0]))
        raise DatasetError(f"{len(failures)} of the photos of {photos.folder} cannot be read ({failures[0][1]}); remove or replace "
                           "them and import again: nothing was imported", subject="data")
    names = [dataset.classes[dataset.labels[row]] for row in rows]
    session.add_labelled_examples(names, [thumb for _, thumb in prepared],  # type: ignore[misc]
                                  embeddings=[unit for unit, _ in prepared], digests=[photos.digests[row] for row in rows])  # type: ignore[misc]
    for name in names:
        result.added[name] += 1
    result.created = [name for name in dataset.classes if name not in existing and result.added[name]]
    return result
