"""Embeddings of a dataset, with a cache keyed by file content and model, so a second run is instant.

The cache is one SQLite database in WAL mode (``<cache>/embeddings/embeddings.sqlite3``), a table
keyed by (model SHA-256, preprocessing version, image SHA-256) holding float32 vectors. Concurrent
runs (same or different datasets) each add their rows; an extraction commits every
:data:`COMMIT_EVERY` images or :data:`COMMIT_SECONDS`, so an interrupted run keeps what it computed.
A damaged database is reported once, deleted and rebuilt; a cache that cannot be written is a
warning, never a failure.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
import warnings
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from lastlayer.data import Dataset, DatasetWarning
from lastlayer.digests import DATABASE_NAME, save_pending
from lastlayer.errors import DatasetError, ImageError
from lastlayer.runtime import Interpreter
from lastlayer.runtime.batch import iter_embeddings, progress_bar
from lastlayer.zoo import cache_dir

try:  # POSIX: serialise the "is this database damaged?" check between processes
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

# Bump when image decoding or resizing changes, so stale embeddings are not reused.
PREPROCESSING_VERSION = "2"  # 2: the key also holds the input normalisation and layout
COMMIT_EVERY = 64  # images per transaction during an extraction
COMMIT_SECONDS = 1.0  # ... or at least this often
_BUSY_TIMEOUT_S = 30.0
_SCHEMA = """CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL, preprocessing TEXT NOT NULL, image TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (model, preprocessing, image)) WITHOUT ROWID"""
_CHECKS_SCHEMA = """CREATE TABLE IF NOT EXISTS checks (
    model TEXT NOT NULL, preprocessing TEXT NOT NULL, embedding_spread REAL NOT NULL, image_spread REAL NOT NULL,
    PRIMARY KEY (model, preprocessing)) WITHOUT ROWID"""


class CacheWarning(DatasetWarning):
    """The embedding cache could not be used or had to be rebuilt; the run goes on without it."""


def _is_corruption(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return not isinstance(exc, sqlite3.OperationalError) or "malformed" in text or "not a database" in text


def _warn(message: str) -> None:
    warnings.warn(message, CacheWarning, stacklevel=4)


class EmbeddingCache:
    """Embeddings of one model, by image content hash, in the shared SQLite cache.

    Every failure of the database turns the cache off for this run with one warning naming the file.
    """

    def __init__(self, model_bytes: bytes, folder: Path | None = None) -> None:
        self.model = hashlib.sha256(model_bytes).hexdigest()
        self.folder = Path(folder) if folder is not None else cache_dir() / "embeddings"
        self.path = self.folder / DATABASE_NAME
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[str, str, str, bytes]] = []
        self._last_commit = time.monotonic()
        self._warned = False
        self._db = self._open()

    # -- opening -------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            db.execute(_CHECKS_SCHEMA)
            db.execute("SELECT 1 FROM embeddings LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
        return db

    def _open(self) -> sqlite3.Connection | None:
        db = self._open_database()
        if db is not None:
            save_pending(db)  # file hashes taken before this database existed: the next run skips re-reading those files
        return db

    def _open_database(self) -> sqlite3.Connection | None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return self._disable(f"cannot create {self.folder} ({exc.strerror or exc})")
        try:
            with self._repair_lock():
                try:
                    return self._connect()
                except sqlite3.DatabaseError as exc:
                    if not _is_corruption(exc):
                        raise
                    _warn(f"embedding cache {self.path} is damaged ({exc}); it was deleted and is rebuilt")
                    self._warned = True
                    self._delete_files()
                    return self._connect()
        except (sqlite3.Error, OSError) as exc:
            return self._disable(f"cannot use {self.path} ({exc})")

    @contextmanager
    def _repair_lock(self) -> Iterator[None]:
        """Hold ``<db>.lock`` so two processes never delete and rebuild the database at the same time."""
        fd = None
        with suppress(OSError):  # a read-only folder: opening the database fails later, or works without a lock
            fd = os.open(self.folder / (DATABASE_NAME + ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if fd is not None and fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            if fd is not None:
                os.close(fd)

    def _delete_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)

    def _disable(self, reason: str) -> None:
        """Turn the cache off for this run, with one warning."""
        self._close_quietly()
        self._pending.clear()
        if not self._warned:
            self._warned = True
            _warn(f"embedding cache not used: {reason}; embeddings are computed without it")
        return None

    def _failed(self, action: str, exc: sqlite3.Error) -> None:
        """A query failed: a damaged database is deleted (rebuilt by the next run), anything else turns the cache off."""
        if not _is_corruption(exc):
            self._disable(f"cannot {action} {self.path} ({exc})")
            return
        self._close_quietly()
        self._pending.clear()
        try:
            with self._repair_lock():
                self._delete_files()
        except OSError:
            pass
        if not self._warned:
            self._warned = True
            _warn(f"embedding cache {self.path} is damaged ({exc}); it was deleted and will be rebuilt")

    def _close_quietly(self) -> None:
        if self._db is not None:
            with suppress(sqlite3.Error):
                self._db.close()
        self._db = None

    @property
    def enabled(self) -> bool:
        return self._db is not None

    # -- reading and writing -------------------------------------------------------------------

    def _stored(self, digests: list[str]) -> Iterator[tuple[str, bytes]]:
        """(image digest, vector bytes) of the cached ones among ``digests``, read in chunks of 500."""
        for start in range(0, len(digests), 500):
            if self._db is None:
                return
            chunk = digests[start:start + 500]
            query = (f"SELECT image, vector FROM embeddings WHERE model=? AND preprocessing=? "
                     f"AND image IN ({','.join('?' * len(chunk))})")
            try:
                rows = self._db.execute(query, [self.model, PREPROCESSING_VERSION, *chunk]).fetchall()
            except sqlite3.Error as exc:
                self._failed("read", exc)
                return
            yield from rows

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
        if self._db is None:
            return None
        try:
            row = self._db.execute("SELECT vector FROM embeddings WHERE model=? AND preprocessing=? AND image=?",
                                   (self.model, PREPROCESSING_VERSION, digest)).fetchone()
        except sqlite3.Error as exc:
            self._failed("read", exc)
            return None
        return None if row is None else np.frombuffer(row[0], dtype=np.float32).copy()

    def put(self, digest: str, vector: np.ndarray) -> None:
        """Queue one vector; it is written at the next :meth:`flush` (due every COMMIT_EVERY images or seconds)."""
        if self._db is None:
            return
        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        self._pending.append((self.model, PREPROCESSING_VERSION, digest, blob))
        if len(self._pending) >= COMMIT_EVERY or time.monotonic() - self._last_commit >= COMMIT_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the queued vectors in one transaction."""
        self._last_commit = time.monotonic()
        if self._db is None or not self._pending:
            return
        rows, self._pending = self._pending, []
        try:
            with self._db:  # BEGIN ... COMMIT (ROLLBACK on error)
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            self._failed("write", exc)

    def stored_spreads(self) -> tuple[float, float] | None:
        """The wrong-normalisation check's (embedding, image) spreads measured when these embeddings were made."""
        if self._db is None:
            return None
        try:
            row = self._db.execute("SELECT embedding_spread, image_spread FROM checks WHERE model=? AND preprocessing=?",
                                   (self.model, PREPROCESSING_VERSION)).fetchone()
        except sqlite3.Error:
            return None
        return None if row is None else (float(row[0]), float(row[1]))

    def store_spreads(self, spreads: tuple[float, float]) -> None:
        """Keep the check's verdict beside the embeddings, so a run served from the cache warns the same way."""
        if self._db is None:
            return
        try:
            self._db.execute("INSERT OR REPLACE INTO checks(model, preprocessing, embedding_spread, image_spread) VALUES (?, ?, ?, ?)",
                             (self.model, PREPROCESSING_VERSION, *spreads))
        except sqlite3.Error as exc:
            self._failed("write", exc)

    def close(self) -> None:
        """Flush and close the database."""
        self.flush()
        self._close_quietly()

    def __len__(self) -> int:
        """Vectors stored for this model."""
        if self._db is None:
            return 0
        try:
            return int(self._db.execute("SELECT COUNT(*) FROM embeddings WHERE model=? AND preprocessing=?",
                                        (self.model, PREPROCESSING_VERSION)).fetchone()[0])
        except sqlite3.Error:
            return 0


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


def embed_dataset(
    interpreter: Interpreter,
    dataset: Dataset,
    *,
    use_cache: bool = True,
    strict: bool = False,
    progress: bool = True,
) -> EmbeddedDataset:
    """Embed every image of ``dataset`` (cached ones are not run again).

    Unreadable images are left out with a warning naming each file; ``strict=True`` makes the
    first one an error instead. New embeddings enter the cache in batches while the extraction
    runs, so an interrupted run keeps most of its work.
    """
    digests = dataset.file_digests()
    X = np.empty((len(dataset), interpreter.output_size), dtype=np.float32)  # the only copy of the embeddings
    cache = EmbeddingCache(interpreter.cache_key) if use_cache else None
    check = interpreter.degenerate_check
    try:
        todo = cache.fill(digests, X) if cache is not None else list(range(len(dataset)))
        if cache is not None and check is not None and not check.done and (stored := cache.stored_spreads()) is not None:
            check.recall(*stored)  # the images are not run again: repeat the earlier verdict
        unreadable: list[str] = []
        failed: list[int] = []

        def report(path: Path, error: ImageError) -> None:
            if strict:
                raise error
            unreadable.append(str(path))
            warnings.warn(f"skipped unreadable image: {error}", DatasetWarning, stacklevel=2)

        def store(row: int, vector: np.ndarray) -> None:
            if cache is not None:
                cache.put(digests[row], vector)

        if todo:
            failed = _extract_distinct(interpreter, dataset.paths, digests, todo, X, progress, report, store)
        if cache is not None and check is not None and check.spreads is not None:
            cache.store_spreads(check.spreads)
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
    return EmbeddedDataset(kept, X, kept.labels, len(dataset) - len(todo), unreadable)
