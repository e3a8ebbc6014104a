"""Embeddings of a dataset, with a cache keyed by file content and model, so a second run is instant.

The cache is the ``embeddings`` table of the cache database
(:class:`~lastlayer.embeddings.database.CacheDatabase`, ``<cache>/embeddings/embeddings.sqlite3``),
keyed by (model SHA-256, preprocessing version, image SHA-256) and holding float32 vectors.
Concurrent runs (same or different datasets) each add their rows; an extraction commits every
:data:`COMMIT_EVERY` images or :data:`COMMIT_SECONDS`, so an interrupted run keeps what it computed.
The image hashes come from :func:`lastlayer.embeddings.digests.file_digests` over the same database (a warm
run reads no unchanged file). A cache that cannot be used is a warning, never a failure.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from lastlayer.embeddings.database import DATABASE_NAME, CacheDatabase, CacheWarning
from lastlayer.embeddings.digests import file_digests
from lastlayer.errors import DatasetError, ImageError
from lastlayer.files.datasets import Dataset, DatasetWarning, note_duplicates
from lastlayer.runtime import Interpreter
from lastlayer.runtime.batch import iter_embeddings, progress_bar

__all__ = ["COMMIT_EVERY", "COMMIT_SECONDS", "DATABASE_NAME", "PREPROCESSING_VERSION", "CacheWarning", "EmbeddedDataset",
           "EmbeddingCache", "dataset_digests", "embed_dataset"]

# Bump when image decoding or resizing changes, so stale embeddings are not reused.
PREPROCESSING_VERSION = "2"  # 2: the key also holds the input normalisation and layout
COMMIT_EVERY = 64  # images per transaction during an extraction
COMMIT_SECONDS = 1.0  # ... or at least this often


class EmbeddingCache:
    """Embeddings of one model, by image content hash: a view of the ``embeddings`` and ``checks`` tables.

    Args:
        model_bytes: what decides the outputs (``Interpreter.cache_key``); its SHA-256 is the key.
        folder: the database's folder when no ``database`` is given (default: the user's cache).
        database: an open :class:`~lastlayer.embeddings.database.CacheDatabase` to use (not closed by :meth:`close`).
    """

    def __init__(self, model_bytes: bytes, folder: Path | None = None, *, database: CacheDatabase | None = None) -> None:
        self.model = hashlib.sha256(model_bytes).hexdigest()
        self._owns_database = database is None
        self.database = CacheDatabase(folder) if database is None else database
        self.path = self.database.path
        self._pending: list[tuple[str, str, str, bytes]] = []
        self._last_commit = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.database.enabled

    def _stored(self, digests: list[str]) -> Iterator[tuple[str, bytes]]:
        """(image digest, vector bytes) of the cached ones among ``digests``."""
        query = "SELECT image, vector FROM embeddings WHERE model=? AND preprocessing=? AND image IN ({})"
        yield from self.database.rows_in(query, digests, (self.model, PREPROCESSING_VERSION))

    def fill(self, digests: list[str], X: np.ndarray) -> list[int]:
        """Copy the cached vector of ``digests[row]`` into ``X[row]`` for every row that has one; return the other rows.

        Vectors go straight from the database rows into ``X`` (no second copy of the embeddings is held).
        """
        rows_of: dict[str, list[int]] = {}
        for row, digest in enumerate(digests):
            rows_of.setdefault(digest, []).append(row)
        filled = np.zeros(len(digests), dtype=bool)
        size = X.shape[1]
        for digest, blob in self._stored(list(rows_of)):
            if len(blob) != 4 * size:
                continue
            vector = np.frombuffer(blob, dtype=np.float32)
            for row in rows_of[digest]:
                X[row] = vector
                filled[row] = True
        return np.flatnonzero(~filled).tolist()

    def get(self, digest: str) -> np.ndarray | None:
        """One cached vector (any length), or ``None``."""
        found = self.database.rows("read", "SELECT vector FROM embeddings WHERE model=? AND preprocessing=? AND image=?",
                                   (self.model, PREPROCESSING_VERSION, digest))
        return np.frombuffer(found[0][0], dtype=np.float32).copy() if found else None

    def put(self, digest: str, vector: np.ndarray) -> None:
        """Queue one vector; it is written at the next :meth:`flush` (due every COMMIT_EVERY images or seconds)."""
        if not self.enabled:
            return
        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        self._pending.append((self.model, PREPROCESSING_VERSION, digest, blob))
        if len(self._pending) >= COMMIT_EVERY or time.monotonic() - self._last_commit >= COMMIT_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the queued vectors in one transaction."""
        self._last_commit = time.monotonic()
        rows, self._pending = self._pending, []
        if rows:
            self.database.write("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", rows)

    def stored_spreads(self) -> tuple[float, float] | None:
        """The wrong-normalisation check's (embedding, image) spreads measured when these embeddings were made."""
        found = self.database.rows("read", "SELECT embedding_spread, image_spread FROM checks WHERE model=? AND preprocessing=?",
                                   (self.model, PREPROCESSING_VERSION))
        return (float(found[0][0]), float(found[0][1])) if found else None

    def store_spreads(self, spreads: tuple[float, float]) -> None:
        """Keep the check's verdict beside the embeddings, so a run served from the cache warns the same way."""
        self.database.write("INSERT OR REPLACE INTO checks(model, preprocessing, embedding_spread, image_spread) VALUES (?, ?, ?, ?)",
                            [(self.model, PREPROCESSING_VERSION, *spreads)])

    def close(self) -> None:
        """Flush; close the database too when this cache opened it."""
        self.flush()
        if self._owns_database:
            self.database.close()

    def __len__(self) -> int:
        """Vectors stored for this model."""
        found = self.database.rows("count", "SELECT COUNT(*) FROM embeddings WHERE model=? AND preprocessing=?",
                                   (self.model, PREPROCESSING_VERSION))
        return int(found[0][0]) if found else 0


@dataclass
class EmbeddedDataset:
    """Embeddings ``X`` and labels ``y`` of the readable images of a dataset."""

    dataset: Dataset
    X: np.ndarray
    y: np.ndarray
    cached: int
    unreadable: list[str]


def _extract(interpreter: Interpreter, paths: list[Path], rows: list[int], X: np.ndarray, progress: bool,
             on_error: Callable[[int, ImageError], None], store: Callable[[int, np.ndarray], None]) -> list[int]:
    """Embed ``paths[rows]`` into ``X[rows]``, handing each finished vector to ``store`` as it goes; return the failed rows.

    ``on_error(row, error)`` is called for each unreadable image (in row order, in this thread).
    """
    failed: list[int] = []
    with progress_bar(len(rows), "embedding", progress) as advance, \
            closing(iter_embeddings(interpreter, [paths[r] for r in rows])) as outcomes:
        for index, vector, error, _ in outcomes:
            row = rows[index]
            if error is not None:
                on_error(row, error)
                failed.append(row)
            elif np.isnan(vector).any():  # a model that outputs NaN: left out like an unreadable image, never cached
                failed.append(row)
            else:
                X[row] = vector
                store(row, X[row])
            advance()
    return failed


def _extract_distinct(interpreter: Interpreter, paths: list[Path], digests: list[str], rows: list[int], X: np.ndarray,
                      progress: bool, on_error: Callable[[Path, ImageError], None],
                      store: Callable[[int, np.ndarray], None]) -> list[int]:
    """:func:`_extract` running each distinct content once: rows of identical files (copies, symlinks) share its result.

    Returns the failed rows, sorted; ``on_error(path, error)`` is called for each unreadable one.
    """
    first: dict[str, int] = {}
    distinct: list[int] = []
    repeats: list[tuple[int, int]] = []  # (row, the row with the same content that is run)
    for row in rows:
        source = first.setdefault(digests[row], row)
        if source == row:
            distinct.append(row)
        else:
            repeats.append((row, source))
    errors: dict[int, ImageError] = {}

    def unreadable(row: int, error: ImageError) -> None:
        errors[row] = error
        on_error(paths[row], error)

    failed = _extract(interpreter, paths, distinct, X, progress, unreadable, store)
    lost = set(failed)
    for row, source in repeats:
        if source in lost:
            failed.append(row)
            if source in errors:
                on_error(paths[row], errors[source])
        else:
            X[row] = X[source]
    return sorted(failed)


def _drop_rows(X: np.ndarray, failed: list[int]) -> np.ndarray:
    """``X`` without the ``failed`` rows, compacted in place (a view of the same memory, no copy)."""
    if not failed:
        return X
    keep = np.ones(len(X), dtype=bool)
    keep[failed] = False
    kept = np.flatnonzero(keep)
    for target, source in enumerate(kept.tolist()):
        if target != source:
            X[target] = X[source]
    return X[:len(kept)]


def dataset_digests(dataset: Dataset, database: CacheDatabase | None = None) -> list[str]:
    """The SHA-256 of each image of ``dataset``, in row order; a :class:`DatasetError` names an unreadable file.

    Files unchanged since a run that used ``database`` are not read again (:func:`lastlayer.embeddings.digests.file_digests`).
    """
    try:
        return file_digests(dataset.paths, database)
    except OSError as exc:
        name = getattr(exc, "filename", None) or dataset.source
        raise DatasetError(f"cannot read {name}: {exc.strerror or exc}; check the file's permissions or remove it", subject="data") from None


def _embed_rows(interpreter: Interpreter, dataset: Dataset, digests: list[str], cache: EmbeddingCache | None, strict: bool,
                progress: bool) -> tuple[np.ndarray, int, list[int], list[str]]:
    """``(X, rows from the cache, failed rows, unreadable paths)``: cached rows filled in, the others run and cached."""
    X = np.empty((len(dataset), interpreter.output_size), dtype=np.float32)  # the only copy of the embeddings
    check = interpreter.degenerate_check
    todo = cache.fill(digests, X) if cache is not None else list(range(len(dataset)))
    if cache is not None and check is not None and not check.done and (stored := cache.stored_spreads()) is not None:
        check.recall(*stored)  # the images are not run again: repeat the earlier verdict
    unreadable: list[str] = []
    failed: list[int] = []
    warned: set[str] = set()

    def report(path: Path, error: ImageError) -> None:
        if strict:
            raise error
        unreadable.append(str(path))
        if str(error) not in warned:  # copies of one unreadable file share its error: one warning, every copy listed
            warned.add(str(error))
            warnings.warn(f"skipped unreadable image: {error}", DatasetWarning, stacklevel=2)

    def store(row: int, vector: np.ndarray) -> None:
        if cache is not None:
            cache.put(digests[row], vector)

    if todo:
        failed = _extract_distinct(interpreter, dataset.paths, digests, todo, X, progress, report, store)
    if cache is not None and check is not None and check.spreads is not None:
        cache.store_spreads(check.spreads)
    return X, len(dataset) - len(todo), failed, unreadable


def embed_dataset(
    interpreter: Interpreter,
    dataset: Dataset,
    *,
    use_cache: bool = True,
    strict: bool = False,
    progress: bool = True,
) -> EmbeddedDataset:
    """Embed every image of ``dataset`` (cached ones are not run again; identical files run once).

    The images' content hashes key the cache (see :mod:`lastlayer.embeddings.digests`); the same file in
    several classes is reported (a note on the dataset and a warning). Unreadable images are left
    out with a warning naming each file; ``strict=True`` makes the first one an error instead. New
    embeddings enter the cache in batches while the extraction runs, so an interrupted run keeps
    most of its work. ``use_cache=False`` neither reads nor writes the cache database.
    """
    with CacheDatabase() if use_cache else nullcontext() as database:
        digests = dataset_digests(dataset, database)
        note_duplicates(dataset, digests)
        cache = EmbeddingCache(interpreter.cache_key, database=database) if database is not None else None
        try:
            X, cached, failed, unreadable = _embed_rows(interpreter, dataset, digests, cache, strict, progress)
        finally:
            if cache is not None:
                cache.close()  # also on errors and Ctrl-C: what was computed stays cached
    kept = dataset.subset(np.setdiff1d(np.arange(len(dataset)), failed)) if failed else dataset.subset(np.arange(len(dataset)))
    X = _drop_rows(X, failed)
    missing = set(dataset.labels.tolist()) - set(kept.labels.tolist())  # classes that had images, all unreadable
    if missing:
        names = ", ".join(dataset.classes[i] for i in sorted(missing))
        where = f" of {dataset.source}" if dataset.source else ""
        raise DatasetError(f"no readable image left in class(es) {names}{where}; replace the unreadable files", subject="data")
    return EmbeddedDataset(kept, X, kept.labels, cached, unreadable)
