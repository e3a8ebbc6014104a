"""File digests: the content hash keys the embedding cache; an unchanged stat lets a warm run skip reading the file."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from jobs.conftest import link_dataset
from lastlayer.embeddings import digests
from lastlayer.embeddings.cache import embed_dataset
from lastlayer.embeddings.database import DATABASE_NAME, CacheDatabase, CacheWarning
from lastlayer.embeddings.digests import file_digests
from lastlayer.files.datasets import load_dataset
from lastlayer.runtime import Interpreter

from conftest import EXTRACTOR

HOUR_NS = 3600 * 10**9


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def _write(path: Path, content: bytes, age_hours: float = 1.0) -> Path:
    """Write ``content`` with a modification time ``age_hours`` in the past (out of the racy window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    stamp = time.time_ns() - int(age_hours * HOUR_NS)
    os.utime(path, ns=(stamp, stamp))
    return path


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _digests(paths: list[Path], store: Path | None) -> tuple[list[str], list[str]]:
    """The digests of ``paths`` through a database in ``store`` (a fresh connection, as a new run makes), and what was read."""
    hashed: list[str] = []
    if store is None:
        return file_digests(paths, hashed=hashed), hashed
    with CacheDatabase(store) as database:
        return file_digests(paths, database, hashed=hashed), hashed


def test_unchanged_files_are_not_read_again(tmp_path, store):
    files = [_write(tmp_path / f"{i}.jpg", bytes([i]) * (100 + i)) for i in range(20)]
    first, hashed = _digests(files, store)
    assert first == [_sha(p.read_bytes()) for p in files] and len(hashed) == 20
    second, hashed = _digests(files, store)
    assert second == first and hashed == []
    with sqlite3.connect(store / DATABASE_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 20


def test_a_changed_file_of_the_same_size_with_a_new_mtime_is_hashed_again(tmp_path, store):
    path = _write(tmp_path / "a.jpg", b"first content", age_hours=2)
    (old,), _ = _digests([path], store)
    _write(path, b"other content", age_hours=1)  # same size, newer mtime
    (new,), hashed = _digests([path], store)
    assert hashed == [str(path)] and new == _sha(b"other content") != old


def test_a_file_replaced_with_the_same_mtime_but_another_size_is_hashed_again(tmp_path, store):
    path = _write(tmp_path / "a.jpg", b"short")
    mtime = path.stat().st_mtime_ns
    (old,), _ = _digests([path], store)
    replacement = _write(tmp_path / "b.jpg", b"a longer replacement")
    os.utime(replacement, ns=(mtime, mtime))
    replacement.replace(path)
    assert path.stat().st_mtime_ns == mtime
    (new,), hashed = _digests([path], store)
    assert hashed == [str(path)] and new == _sha(b"a longer replacement") != old


def test_a_file_rewritten_in_place_with_size_and_mtime_restored_is_hashed_again(tmp_path, store):
    path = _write(tmp_path / "a.jpg", b"0123456789")
    mtime = path.stat().st_mtime_ns
    _digests([path], store)
    path.write_bytes(b"9876543210")  # same size; the mtime is set back, the change time is not
    os.utime(path, ns=(mtime, mtime))
    (new,), hashed = _digests([path], store)
    assert hashed == [str(path)] and new == _sha(b"9876543210")


def test_a_file_modified_just_before_hashing_is_not_trusted_next_time(tmp_path, store):
    path = tmp_path / "fresh.jpg"
    path.write_bytes(b"just written")  # mtime now: a second write in the same clock tick could keep it
    _digests([path], store)
    (again,), hashed = _digests([path], store)
    assert hashed == [str(path)] and again == _sha(b"just written")


def test_without_a_database_every_file_is_hashed_every_time(tmp_path):
    path = _write(tmp_path / "a.jpg", b"content")
    for _ in range(2):
        (digest,), hashed = _digests([path], None)
        assert digest == _sha(b"content") and hashed == [str(path)]


def test_a_database_that_cannot_be_used_is_one_warning_and_every_file_is_hashed(tmp_path):
    path = _write(tmp_path / "a.jpg", b"content")
    (tmp_path / "a file").write_text("not a folder")
    for _ in range(2):
        with pytest.warns(CacheWarning, match="embedding cache not used"):
            (digest,), hashed = _digests([path], tmp_path / "a file" / "store")
        assert digest == _sha(b"content") and hashed == [str(path)]


def test_a_damaged_database_is_rebuilt_and_then_remembers(tmp_path, store):
    path = _write(tmp_path / "a.jpg", b"content")
    store.mkdir()
    (store / DATABASE_NAME).write_bytes(b"this is not a database " * 100)
    with pytest.warns(CacheWarning, match="is damaged"):
        (digest,), hashed = _digests([path], store)
    assert digest == _sha(b"content") and hashed == [str(path)]
    (again,), hashed = _digests([path], store)
    assert again == digest and hashed == []


def test_large_files_are_hashed_on_a_pool_in_order(tmp_path, store, monkeypatch):
    monkeypatch.setattr(digests, "PARALLEL_BYTES", 1000)
    monkeypatch.setattr("lastlayer.runtime.interpreter.usable_cores", lambda: 2)
    files = [_write(tmp_path / f"{i}.jpg", bytes([i]) * (2000 + i)) for i in range(8)]
    first, hashed = _digests(files, store)
    assert first == [_sha(p.read_bytes()) for p in files] and hashed == [str(p) for p in files]


def test_a_missing_file_raises(tmp_path, store):
    with pytest.raises(FileNotFoundError):
        _digests([tmp_path / "gone.jpg"], store)


def _age(folder: Path) -> None:
    stamp = time.time_ns() - HOUR_NS
    for path in folder.rglob("*"):
        os.utime(path, ns=(stamp, stamp))


def test_a_warm_run_reads_no_file_and_a_touched_file_still_hits_the_embedding_cache(model_file, datasets_dir, tmp_path,
                                                                                     monkeypatch):
    data = tmp_path / "d"
    for name, count in {"daisy": 3, "roses": 3}.items():
        (data / name).mkdir(parents=True)
        for source in sorted((datasets_dir / "flowers" / name).glob("*.jpg"))[:count]:
            (data / name / source.name).write_bytes(source.read_bytes())  # copies: their mtimes are ours to set
    _age(data)
    read: list[str] = []
    hash_file = digests.sha256_file
    monkeypatch.setattr(digests, "sha256_file", lambda path: read.append(str(path)) or hash_file(path))
    interpreter = Interpreter(model_file(EXTRACTOR))
    # First run: the cache database is created, then every file hashed and remembered.
    first = embed_dataset(interpreter, load_dataset(data), progress=False)
    assert first.cached == 0 and len(read) == 6
    read.clear()
    warm = embed_dataset(interpreter, load_dataset(data), progress=False)
    assert warm.cached == 6 and read == []
    touched = sorted(data.rglob("*.jpg"))[0]
    os.utime(touched)  # new mtime, same content
    again = embed_dataset(interpreter, load_dataset(data), progress=False)
    assert read == [str(touched)] and again.cached == 6
    assert (again.X == first.X).all()


def test_symlinked_files_are_stamped_by_their_target(model_file, datasets_dir, tmp_path):
    data = link_dataset(datasets_dir / "flowers", tmp_path / "d", {"daisy": 2})
    store = tmp_path / "store"
    store.mkdir()
    paths = load_dataset(data).paths
    first, _ = _digests(paths, store)
    _, hashed = _digests(paths, store)
    assert hashed == [] and first == [_sha(p.read_bytes()) for p in paths]
