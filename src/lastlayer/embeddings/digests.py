"""SHA-256 of image files, with a stat shortcut so a warm run does not read every file again.

The content hash keys the embedding cache, and hashing 20,000 photos costs seconds on every run.
So the hash of each file is kept with its stat (size, modification and change time in
nanoseconds, inode and device), per absolute path, in the ``files`` table of the cache database
(:class:`~lastlayer.embeddings.database.CacheDatabase`). A later run takes the stored hash only while
all of these are unchanged; any change (an edit, ``touch``, a replaced file, a moved-in copy)
hashes the file again. The hash stays the cache key: the stat is only a shortcut to it.

Timestamps are coarse (a file written twice in one clock tick keeps its mtime), so a file modified
less than :data:`RACY_SECONDS` before it was hashed is not remembered and is hashed again next
time, as git does for "racily clean" files. Without a database (or with one that turned itself
off) every file is hashed.
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Sequence

from lastlayer.embeddings.database import CacheDatabase

RACY_SECONDS = 2.0  # FAT's mtime step; ext4, APFS and NTFS are finer
USE_STAMPS = True  # False: hash every file, trusting no stored stat (the benchmarks' baseline)
PARALLEL_BYTES = 512 * 1024  # mean file size from which hashing runs on all cores (measured: not for 60 KB photos)


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


def _stored(database: CacheDatabase, keys: list[str]) -> dict[str, tuple[Stamp, str]]:
    query = "SELECT path, size, mtime_ns, ctime_ns, inode, device, sha256 FROM files WHERE path IN ({})"
    return {key: (Stamp(*stamp), digest) for key, *stamp, digest in database.rows_in(query, keys)}


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


def file_digests(paths: Sequence[str | os.PathLike[str]], database: CacheDatabase | None = None, *,
                 hashed: list[str] | None = None) -> list[str]:
    """Hex SHA-256 of each file's content, in order; unchanged files take their hash from ``database``.

    Without ``database`` every file is read. ``hashed`` collects the absolute paths whose content
    was read. A missing or unreadable file raises its ``OSError``.
    """
    keys = [os.path.abspath(p) for p in paths]
    stamps = [Stamp.of(k) for k in keys]
    use = database is not None and database.enabled and USE_STAMPS
    known = _stored(database, list(dict.fromkeys(keys))) if use else {}  # type: ignore[arg-type]
    digests: list[str | None] = []
    for key, stamp in zip(keys, stamps):
        entry = known.get(key)
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
    if rows and database is not None:
        database.write("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    return [d for d in digests if d is not None]
