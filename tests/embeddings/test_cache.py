"""The shared SQLite embedding cache: concurrent runs, interrupted runs, damaged and unwritable caches."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jobs.conftest import link_dataset
from lastlayer.embeddings.cache import DATABASE_NAME, CacheWarning, EmbeddingCache, embed_dataset
from lastlayer.files.datasets import load_dataset
from lastlayer.runtime import Interpreter

from conftest import EXTRACTOR

ROOT = Path(__file__).resolve().parents[1]

_EMBED = """
import sys
import lastlayer.embeddings.cache as embeddings
from lastlayer.files.datasets import load_dataset
from lastlayer.runtime import Interpreter
embeddings.COMMIT_EVERY = int(sys.argv[3])
result = embeddings.embed_dataset(Interpreter(sys.argv[1]), load_dataset(sys.argv[2]), progress=False)
print(len(result.y), result.cached)
"""


def _rows(cache_folder: Path) -> int:
    path = cache_folder / "embeddings" / DATABASE_NAME
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def _embedder(model: Path, data: Path, commit_every: int = 64) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-c", _EMBED, str(model), str(data), str(commit_every)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def flowers(datasets_dir: Path) -> Path:
    return datasets_dir / "flowers"


def test_a_second_run_reads_every_embedding_from_the_cache(model_file, flowers, tmp_path):
    data = link_dataset(flowers, tmp_path / "d", {"daisy": 3, "roses": 3})
    interpreter = Interpreter(model_file(EXTRACTOR))
    first = embed_dataset(interpreter, load_dataset(data), progress=False)
    second = embed_dataset(interpreter, load_dataset(data), progress=False)
    assert (first.cached, second.cached) == (0, 6)
    assert (first.X == second.X).all()
    assert len(EmbeddingCache(interpreter.cache_key)) == 6
    renormalised = Interpreter(model_file(EXTRACTOR), input_mean=0.0, input_std=1.0)  # fed differently: not the same embeddings
    third = embed_dataset(renormalised, load_dataset(data), progress=False)
    assert third.cached == 0 and not np.allclose(third.X, first.X)


def test_two_processes_embedding_different_datasets_both_keep_theirs(model_file, flowers, tmp_path):
    one = link_dataset(flowers, tmp_path / "one", {"daisy": 12, "roses": 12})
    two = link_dataset(flowers, tmp_path / "two", {"tulips": 12, "sunflowers": 12})
    runs = [_embedder(model_file(EXTRACTOR), data, commit_every=5) for data in (one, two)]
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        assert out.split() == ["24", "0"]
    assert _rows(Path(os.environ["LASTLAYER_CACHE"])) == 48
    both = load_dataset(link_dataset(flowers, tmp_path / "both", {"daisy": 12, "tulips": 12}))
    assert embed_dataset(Interpreter(model_file(EXTRACTOR)), both, progress=False).cached == 24


def test_an_extraction_killed_midway_keeps_its_first_batches(model_file, flowers, tmp_path):
    data = link_dataset(flowers, tmp_path / "d", {"daisy": 80, "roses": 80})
    cache = Path(os.environ["LASTLAYER_CACHE"])
    run = _embedder(model_file(EXTRACTOR), data, commit_every=8)
    deadline = time.monotonic() + 120
    while _rows(cache) < 16 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    kept = _rows(cache)
    assert run.returncode == -signal.SIGKILL and 16 <= kept < 160
    again = embed_dataset(Interpreter(model_file(EXTRACTOR)), load_dataset(data), progress=False)
    assert again.cached == kept and len(again.y) == 160


def test_a_damaged_cache_is_reported_once_and_rebuilt(model_file, flowers, tmp_path):
    data = load_dataset(link_dataset(flowers, tmp_path / "d", {"daisy": 2, "roses": 2}))
    folder = Path(os.environ["LASTLAYER_CACHE"]) / "embeddings"
    folder.mkdir(parents=True)
    (folder / DATABASE_NAME).write_bytes(b"this is not a database " * 100)
    interpreter = Interpreter(model_file(EXTRACTOR))
    with pytest.warns(CacheWarning, match=f"{DATABASE_NAME} is damaged") as caught:
        first = embed_dataset(interpreter, data, progress=False)
    assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1 and first.cached == 0
    assert embed_dataset(interpreter, data, progress=False).cached == 4


def test_an_unusable_cache_folder_is_a_warning_not_a_failure(model_file, flowers, tmp_path, monkeypatch):
    data = load_dataset(link_dataset(flowers, tmp_path / "d", {"daisy": 2, "roses": 2}))
    (tmp_path / "a file").write_text("not a folder")
    monkeypatch.setenv("LASTLAYER_CACHE", str(tmp_path / "a file" / "cache"))
    with pytest.warns(CacheWarning, match="embedding cache not used"):
        embedded = embed_dataset(Interpreter(model_file(EXTRACTOR)), data, progress=False)
    assert len(embedded.y) == 4 and embedded.cached == 0


def test_without_the_cache_no_database_is_opened_and_every_file_is_read(model_file, flowers, tmp_path, monkeypatch):
    from lastlayer.embeddings import digests

    data = load_dataset(link_dataset(flowers, tmp_path / "d", {"daisy": 2, "roses": 2}))
    monkeypatch.setenv("LASTLAYER_CACHE", str(tmp_path / "cache"))
    read: list[str] = []
    hash_file = digests.sha256_file
    monkeypatch.setattr(digests, "sha256_file", lambda path: read.append(str(path)) or hash_file(path))
    interpreter = Interpreter(model_file(EXTRACTOR))
    for _ in range(2):
        embedded = embed_dataset(interpreter, data, progress=False, use_cache=False)
        assert embedded.cached == 0 and len(embedded.y) == 4
    assert len(read) == 8 and not (tmp_path / "cache").exists()
