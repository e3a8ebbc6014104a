"""The embedding cache's SQLite database: one file, one schema, one way to open, repair and give it up.

Everything lastlayer remembers between runs about image files lives in one database,
``<cache>/embeddings/embeddings.sqlite3`` (``$LASTLAYER_CACHE`` or ``~/.cache/lastlayer``), in three
tables:

- ``files``: the SHA-256 of each image file with its stat, the warm-run shortcut of :mod:`lastlayer.embeddings.digests`;
- ``embeddings``: float32 vectors keyed by (model, preprocessing version, image SHA-256), :mod:`lastlayer.embeddings.cache`;
- ``checks``: the wrong-normalisation check's verdict per (model, preprocessing), kept beside the embeddings.

:class:`CacheDatabase` owns the file: it creates the folder, opens the database in WAL mode with
one busy timeout (so concurrent runs wait for each other's short write transactions), creates
the tables, and repairs a damaged file (reported once, deleted and rebuilt, under a lock file so
two processes never rebuild it at the same time). Digests and embeddings are views that run
their queries through it. A database that cannot be used turns itself off for the run with one
:class:`CacheWarning` naming the file: every view then finds nothing stored and writes nothing,
and the run goes on without the cache, never failing because of it.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator, Sequence

from lastlayer.files.datasets import DatasetWarning

try:  # POSIX: serialise the "is this database damaged?" check between processes
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

DATABASE_NAME = "embeddings.sqlite3"
BUSY_TIMEOUT_S = 30.0  # how long a query waits for another process's write transaction
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, device INTEGER NOT NULL, sha256 TEXT NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL, preprocessing TEXT NOT NULL, image TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (model, preprocessing, image)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS checks (
    model TEXT NOT NULL, preprocessing TEXT NOT NULL, embedding_spread REAL NOT NULL, image_spread REAL NOT NULL,
    PRIMARY KEY (model, preprocessing)) WITHOUT ROWID""",
)
CHUNK = 500  # values per ``IN (...)`` (SQLite allows 999 parameters on old builds)


class CacheWarning(DatasetWarning):
    """The embedding cache could not be used or had to be rebuilt; the run goes on without it."""


def default_folder() -> Path:
    """``<cache>/embeddings``: where the database lives unless a folder is given."""
    from lastlayer.model.zoo import cache_dir

    return cache_dir() / "embeddings"


def _is_corruption(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return not isinstance(exc, sqlite3.OperationalError) or "malformed" in text or "not a database" in text


class CacheDatabase:
    """The cache database in ``folder`` (default :func:`default_folder`), opened (and created) at once.

    Use it as a context manager, or call :meth:`close`. Every failure turns it off for this run
    with one warning: :attr:`enabled` then is ``False``, reads return nothing and writes do nothing.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_folder()
        self.path = self.folder / DATABASE_NAME
        self._db: sqlite3.Connection | None = None
        self._warned = False
        self._db = self._open()

    # -- opening and repair --------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for statement in SCHEMA:
                db.execute(statement)
            db.execute("SELECT 1 FROM embeddings LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
        return db

    def _open(self) -> sqlite3.Connection | None:
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
                    self._warn(f"embedding cache {self.path} is damaged ({exc}); it was deleted and is rebuilt")
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

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(message, CacheWarning, stacklevel=4)

    def _disable(self, reason: str) -> None:
        """Turn the cache off for this run, with one warning."""
        self._close_quietly()
        self._warn(f"embedding cache not used: {reason}; embeddings are computed without it")
        return None

    def _failed(self, action: str, exc: sqlite3.Error) -> None:
        """A query failed: a damaged database is deleted (rebuilt by the next run), anything else turns the cache off."""
        if not _is_corruption(exc):
            self._disable(f"cannot {action} {self.path} ({exc})")
            return
        self._close_quietly()
        with suppress(OSError), self._repair_lock():
            self._delete_files()
        self._warn(f"embedding cache {self.path} is damaged ({exc}); it was deleted and will be rebuilt")

    def _close_quietly(self) -> None:
        if self._db is not None:
            with suppress(sqlite3.Error):
                self._db.close()
        self._db = None

    # -- queries -------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether the database is open (``False`` after a failure turned it off)."""
        return self._db is not None

    def rows(self, action: str, query: str, parameters: Sequence[Any] = ()) -> list[tuple]:
        """All rows of ``query``; none when the database is off or fails (``action`` names the attempt in the warning)."""
        if self._db is None:
            return []
        try:
            return self._db.execute(query, parameters).fetchall()
        except sqlite3.Error as exc:
            self._failed(action, exc)
            return []

    def rows_in(self, query: str, keys: Sequence[str], parameters: Sequence[Any] = ()) -> Iterator[tuple]:
        """Rows of ``query`` (ending in ``IN ({})``) for ``keys``, asked :data:`CHUNK` keys at a time after ``parameters``."""
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start:start + CHUNK]
            yield from self.rows("read", query.format(",".join("?" * len(chunk))), [*parameters, *chunk])

    def write(self, query: str, rows: Sequence[Sequence[Any]]) -> bool:
        """Run ``query`` for every row in one write transaction; ``False`` when nothing was written."""
        if self._db is None:
            return False
        try:
            with self._db:  # BEGIN ... COMMIT (ROLLBACK on error)
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(query, rows)
            return True
        except sqlite3.Error as exc:
            self._failed("write", exc)
            return False

    def close(self) -> None:
        """Close the database (the views' queued rows should be flushed first)."""
        self._close_quietly()

    def __enter__(self) -> CacheDatabase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
