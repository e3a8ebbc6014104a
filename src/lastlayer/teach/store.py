"""The teaching state on disk: one SQLite database (WAL mode) in the state folder, the one source of truth.

Every change is one transaction, committed and synced before the call returns, so a kill -9 or a power
cut never loses an example that was acknowledged and never leaves half of a change behind. Several
processes may use one state at once: each change bumps a revision number stored with the data, so a
process sees the others' changes in one cheap read (:meth:`StateStore.snapshot`), and the rules live in
the database (a class name's key is UNIQUE, an example needs its class), so a race between two processes ends
in a :class:`~lastlayer.errors.ConflictError` or :class:`~lastlayer.errors.NotFoundError`. Locks, busy
waits and storage failures: :mod:`lastlayer.teach.database`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lastlayer.errors import ConflictError, LastLayerError, NotFoundError
from lastlayer.files.names import name_key
from lastlayer.teach.database import BUSY_MESSAGE, StateDatabase, StateError

__all__ = ["BUSY_MESSAGE", "DATABASE_NAME", "DEFAULT_BUSY_TIMEOUT", "Snapshot", "StateError", "StateStore", "StoredClass",
           "StoredExample"]

DATABASE_NAME = "session.sqlite"
SCHEMA_VERSION = 2  # 2: classes.name_key, UNIQUE (names compared as lastlayer.files.names.name_key says)
KEEP_CLASSES = "keep_classes"  # the meta entry: the model's own classes kept (see StateStore.start_keeping)
DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a change waits for another process's write lock ($LASTLAYER_BUSY_TIMEOUT)

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS classes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    name_key TEXT,                 -- name_key(name): UNIQUE (index classes_by_key), so look-alike names are one class
    base_weights BLOB,             -- a class imported from a model: its running sum, when it has no stored examples
    base_shots INTEGER NOT NULL DEFAULT 0,
    trainable INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    class_id INTEGER NOT NULL REFERENCES classes(id) ON DELETE CASCADE,
    created REAL NOT NULL,
    embedding BLOB NOT NULL,       -- float32 unit vector
    thumbnail BLOB                 -- small JPEG for review
);
CREATE TABLE IF NOT EXISTS finetuned (class_id INTEGER PRIMARY KEY REFERENCES classes(id) ON DELETE CASCADE, row BLOB NOT NULL);
-- value: bumped by every change; examples / tuned: the revision of the last change to what the head is
-- imprinted from (examples, classes with rows, settings) / to the fine-tuned rows.
CREATE TABLE IF NOT EXISTS revision (id INTEGER PRIMARY KEY CHECK (id = 0), value INTEGER NOT NULL,
                                     examples INTEGER NOT NULL, tuned INTEGER NOT NULL);
INSERT OR IGNORE INTO revision(id, value, examples, tuned) VALUES (0, 0, 0, 0);
CREATE INDEX IF NOT EXISTS examples_by_class ON examples(class_id);
-- the content digest (SHA-256) of an example's photo file, when it came from one: an import skips what is there
CREATE TABLE IF NOT EXISTS photo_digests (example_id INTEGER PRIMARY KEY REFERENCES examples(id) ON DELETE CASCADE,
                                          digest TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS photo_digests_by_digest ON photo_digests(digest);
"""
_SCHEMA_OBJECTS = {"meta", "classes", "examples", "finetuned", "revision", "examples_by_class", "photo_digests",
                   "photo_digests_by_digest"}


@dataclass(frozen=True)
class StoredClass:
    id: int
    name: str
    base_weights: np.ndarray | None
    base_shots: int
    trainable: bool


@dataclass(frozen=True)
class StoredExample:
    """One example; ``embedding`` is ``None`` in listings that do not need it."""

    id: int
    class_id: int
    created: float
    embedding: np.ndarray | None = None


@dataclass(frozen=True)
class Snapshot:
    """The whole state as one consistent read (see :meth:`StateStore.snapshot`)."""

    revision: int
    examples_revision: int
    tuned_revision: int
    classes: list[StoredClass]
    examples: list[StoredExample]  # oldest first: the new ones, or all (see ``every_example``)
    example_count: int  # how many examples the state holds
    finetuned: dict[int, np.ndarray] | None  # None: unchanged since the ``tuned`` revision asked about
    keep_classes: dict[str, Any] | None = None  # the model's own classes kept: the setting (see start_keeping)


class StateStore:
    """Thread-safe access to ``<state_dir>/session.sqlite`` from any number of threads and processes.

    Args:
        state_dir: the state folder (created when missing, unless ``read_only``).
        read_only: open an existing state without creating or changing anything in the folder
            (:class:`StateError` when it holds no state); changes raise :class:`StateError`.
        busy_timeout: seconds a change waits for another process's write lock before
            :class:`~lastlayer.errors.BusyError` (default: ``$LASTLAYER_BUSY_TIMEOUT``, else 5).
    """

    def __init__(self, state_dir: str | os.PathLike[str], *, read_only: bool = False, busy_timeout: float | None = None) -> None:
        self.folder = Path(state_dir)
        self.read_only = read_only
        self._db = StateDatabase(self.folder / DATABASE_NAME, _TABLES, _SCHEMA_OBJECTS, read_only=read_only,
                                 busy_timeout=default_busy_timeout() if busy_timeout is None else busy_timeout)
        try:
            if read_only:
                self._check_state()
            version = self.get_meta("schema_version")
            if version is not None and int(version) > SCHEMA_VERSION:
                raise StateError(f"state folder {self.folder} was written by a newer lastlayer; upgrade lastlayer", subject="state")
            if not read_only and (version is None or int(version) < SCHEMA_VERSION):
                self._migrate()
        except BaseException:
            self.close()
            raise

    def _check_state(self) -> None:
        try:
            with self._db.reading() as db:
                present = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        except LastLayerError:
            present = set()
        if not {"meta", "classes", "examples"} <= present:
            raise StateError(f"{self.folder} holds no teaching state lastlayer can read ({DATABASE_NAME} has no classes); "
                             "check the path", subject="state")

    def _migrate(self) -> None:
        """Bring a new state, or one written by an older lastlayer, to :data:`SCHEMA_VERSION` (one change, so another
        process opening it at the same time either sees it done or waits for it).

        Version 2 keys every class name (:func:`~lastlayer.files.names.name_key`) under a UNIQUE index. Two classes that
        an older lastlayer let look alike (``gear`` and ``Gear``) both stay: the later one's key gets its id appended,
        and a new class can take neither name.
        """
        with self._db.changing() as change:
            db = change.db
            stored = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if stored is not None and int(json.loads(stored[0])) >= SCHEMA_VERSION:
                return  # another process migrated it meanwhile
            if "name_key" not in {row[1] for row in db.execute("PRAGMA table_info(classes)")}:
                db.execute("ALTER TABLE classes ADD COLUMN name_key TEXT")
            taken: set[str] = set()
            for class_id, name in db.execute("SELECT id, name FROM classes ORDER BY id").fetchall():
                key = name_key(name)
                key = key if key not in taken else f"{key}\x00{class_id}"
                taken.add(key)
                db.execute("UPDATE classes SET name_key = ? WHERE id = ?", (key, class_id))
            db.execute("CREATE UNIQUE INDEX IF NOT EXISTS classes_by_key ON classes(name_key)")
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (json.dumps(SCHEMA_VERSION),))

    @property
    def busy_timeout(self) -> float:
        return self._db.busy_timeout

    def close(self) -> None:
        """Close the database; a change still waiting for another process's lock gives up at once."""
        self._db.close()

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._db.reading() as db:
            return db.execute(sql, args).fetchall()

    # ----------------------------------------------------------------- revision
    def revision(self) -> int:
        """The number of changes ever made to this state (by any process)."""
        with self._db.reading() as db:
            return _revision_row(db)[0]

    def snapshot(self, since: int | None = None, *, after: int = 0, tuned: int | None = None,
                 every_example: bool = False) -> Snapshot | None:
        """The state in one consistent read, or ``None`` when its revision is still ``since``.

        ``examples`` holds the examples with an id above ``after`` (ids only grow, so these are the ones
        added since a reader saw ``after``), or with ``every_example`` all of them, with embeddings for
        those above ``after`` only. The fine-tuned rows are read only when they changed since the
        ``tuned`` revision.
        """
        with self._db.reading() as db:
            db.execute("BEGIN")
            try:
                numbers = _revision_row(db)
                if since is not None and numbers[0] == since:
                    return None
                classes = [StoredClass(r[0], r[1], None if r[2] is None else np.frombuffer(r[2], dtype=np.float64).copy(), r[3], bool(r[4]))
                           for r in db.execute("SELECT id, name, base_weights, base_shots, trainable FROM classes ORDER BY id")]
                count = int(db.execute("SELECT COUNT(*) FROM examples").fetchone()[0])
                rows = db.execute("SELECT id, class_id, created, CASE WHEN id > ? THEN embedding END FROM examples WHERE id > ? "
                                  "ORDER BY id", (after, -1 if every_example else after))
                examples = [StoredExample(r[0], r[1], r[2], None if r[3] is None else np.frombuffer(r[3], dtype=np.float32).copy())
                            for r in rows]
                finetuned = None if tuned == numbers[2] else {
                    r[0]: np.frombuffer(r[1], dtype=np.float64).copy() for r in db.execute("SELECT class_id, row FROM finetuned")}
                keep = db.execute("SELECT value FROM meta WHERE key = ?", (KEEP_CLASSES,)).fetchone()
            finally:
                if db.in_transaction:
                    db.execute("COMMIT")
        return Snapshot(numbers[0], numbers[1], numbers[2], classes, examples, count, finetuned, keep and json.loads(keep[0]))

    # ----------------------------------------------------------------- meta
    def get_meta(self, key: str) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: Any) -> None:
        with self._db.changing() as change:
            change.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))
            change.examples = True  # the scale and the normalisation decide what the examples mean

    def start_keeping(self, setting: dict[str, Any] | None, first_id: int = 1,
                      classes: Sequence[tuple[str, np.ndarray, int, dict[str, Any]]] = ()) -> None:
        """Keep the model's own classes with ``setting`` (``None``: stop keeping them), in one change, only while the
        state holds no class (:class:`ConflictError` otherwise). New class ids then start at ``first_id`` or above (the
        ids below are the model's own classes'), and ``classes`` (name, running sum, shots, details: classes the model
        had appended) are created at once, trainable, their details kept in the setting's ``"imported"`` by class id."""
        setting = None if setting is None else dict(setting)
        with self._db.changing(sum(len(c[0]) + 8 * len(c[1]) for c in classes)) as change:
            if change.db.execute("SELECT COUNT(*) FROM classes").fetchone()[0]:
                raise ConflictError(f"the state in {self.folder} holds classes already: whether the model's own classes are kept is "
                                    "decided before the first class; use a new state folder", subject="class")
            if setting is not None:  # AUTOINCREMENT: the next id is above the largest ever given or set here
                if not change.db.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'classes'", (first_id - 1,)).rowcount:
                    change.db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('classes', ?)", (first_id - 1,))
                setting["imported"] = {}
                for name, total, shots, details in classes:
                    try:
                        cursor = change.db.execute("INSERT INTO classes(name, name_key, base_weights, base_shots, trainable) "
                                                   "VALUES (?, ?, ?, ?, 1)", (name, name_key(name),
                                                                              np.asarray(total, dtype=np.float64).tobytes(), int(shots)))
                    except sqlite3.IntegrityError:
                        raise ConflictError(f"the model names two classes {name!r}; rename one in its labels", subject="class") from None
                    setting["imported"][str(cursor.lastrowid)] = details
            change.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (KEEP_CLASSES, json.dumps(setting)))
            change.examples = True

    # ----------------------------------------------------------------- classes
    def add_class(self, name: str, base_weights: np.ndarray | None = None, base_shots: int = 0, trainable: bool = True) -> int:
        """Create a class; :class:`ConflictError` if the name, or one that looks alike (same :func:`name_key`), is taken
        (by any process)."""
        blob = None if base_weights is None else np.asarray(base_weights, dtype=np.float64).tobytes()
        with self._db.changing(len(name) + len(blob or b"")) as change:
            try:
                cursor = change.db.execute("INSERT INTO classes(name, name_key, base_weights, base_shots, trainable) "
                                           "VALUES (?, ?, ?, ?, ?)", (name, name_key(name), blob, int(base_shots), int(trainable)))
            except sqlite3.IntegrityError:
                raise _taken(change.db, name) from None
            change.examples = blob is not None
            return int(cursor.lastrowid)

    def rename_class(self, class_id: int, name: str) -> None:
        with self._db.changing(len(name)) as change:
            try:
                renamed = change.db.execute("UPDATE classes SET name = ?, name_key = ? WHERE id = ?",
                                            (name, name_key(name), class_id)).rowcount
            except sqlite3.IntegrityError:
                raise _taken(change.db, name) from None
            if not renamed:
                raise _no_class(class_id)

    def remove_class(self, class_id: int) -> None:
        """Delete a class and its examples; :class:`NotFoundError` if it does not exist (any more)."""
        with self._db.changing() as change:
            change.db.execute("DELETE FROM examples WHERE class_id = ?", (class_id,))
            if not change.db.execute("DELETE FROM classes WHERE id = ?", (class_id,)).rowcount:
                raise _no_class(class_id)
            change.clear_finetuned()
            change.examples = True

    # ----------------------------------------------------------------- examples
    def add_examples(self, class_id: int, embeddings: np.ndarray, thumbnails: list[bytes | None]) -> list[StoredExample]:
        """Store examples of an existing class that may take them (else NotFoundError / ConflictError)."""
        blobs = [np.asarray(embedding, dtype=np.float32).tobytes() for embedding in embeddings]
        now = time.time()
        with self._db.changing(sum(len(b) for b in blobs) + sum(len(t or b"") for t in thumbnails)) as change:
            row = change.db.execute("SELECT name, trainable FROM classes WHERE id = ?", (class_id,)).fetchone()
            if row is None:
                raise _no_class(class_id)
            if not row[1]:
                raise ConflictError(f"class {row[0]!r} came with the model and cannot take new examples", subject="class")
            ids = [int(change.db.execute("INSERT INTO examples(class_id, created, embedding, thumbnail) VALUES (?, ?, ?, ?)",
                                         (class_id, now, blob, thumbnail)).lastrowid) for blob, thumbnail in zip(blobs, thumbnails)]
            change.clear_finetuned()
            change.examples = True
        return [StoredExample(i, class_id, now) for i in ids]

    def add_labelled(self, names: list[str], embeddings: np.ndarray, thumbnails: list[bytes | None],
                     digests: list[str | None]) -> list[StoredExample]:
        """Store examples of several classes, named beside each, in one change: the classes not there yet are created,
        and every example is stored or none (a class that cannot take examples refuses the whole change)."""
        blobs = [np.asarray(embedding, dtype=np.float32).tobytes() for embedding in embeddings]
        now = time.time()
        with self._db.changing(sum(len(b) for b in blobs) + sum(len(t or b"") for t in thumbnails)) as change:
            ids: dict[str, int] = {}
            for name in dict.fromkeys(names):
                row = change.db.execute("SELECT id, trainable FROM classes WHERE name_key = ?", (name_key(name),)).fetchone()
                if row is None:  # (a look-alike of a class's name is that class)
                    row = (int(change.db.execute("INSERT INTO classes(name, name_key) VALUES (?, ?)", (name, name_key(name))).lastrowid), 1)
                if not row[1]:
                    raise ConflictError(f"class {name!r} came with the model and cannot take new examples", subject="class")
                ids[name] = int(row[0])
            stored = []
            for name, blob, thumbnail, digest in zip(names, blobs, thumbnails, digests):
                example = int(change.db.execute("INSERT INTO examples(class_id, created, embedding, thumbnail) VALUES (?, ?, ?, ?)",
                                                (ids[name], now, blob, thumbnail)).lastrowid)
                if digest is not None:
                    change.db.execute("INSERT INTO photo_digests(example_id, digest) VALUES (?, ?)", (example, digest))
                stored.append(StoredExample(example, ids[name], now))
            change.clear_finetuned()
            change.examples = True
        return stored

    def known_digests(self, digests: list[str]) -> set[str]:
        """Those of ``digests`` that an example of the state was stored from."""
        known: set[str] = set()
        if not self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'photo_digests'"):
            return known  # a state read-only from before digests were kept
        for start in range(0, len(digests), 500):  # SQLite's limit on bound parameters
            chunk = digests[start:start + 500]
            known.update(row[0] for row in self._query(
                f"SELECT DISTINCT digest FROM photo_digests WHERE digest IN ({','.join('?' * len(chunk))})", tuple(chunk)))
        return known

    def remove_example(self, example_id: int | None = None) -> StoredExample | None:
        """Delete one example (the newest one when ``example_id`` is None); returns it, or ``None`` when there is none.

        :class:`NotFoundError` when ``example_id`` does not exist (any more).
        """
        with self._db.changing() as change:
            row = change.db.execute("SELECT id, class_id, created FROM examples " +
                                    ("ORDER BY id DESC LIMIT 1" if example_id is None else "WHERE id = ?"),
                                    () if example_id is None else (example_id,)).fetchone()
            if row is None:
                if example_id is None:
                    return None
                raise NotFoundError(f"there is no example {example_id} (it may have been removed already)", subject="example")
            change.db.execute("DELETE FROM examples WHERE id = ?", (row[0],))
            change.clear_finetuned()
            change.examples = True
            return StoredExample(row[0], row[1], row[2])

    def examples(self, class_id: int | None = None) -> list[StoredExample]:
        """The examples (of one class: :class:`NotFoundError` if it does not exist), oldest first, without embeddings."""
        with self._db.reading() as db:
            if class_id is not None and db.execute("SELECT 1 FROM classes WHERE id = ?", (class_id,)).fetchone() is None:
                raise _no_class(class_id)
            rows = db.execute("SELECT id, class_id, created FROM examples" + ("" if class_id is None else " WHERE class_id = ?") +
                              " ORDER BY id", () if class_id is None else (class_id,)).fetchall()
        return [StoredExample(r[0], r[1], r[2]) for r in rows]

    def thumbnail(self, example_id: int) -> bytes:
        """An example's stored JPEG; :class:`NotFoundError` if the example does not exist (any more) or has none."""
        rows = self._query("SELECT thumbnail FROM examples WHERE id = ?", (example_id,))
        if not rows or rows[0][0] is None:
            what = "has no thumbnail" if rows else "does not exist (it may have been removed)"
            raise NotFoundError(f"example {example_id} {what}", subject="example")
        return rows[0][0]

    # ----------------------------------------------------------------- fine-tuned rows
    def finetuned_rows(self) -> dict[int, np.ndarray]:
        return {r[0]: np.frombuffer(r[1], dtype=np.float64).copy() for r in self._query("SELECT class_id, row FROM finetuned")}

    def set_finetuned_rows(self, rows: dict[int, np.ndarray], examples_revision: int | None = None) -> None:
        """Keep fine-tuned rows; with ``examples_revision``, only if no example or class changed since that revision
        (:class:`ConflictError` otherwise: the rows were tuned on examples that are not the state's any more)."""
        blobs = [(k, np.asarray(v, dtype=np.float64).tobytes()) for k, v in rows.items()]
        with self._db.changing(sum(len(b) for _, b in blobs)) as change:
            current = change.db.execute("SELECT examples FROM revision").fetchone()[0]
            if examples_revision is not None and current != examples_revision:
                raise ConflictError("the examples changed while fine-tuning (another change came first); nothing was kept: "
                                    "fine-tune again", subject="class")
            change.db.execute("DELETE FROM finetuned")
            try:
                change.db.executemany("INSERT INTO finetuned(class_id, row) VALUES (?, ?)", blobs)
            except sqlite3.IntegrityError:
                raise ConflictError("a class was deleted while fine-tuning; nothing was kept: fine-tune again", subject="class") from None
            change.tuned = True


def default_busy_timeout() -> float:
    """``$LASTLAYER_BUSY_TIMEOUT`` (seconds) when set to a number >= 0, else :data:`DEFAULT_BUSY_TIMEOUT`."""
    try:
        value = float(os.environ.get("LASTLAYER_BUSY_TIMEOUT", ""))
    except ValueError:
        return DEFAULT_BUSY_TIMEOUT
    return value if value >= 0 else DEFAULT_BUSY_TIMEOUT


def _revision_row(db: sqlite3.Connection) -> tuple[int, int, int]:
    """(revision, examples revision, tuned revision); zeros for a state written before revisions were kept."""
    try:
        value, examples, tuned = db.execute("SELECT value, examples, tuned FROM revision").fetchone()
    except sqlite3.OperationalError:  # no such table: read-only, and no writer has opened it since
        return 0, 0, 0
    return int(value), int(examples), int(tuned)


def _taken(db: sqlite3.Connection, name: str) -> ConflictError:
    """The error for a name whose key is taken, naming the class that has it."""
    row = db.execute("SELECT name FROM classes WHERE name_key = ? OR name = ?", (name_key(name), name)).fetchone()
    existing = name if row is None else row[0]
    alike = "" if existing == name else f" ({name!r} differs from it only in case, width or spacing)"
    return ConflictError(f"a class named {existing!r} exists already{alike}; choose another name", subject="class")


def _no_class(class_id: int) -> NotFoundError:
    return NotFoundError(f"there is no class {class_id} (it may have been deleted)", subject="class")
