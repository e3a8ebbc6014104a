"""StateStore: every change atomic, every lock released on every failure path, bounded waits, rules in the database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lastlayer.errors import BusyError, ConflictError, NotFoundError, StorageError
from lastlayer.teach.store import BUSY_MESSAGE, DATABASE_NAME, StateError, StateStore

DIM = 8


def _unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM)
    return vector / np.linalg.norm(vector)


@pytest.fixture
def store(tmp_path: Path):
    opened = StateStore(tmp_path / "state", busy_timeout=0.5)
    yield opened
    opened.close()


class FailingConnection:
    """The store's write connection, raising ``error`` at its ``fail_at``-th call (1-based); counts the calls."""

    def __init__(self, real: sqlite3.Connection, fail_at: int | None, error: BaseException) -> None:
        self.real, self.fail_at, self.error, self.calls = real, fail_at, error, []

    def _call(self, name: str, sql: str, *args: object) -> object:
        self.calls.append(sql.split()[0])
        if len(self.calls) == self.fail_at:
            raise self.error
        return getattr(self.real, name)(sql, *args)

    def execute(self, sql: str, *args: object) -> object:
        return self._call("execute", sql, *args)

    def executemany(self, sql: str, *args: object) -> object:
        return self._call("executemany", sql, *args)

    @property
    def in_transaction(self) -> bool:
        return self.real.in_transaction

    def close(self) -> None:
        self.real.close()


def _lock_is_free(store: StateStore) -> bool:
    lock = store._db._write_lock
    if not lock.acquire(blocking=False):
        return False
    lock.release()
    return True


def _contents(store: StateStore) -> tuple:
    snap = store.snapshot(every_example=True)
    return (snap.revision, [(c.id, c.name) for c in snap.classes], [e.id for e in snap.examples], sorted(snap.finetuned))


CHANGES = {
    "add_examples": lambda store, gear: store.add_examples(gear, np.stack([_unit(1), _unit(2)]), [b"jpeg", None]),
    "set_finetuned_rows": lambda store, gear: store.set_finetuned_rows({gear: _unit(3)}),
    "remove_class": lambda store, gear: store.remove_class(gear),
}


def _steps(store: StateStore, change: str, gear: int) -> list[str]:
    """The statements a change runs, found by running it once on a copy of the state."""
    copy = StateStore(store.folder.parent / "dry-run", busy_timeout=0.5)
    try:
        copy_gear = copy.add_class("gear")
        copy.add_examples(copy_gear, _unit(0)[np.newaxis], [None])
        counter = FailingConnection(copy._db._writer, None, RuntimeError())
        copy._db._writer = counter
        CHANGES[change](copy, copy_gear)
        copy._db._writer = counter.real
        return counter.calls
    finally:
        copy.close()


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("error", [sqlite3.OperationalError("disk I/O error"), KeyboardInterrupt()], ids=["sqlite", "interrupt"])
def test_a_failure_at_any_step_of_a_change_releases_every_lock_and_stores_nothing(store, change, error):
    gear = store.add_class("gear")
    store.add_examples(gear, _unit(0)[np.newaxis], [None])
    steps = _steps(store, change, gear)
    assert steps[0] == "BEGIN" and steps[-1] == "COMMIT" and len(steps) >= 5
    for step in range(1, len(steps) + 1):
        before = _contents(store)
        real = store._db._writer
        store._db._writer = FailingConnection(real, step, error)
        with pytest.raises((StorageError, KeyboardInterrupt)):
            CHANGES[change](store, gear)
        store._db._writer = real
        assert _lock_is_free(store), f"the write lock leaked after a failure at step {step} ({steps[step - 1]})"
        assert not real.in_transaction, f"a transaction stayed open after a failure at step {step}"
        assert _contents(store) == before, f"half of the change was stored after a failure at step {step}"
    CHANGES[change](store, gear)  # and the next change works
    assert _contents(store)[0] == before[0] + 1


_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
print("released", flush=True)
"""


def hold_write_lock(database: Path) -> subprocess.Popen:
    """A child process holding the database's write lock until a line arrives on its stdin."""
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def release(child: subprocess.Popen) -> None:
    child.stdin.write("\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "released"
    child.wait(10)


def test_while_another_process_writes_reads_answer_and_a_change_gives_up_then_works(store):
    gear = store.add_class("gear")
    child = hold_write_lock(store.folder / DATABASE_NAME)
    try:
        assert [c.name for c in store.snapshot().classes] == ["gear"]  # reads do not wait
        with pytest.raises(BusyError) as busy:
            store.add_class("washer")
        assert str(busy.value) == BUSY_MESSAGE and isinstance(busy.value, TimeoutError)
        assert _lock_is_free(store)
        with pytest.raises(BusyError):
            store.add_examples(gear, _unit(1)[np.newaxis], [None])
    finally:
        release(child)
    assert store.add_class("washer") > gear  # works again the moment the lock is free


def test_close_ends_a_change_waiting_for_another_process(tmp_path):
    store = StateStore(tmp_path / "state", busy_timeout=3600)
    child = hold_write_lock(store.folder / DATABASE_NAME)
    failures: list[BaseException] = []

    def change() -> None:
        try:
            store.add_class("gear")
        except BaseException as error:  # noqa: BLE001 - checked below
            failures.append(error)

    waiting = threading.Thread(target=change, daemon=True)
    waiting.start()
    time.sleep(0.3)
    closing = threading.Thread(target=store.close, daemon=True)
    closing.start()
    waiting.join(20)  # (the busy timeout is an hour: only close() can end the wait)
    closing.join(20)
    ended = not waiting.is_alive() and not closing.is_alive()
    release(child)
    assert ended and isinstance(failures[0], BusyError)


def test_names_are_unique_across_stores_and_deleted_rows_are_not_found(tmp_path):
    one, two = StateStore(tmp_path / "state"), StateStore(tmp_path / "state")
    try:
        gear = one.add_class("gear")
        with pytest.raises(ConflictError, match="'gear' exists already"):
            two.add_class("gear")
        washer = two.add_class("washer")
        with pytest.raises(ConflictError, match="'washer'"):
            one.rename_class(gear, "washer")
        [example] = one.add_examples(gear, _unit(1)[np.newaxis], [None])
        two.remove_class(gear)
        for attempt in (lambda: one.add_examples(gear, _unit(2)[np.newaxis], [None]), lambda: one.rename_class(gear, "cog"),
                        lambda: one.remove_class(gear), lambda: one.remove_example(example.id), lambda: one.thumbnail(example.id),
                        lambda: one.examples(gear)):
            with pytest.raises(NotFoundError):
                attempt()
        assert [c.name for c in one.snapshot().classes] == ["washer"] and washer
    finally:
        one.close()
        two.close()


def test_every_change_bumps_the_revision_and_a_snapshot_reads_only_what_is_new(store):
    assert store.snapshot(store.revision()) is None
    gear = store.add_class("gear")
    first = store.add_examples(gear, np.stack([_unit(1), _unit(2)]), [None, None])
    revision = store.revision()
    store.add_examples(gear, _unit(3)[np.newaxis], [None])
    snap = store.snapshot(revision, after=first[-1].id)
    assert snap.revision == revision + 1 and snap.example_count == 3
    assert [e.id for e in snap.examples] == [first[-1].id + 1] and snap.examples[0].embedding is not None
    listed = store.snapshot(revision, after=first[-1].id, every_example=True)
    assert [e.embedding is None for e in listed.examples] == [True, True, False]
    tuned = listed.tuned_revision
    assert store.snapshot(None, tuned=tuned).finetuned is None  # unchanged rows are not read again
    store.set_finetuned_rows({gear: _unit(4)})
    assert set(store.snapshot(None, tuned=tuned).finetuned) == {gear}
    store.add_examples(gear, _unit(5)[np.newaxis], [None])  # an example change drops the tuned rows
    assert store.snapshot(None).finetuned == {}


def test_finetuned_rows_are_refused_when_the_examples_changed_meanwhile(store):
    gear = store.add_class("gear")
    store.add_examples(gear, _unit(1)[np.newaxis], [None])
    basis = store.snapshot().examples_revision
    store.rename_class(gear, "cog")  # not an example change
    store.set_finetuned_rows({gear: _unit(2)}, basis)
    store.add_examples(gear, _unit(3)[np.newaxis], [None])
    with pytest.raises(ConflictError, match="changed while fine-tuning"):
        store.set_finetuned_rows({gear: _unit(4)}, basis)
    assert store.finetuned_rows() == {}


def test_a_deleted_or_replaced_database_is_never_acknowledged(tmp_path):
    for how in ("deleted", "replaced"):
        store = StateStore(tmp_path / how)
        try:
            store.add_class("gear")
            database = store.folder / DATABASE_NAME
            database.unlink()
            if how == "replaced":
                StateStore(store.folder).close()
            with pytest.raises(StorageError, match=f"{DATABASE_NAME} was deleted or replaced.*restart"):
                store.add_class("washer")
            assert _lock_is_free(store)
        finally:
            store.close()
        assert "washer" not in [c.name for c in StateStore(store.folder).snapshot().classes]


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_read_only_creates_nothing_changes_nothing_and_follows_a_writer(tmp_path):
    missing = tmp_path / "misspelt"
    with pytest.raises(StateError, match=f"no state folder {missing}"):
        StateStore(missing, read_only=True)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StateError, match="holds no teaching state"):
        StateStore(empty, read_only=True)
    assert list(empty.iterdir()) == []
    writer = StateStore(tmp_path / "state")
    writer.add_class("gear")
    writer.close()
    before = _files(tmp_path / "state")
    reader = StateStore(tmp_path / "state", read_only=True)
    try:
        assert [c.name for c in reader.snapshot().classes] == ["gear"]
        with pytest.raises(StateError, match="read-only"):
            reader.add_class("washer")
        assert _files(tmp_path / "state") == before
        writer = StateStore(tmp_path / "state")
        writer.add_class("washer")
        assert [c.name for c in reader.snapshot().classes] == ["gear", "washer"]
        writer.close()
        writer = StateStore(tmp_path / "state")
        writer.add_class("nut")
        writer.close()
        assert [c.name for c in reader.snapshot().classes] == ["gear", "washer", "nut"]
    finally:
        reader.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions (the read-only mount test covers root)")
def test_an_unwritable_state_folder_is_refused_at_start(tmp_path):
    folder = tmp_path / "state"
    StateStore(folder).close()
    folder.chmod(0o555)
    try:
        with pytest.raises(StateError, match=f"cannot write to state folder {folder}"):
            StateStore(folder)
        StateStore(folder, read_only=True).close()
    finally:
        folder.chmod(0o755)
