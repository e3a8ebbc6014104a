"""SHA-256 of image files, with a stat shortcut so a warm run does not read every file again.

The content hash keys the embedding cache, and hashing 20,000 photos costs seconds on every run.
So the hash of each file is kept with its stat (size, modification and change time in
nanoseconds, inode and device), per absolute path, in a ``files`` table of the embedding cache's
SQLite database. A later run takes the stored hash only while all of these are unchanged; any
change (an edit, ``touch``, a replaced file, a moved-in copy) hashes the file again. The hash
stays the cache key: the stat is only a shortcut to it.

Timestamps are coarse (a file written twice in one clock tick keeps its mtime), so a file modified
less than :data:`RACY_SECONDS` before it was hashed is not remembered and is hashed again next
time, as git does for "racily clean" files. The shortcut is best effort: without a usable
database every file is hashed, and nothing is reported (the embedding cache warns about its
database itself). Hashes taken before the database exists (a first run hashes the dataset
before the embedding cache creates it) are kept in memory and written by :func:`save_pending`
once the cache has opened it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, Sequence

DATABASE_NAME = "embeddings.sqlite3"  # shared with lastlayer.embeddings
RACY_SECONDS = 2.0  # FAT's mtime step; ext4, APFS and NTFS are finer
USE_STAMPS = True  # False: hash every file, trusting no stored stat (the benchmarks' baseline)
PARALLEL_BYTES = 512 * 1024  # mean file size from which hashing runs on all cores (measured: not for 60 KB photos)
_BUSY_TIMEOUT_S = 5.0
_CHUNK = 500  # paths per SELECT (SQLite allows 999 parameters on old builds)
_PENDING: dict[str, tuple[Stamp, str]] = {}  # abspath -> (stamp, digest) not yet written, for lack of a database
_PENDING_LOCK = threading.Lock()
_PENDING_MAX = 1_000_000
SCHEMA = """CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, device INTEGER NOT NULL, sha256 TEXT NOT NULL) WITHOUT ROWID"""


class Stamp(NamedTuple):
    """What must be unchanged for a stored hash to be taken: ``os.stat`` of the file (symlinks followed)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: str) -> Stamp:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's content, read in blocks (the GIL is released while reading and hashing)."""
    with open(path, "rb") as file:
        file_digest = getattr(hashlib, "file_digest", None)  # Python 3.11+
        if file_digest is not None:
            return file_digest(file, "sha256").hexdigest()
        digest = hashlib.sha256()
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
        return digest.hexdigest()


def database_path(folder: Path | None = None) -> Path:
    """The embedding cache's database, where the stat shortcut lives: ``<cache>/embeddings/embeddings.sqlite3``."""
    if folder is None:
        from lastlayer.zoo import cache_dir

        folder = cache_dir() / "embeddings"
    return Path(folder) / DATABASE_NAME


def _connect(path: Path) -> sqlite3.Connection | None:
    """The database with the ``files`` table, or ``None`` when it cannot be used (the caller then hashes everything).

    The cache folder is never created here (the embedding cache creates it and reports its problems).
    """
    if not path.parent.is_dir():
        return None
    try:
        db = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    except (sqlite3.Error, OSError):
        return None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(SCHEMA)
        return db
    except sqlite3.Error:
        db.close()
        return None


def _write(db: sqlite3.Connection, rows: list[tuple]) -> bool:
    """Store (path, *stamp, digest) rows in one transaction; False when the database refused them."""
    try:
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return True
    except sqlite3.Error:
        return False


def _take_pending() -> list[tuple]:
    with _PENDING_LOCK:
        rows = [(key, *stamp, digest) for key, (stamp, digest) in _PENDING.items()]
        _PENDING.clear()
    return rows


def _keep_pending(rows: list[tuple]) -> None:
    with _PENDING_LOCK:
        for key, *stamp, digest in rows:
            if len(_PENDING) < _PENDING_MAX:
                _PENDING[key] = (Stamp(*stamp), digest)


def save_pending(db: sqlite3.Connection) -> None:
    """Write the hashes taken while no database was there into ``db`` (the embedding cache's, just opened)."""
    rows = _take_pending()
    if not rows:
        return
    try:
        db.execute(SCHEMA)
    except sqlite3.Error:
        _keep_pending(rows)
        return
    if not _write(db, rows):
        _keep_pending(rows)


def _stored(db: sqlite3.Connection, keys: list[str]) -> dict[str, tuple[Stamp, str]]:
    found: dict[str, tuple[Stamp, str]] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start:start + _CHUNK]
        rows = db.execute(f"SELECT path, size, mtime_ns, ctime_ns, inode, device, sha256 FROM files "
                          f"WHERE path IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        for key, *stamp, digest in rows:
            found[key] = (Stamp(*stamp), digest)
    return found


def _hash_all(paths: list[str], sizes: list[int]) -> list[str]:
    """Hex SHA-256 of each path; the first failure (in order) is raised.

    Large files are hashed on all usable cores (reading and hashing release the GIL); for files
    under :data:`PARALLEL_BYTES` on average the thread hand-offs cost more than they save.
    """
    if len(paths) < 2 or sum(sizes) < PARALLEL_BYTES * len(paths):
        return [sha256_file(p) for p in paths]
    from lastlayer.runtime.interpreter import usable_cores

    workers = min(usable_cores(), 8)
    if workers < 2:
        return [sha256_file(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lastlayer-hash") as pool:
        return list(pool.map(sha256_file, paths))


def file_digests(paths: Sequence[str | os.PathLike[str]], *, folder: Path | None = None,
                 hashed: list[str] | None = None) -> list[str]:
    """Hex SHA-256 of each file's content, in order; unchanged files take their hash from the database in ``folder``.

    ``folder`` defaults to the embedding cache's (``<cache>/embeddings``). ``hashed`` collects the
    absolute paths whose content was read. A missing or unreadable file raises its ``OSError``.
    """
    keys = [os.path.abspath(p) for p in paths]
    stamps = [Stamp.of(k) for k in keys]
    db = _connect(database_path(folder))
    try:
        known: dict[str, tuple[Stamp, str]] = {}
        if db is not None:
            try:
                known = _stored(db, list(dict.fromkeys(keys)))
            except sqlite3.Error:
                db.close()
                db = None
        with _PENDING_LOCK:  # hashed earlier in this process, not yet written
            pending = {key: _PENDING[key] for key in keys if key not in known and key in _PENDING} if _PENDING else {}
        digests: list[str | None] = []
        for key, stamp in zip(keys, stamps):
            entry = (known.get(key) or pending.get(key)) if USE_STAMPS else None
            digests.append(entry[1] if entry is not None and entry[0] == stamp else None)
        missing = [row for row, digest in enumerate(digests) if digest is None]
        started = time.time_ns()
        fresh = _hash_all([keys[row] for row in missing], [stamps[row].size for row in missing])
        racy = started - int(RACY_SECONDS * 1e9)
        rows = []
        for row, digest in zip(missing, fresh):
            digests[row] = digest
            if stamps[row].mtime_ns < racy:
                rows.append((keys[row], *stamps[row], digest))
        if hashed is not None:
            hashed.extend(keys[row] for row in missing)
        if db is None:
            _keep_pending(rows)
        else:
            rows = _take_pending() + rows
            if rows and not _write(db, rows):
                _keep_pending(rows)
        return [d for d in digests if d is not None]
    finally:
        if db is not None:
            db.close()
