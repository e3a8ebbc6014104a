"""The teaching state on disk: one SQLite database (WAL mode) in the state folder.

Every change is one transaction, committed before the call returns, so a kill -9 or a power cut
never loses an example that was acknowledged and never leaves half of a change behind. Classes,
examples (embedding + thumbnail) and a few settings live in three tables.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lastlayer.errors import LastLayerError

DATABASE_NAME = "session.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS classes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
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
"""


class StateError(LastLayerError, RuntimeError):
    """The state folder cannot be used (unwritable, or a database from something else)."""


@dataclass(frozen=True)
class StoredClass:
    id: int
    name: str
    base_weights: np.ndarray | None
    base_shots: int
    trainable: bool


@dataclass(frozen=True)
class StoredExample:
    id: int
    class_id: int
    created: float
    embedding: np.ndarray


class StateStore:
    """Thread-safe access to ``<state_dir>/session.sqlite``."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.folder = Path(state_dir)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.folder / DATABASE_NAME, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # durable at commit: survives a power cut
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state folder {self.folder} holds a database lastlayer cannot use ({exc}); "
                             "choose an empty folder", subject="state") from None
        except OSError as exc:
            raise StateError(f"cannot use state folder {self.folder}: {exc.strerror or exc}; choose a writable folder",
                             subject="state") from None
        self._lock = threading.RLock()
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif int(version) > SCHEMA_VERSION:
            raise StateError(f"state folder {self.folder} was written by a newer lastlayer; upgrade lastlayer", subject="state")

    # ----------------------------------------------------------------- plumbing
    def transaction(self) -> _Transaction:
        """``with store.transaction() as db:`` runs the statements as one atomic, durable change."""
        return _Transaction(self)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ----------------------------------------------------------------- meta
    def get_meta(self, key: str) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # ----------------------------------------------------------------- classes
    def classes(self) -> list[StoredClass]:
        rows = self._query("SELECT id, name, base_weights, base_shots, trainable FROM classes ORDER BY id")
        return [StoredClass(r[0], r[1], None if r[2] is None else np.frombuffer(r[2], dtype=np.float64).copy(), r[3], bool(r[4]))
                for r in rows]

    def add_class(self, name: str, base_weights: np.ndarray | None = None, base_shots: int = 0, trainable: bool = True) -> int:
        blob = None if base_weights is None else np.asarray(base_weights, dtype=np.float64).tobytes()
        with self.transaction() as db:
            cursor = db.execute("INSERT INTO classes(name, base_weights, base_shots, trainable) VALUES (?, ?, ?, ?)",
                                (name, blob, int(base_shots), int(trainable)))
            db.execute("DELETE FROM finetuned")
            return int(cursor.lastrowid)

    def rename_class(self, class_id: int, name: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE classes SET name = ? WHERE id = ?", (name, class_id))

    def remove_class(self, class_id: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM examples WHERE class_id = ?", (class_id,))
            db.execute("DELETE FROM classes WHERE id = ?", (class_id,))
            db.execute("DELETE FROM finetuned")

    # ----------------------------------------------------------------- examples
    def add_examples(self, class_id: int, embeddings: np.ndarray, thumbnails: list[bytes | None]) -> list[int]:
        now = time.time()
        ids = []
        with self.transaction() as db:
            for embedding, thumbnail in zip(embeddings, thumbnails):
                cursor = db.execute("INSERT INTO examples(class_id, created, embedding, thumbnail) VALUES (?, ?, ?, ?)",
                                    (class_id, now, np.asarray(embedding, dtype=np.float32).tobytes(), thumbnail))
                ids.append(int(cursor.lastrowid))
            db.execute("DELETE FROM finetuned")
        return ids

    def remove_example(self, example_id: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM examples WHERE id = ?", (example_id,))
            db.execute("DELETE FROM finetuned")

    def examples(self) -> list[StoredExample]:
        rows = self._query("SELECT id, class_id, created, embedding FROM examples ORDER BY id")
        return [StoredExample(r[0], r[1], r[2], np.frombuffer(r[3], dtype=np.float32).copy()) for r in rows]

    def thumbnail(self, example_id: int) -> bytes | None:
        rows = self._query("SELECT thumbnail FROM examples WHERE id = ?", (example_id,))
        return rows[0][0] if rows else None

    # ----------------------------------------------------------------- fine-tuned rows
    def finetuned_rows(self) -> dict[int, np.ndarray]:
        return {r[0]: np.frombuffer(r[1], dtype=np.float64).copy() for r in self._query("SELECT class_id, row FROM finetuned")}

    def set_finetuned_rows(self, rows: dict[int, np.ndarray]) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM finetuned")
            db.executemany("INSERT INTO finetuned(class_id, row) VALUES (?, ?)",
                           [(k, np.asarray(v, dtype=np.float64).tobytes()) for k, v in rows.items()])


class _Transaction:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        self.store._db.execute("BEGIN IMMEDIATE")
        return self.store._db

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        try:
            self.store._db.execute("ROLLBACK" if kind is not None else "COMMIT")
        finally:
            self.store._lock.release()


