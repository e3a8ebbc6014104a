"""Helpers shared by the benchmark scripts: where the shared data is, and a timer."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LASTLAYER_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("LASTLAYER_MODELS", str(SHARED / "models"))


def dataset_images(name: str, limit: int | None = None) -> list[Path]:
    """Image files of a shared dataset, sorted, at most ``limit``; exits with a message if absent."""
    folder = SHARED / "datasets" / name
    if not folder.is_dir():
        sys.exit(f"benchmark needs the shared dataset {folder}; set LASTLAYER_SHARED")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
    return paths[:limit] if limit else paths


@contextmanager
def timed(results: dict[str, float], key: str) -> Iterator[None]:
    """Store the wall time of the block in ``results[key]`` (seconds)."""
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start
