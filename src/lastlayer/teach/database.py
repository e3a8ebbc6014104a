"""The SQLite plumbing of a teaching state: two connections, a bounded write lock, failures in words.

Reads and changes use separate connections, so while another process holds the write lock, reads keep
answering (WAL readers never wait) and a change waits at most ``busy_timeout`` seconds before
:class:`~lastlayer.errors.BusyError`. Whatever fails (the lock, a statement, the commit, a full disk, a
database deleted under us), the change is rolled back and every lock is released before the error
leaves. Every change bumps the revision row, which is how other processes notice it.

Opened ``read_only``, nothing is created or changed in the folder: while a writer's ``-wal`` and
``-shm`` files exist the database is read as a WAL reader; without them (a WAL reader would create
them) it is read as an immutable file and reopened as soon as a writer appears or the file changes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from lastlayer.errors import BusyError, LastLayerError, StorageError

BUSY_MESSAGE = "the state is busy (another process is writing); retry"
_POLL = 0.05  # one attempt at the write lock; between attempts, close() can cut the wait short
_WAL_PAGE = 4096 + 24

# SQLite's primary result codes (sqlite3.Error.sqlite_errorcode & 0xff, Python >= 3.11; older: the message).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _NOTADB = 5, 6, 8, 10, 11, 13, 26
_MESSAGES = {"database is locked": _BUSY, "attempt to write a readonly database": _READONLY, "disk i/o error": _IOERR,
             "database disk image is malformed": _CORRUPT, "database or disk is full": _FULL, "file is not a database": _NOTADB}


class StateError(LastLayerError, RuntimeError):
    """The state folder cannot be used (unwritable, not a state, or a database from something else)."""


class Change:
    """The connection of one change, and which parts of the state it changed (for the revision row)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.examples = self.tuned = False
        self.revision = 0

    def clear_finetuned(self) -> None:
        if self.db.execute("DELETE FROM finetuned").rowcount:
            self.tuned = True


def _code(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    return code & 0xFF if code is not None else _MESSAGES.get(str(error).lower())


class StateDatabase:
    """``path`` opened for reading and (unless ``read_only``) changing; see the module docstring.

    Args:
        path: the database file.
        schema: the script creating the tables (run only when one of ``schema_objects`` is missing, so
            an existing state opens without taking the write lock).
        schema_objects: the names of the tables and indexes the script creates.
        read_only: never create or change anything.
        busy_timeout: seconds a change waits for another process's write lock.
    """

    def __init__(self, path: Path, schema: str, schema_objects: set[str], *, read_only: bool, busy_timeout: float) -> None:
        self.path, self.folder = path, path.parent
        self.read_only, self.busy_timeout = read_only, float(busy_timeout)
        self._write_lock, self._read_lock = threading.Lock(), threading.Lock()
        self._closing = threading.Event()
        self._writer: Any = None
        self._reader: Any = None
        self._reader_key: tuple[Any, ...] | None = None
        try:
            if read_only:
                self._open_reader()
            else:
                self._open_writer(schema, schema_objects)
                self._reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=self.busy_timeout)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- opening and closing
    def _open_writer(self, schema: str, schema_objects: set[str]) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe, name = tempfile.mkstemp(prefix=".lastlayer-probe-", dir=self.folder)  # refuse a read-only folder now
            os.close(probe)
            os.unlink(name)
            if self.path.exists() and not os.access(self.path, os.W_OK):
                raise PermissionError(13, "the database file is read-only")
        except OSError as exc:
            raise StateError(f"cannot write to state folder {self.folder} ({exc.strerror or exc}); make it writable or "
                             "choose another folder", subject="state") from None
        try:
            self._writer = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=self.busy_timeout)
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._writer.execute("PRAGMA synchronous=FULL")  # durable at commit: survives a power cut
            self._writer.execute("PRAGMA foreign_keys=ON")
            if not schema_objects <= {row[0] for row in self._writer.execute("SELECT name FROM sqlite_master")}:
                self._writer.executescript(schema)
            self._writer.execute(f"PRAGMA busy_timeout={int(_POLL * 1000)}")
            self._identity = self._file_identity()
        except sqlite3.Error as exc:
            if _code(exc) in (_BUSY, _LOCKED, _FULL, _READONLY, _IOERR):
                raise self.failure(exc) from None
            raise StateError(f"state folder {self.folder} holds a database lastlayer cannot use ({exc}); "
                             "choose an empty folder", subject="state") from None

    def _open_reader(self) -> None:
        """(Re)open the read-only connection (a WAL reader, or the file read as immutable: see the module docstring)."""
        if not self.folder.is_dir():
            raise StateError(f"there is no state folder {self.folder}; check the path", subject="state")
        if not self.path.is_file():
            raise StateError(f"{self.folder} holds no teaching state (no {self.path.name}); check the path", subject="state")
        key = self._files_key()
        mode = "ro" if key[0] else "ro&immutable=1"
        connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode={mode}", uri=True, check_same_thread=False,
                                     isolation_level=None, timeout=self.busy_timeout)
        old, self._reader, self._reader_key = self._reader, connection, key
        if old is not None:
            old.close()

    def _files_key(self) -> tuple[Any, ...]:
        """Whether a writer's WAL files exist, and (without them) the database file's identity and size."""
        if all(Path(f"{self.path}{suffix}").exists() for suffix in ("-wal", "-shm")):
            return (True,)
        stat = self.path.stat()
        return (False, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def _follow_files(self) -> None:
        """Reopen the immutable reader when a writer appeared or the file changed (a WAL reader follows by itself)."""
        if self._reader_key is None or self._reader_key[0]:
            return
        try:
            changed = self._files_key() != self._reader_key
        except OSError:  # the file is gone: keep reading what was open
            return
        if changed:
            self._open_reader()

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_dev, stat.st_ino

    def close(self) -> None:
        """Close both connections; a change still waiting for the write lock gives up at once."""
        self._closing.set()
        if self._write_lock.acquire(timeout=self.busy_timeout + 1):
            try:
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
            finally:
                self._write_lock.release()
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # ----------------------------------------------------------------- reading and changing
    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The read connection, for this thread alone until the block ends."""
        with self._read_lock:
            if self._reader is None:
                raise StateError(f"the state in {self.folder} is closed", subject="state")
            try:
                if self.read_only:
                    self._follow_files()
                yield self._reader
            except sqlite3.Error as exc:
                raise self.failure(exc, reading=True) from None

    @contextlib.contextmanager
    def changing(self, size: int = 0) -> Iterator[Change]:
        """One atomic, durable change; ``size``: about how many bytes it writes (for the disk-full message)."""
        if self.read_only:
            raise StateError(f"the state in {self.folder} was opened read-only", subject="state")
        deadline = time.monotonic() + self.busy_timeout
        if not self._write_lock.acquire(timeout=self.busy_timeout):
            raise BusyError(BUSY_MESSAGE, subject="state")
        try:
            db = self._writer
            if db is None or self._closing.is_set():
                raise StateError(f"the state in {self.folder} is closed", subject="state")
            try:
                self._begin(db, deadline)
                change = Change(db)
                try:
                    self._check_same_file()
                    yield change
                    db.execute("UPDATE revision SET value = value + 1, examples = CASE WHEN ? THEN value + 1 ELSE examples END, "
                               "tuned = CASE WHEN ? THEN value + 1 ELSE tuned END", (change.examples, change.tuned))
                    change.revision = int(db.execute("SELECT value FROM revision").fetchone()[0])
                    self._check_same_file()
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self.failure(exc, size) from None
        finally:
            self._write_lock.release()

    def _begin(self, db: sqlite3.Connection, deadline: float) -> None:
        """``BEGIN IMMEDIATE``, retried until ``deadline`` (each attempt waits at most :data:`_POLL`), or :class:`BusyError`."""
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if _code(exc) not in (_BUSY, _LOCKED):
                    raise
                if self._closing.is_set() or time.monotonic() >= deadline:
                    raise BusyError(BUSY_MESSAGE, subject="state") from None

    def _check_same_file(self) -> None:
        if self._file_identity() != self._identity:
            raise StorageError(f"the state database {self.path} was deleted or replaced while this process was running; "
                               "this change was not stored: restart to go on with what is in that folder now", subject="state")

    def failure(self, error: sqlite3.Error, size: int = 0, *, reading: bool = False) -> LastLayerError:
        """The library error for a failed SQLite call."""
        code = _code(error)
        lost = "" if reading else "; nothing of this change was stored"
        if code in (_BUSY, _LOCKED):
            return BusyError(BUSY_MESSAGE, subject="state")
        if code == _FULL:
            try:
                free = os.statvfs(self.folder).f_bavail * os.statvfs(self.folder).f_frsize
            except OSError:
                free = 0
            need = size + 8 * _WAL_PAGE  # the data, and the pages of tables and indexes it touches
            return StorageError(f"the disk holding state folder {self.folder} is full ({free / 1024:.0f} KiB free; this change "
                                f"needs about {need / 1024:.0f} KiB): free at least {max(1, -(-need // 2**20))} MiB there "
                                f"and retry{lost}", subject="state")
        if code == _READONLY:
            return StorageError(f"state folder {self.folder} has become read-only{lost}: make it writable and retry", subject="state")
        if code in (_CORRUPT, _NOTADB):
            return StorageError(f"the state database {self.path} is damaged ({error}){lost}", subject="state")
        return StorageError(f"cannot use the state database {self.path} ({error}){lost}: check the disk and retry", subject="state")
