"""Embeddings of a dataset, with a cache keyed by file content and model, so a second run is instant.

The cache is one ``.npz`` per model (``<cache>/embeddings/<model sha256>.npz``) mapping each image's
SHA-256 to its embedding; it is rewritten atomically after new images were embedded.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lastlayer.data import Dataset, DatasetWarning
from lastlayer.errors import DatasetError, ImageError
from lastlayer.files import atomic_write_bytes
from lastlayer.runtime import Interpreter, extract_embeddings
from lastlayer.zoo import cache_dir

# Bump when image decoding or resizing changes, so stale embeddings are not reused.
PREPROCESSING_VERSION = "1"


class EmbeddingCache:
    """Embeddings of one model, by image content hash."""

    def __init__(self, model_bytes: bytes, folder: Path | None = None) -> None:
        key = hashlib.sha256(model_bytes + PREPROCESSING_VERSION.encode()).hexdigest()
        self.path = (folder or cache_dir() / "embeddings") / f"{key}.npz"
        self._vectors: dict[str, np.ndarray] = {}
        self._dirty = False
        if self.path.is_file():
            try:
                with np.load(self.path) as stored:
                    self._vectors = dict(zip(stored["keys"].tolist(), stored["vectors"]))
            except (OSError, ValueError, KeyError):
                self._vectors = {}  # a damaged cache is rebuilt, never fatal

    def get(self, digest: str) -> np.ndarray | None:
        return self._vectors.get(digest)

    def put(self, digest: str, vector: np.ndarray) -> None:
        self._vectors[digest] = np.asarray(vector, dtype=np.float32)
        self._dirty = True

    def save(self) -> None:
        """Write the cache if it changed; a cache that cannot be written is only a warning."""
        if not self._dirty:
            return
        buffer = io.BytesIO()
        keys = list(self._vectors)
        np.savez(buffer, keys=np.array(keys), vectors=np.stack([self._vectors[k] for k in keys]))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, buffer.getvalue())
            self._dirty = False
        except OSError as exc:
            warnings.warn(f"embedding cache not saved ({exc}); the next run will embed again", DatasetWarning, stacklevel=2)


@dataclass
class EmbeddedDataset:
    """Embeddings ``X`` and labels ``y`` of the readable images of a dataset."""

    dataset: Dataset
    X: np.ndarray
    y: np.ndarray
    cached: int
    unreadable: list[str]


def embed_dataset(
    interpreter: Interpreter,
    dataset: Dataset,
    *,
    use_cache: bool = True,
    strict: bool = False,
    progress: bool = True,
) -> EmbeddedDataset:
    """Embed every image of ``dataset`` (cached ones are not run again).

    Unreadable images are left out with a warning naming each file; ``strict=True`` makes the
    first one an error instead.
    """
    cache = EmbeddingCache(interpreter.model_bytes) if use_cache else None
    digests = dataset.file_digests()
    X = np.full((len(dataset), interpreter.output_size), np.nan, dtype=np.float32)
    todo = []
    for row, digest in enumerate(digests):
        hit = cache.get(digest) if cache else None
        if hit is not None and hit.shape == (X.shape[1],):
            X[row] = hit
        else:
            todo.append(row)
    unreadable: list[str] = []

    def report(path: Path, error: ImageError) -> None:
        if strict:
            raise error
        unreadable.append(str(path))
        warnings.warn(f"skipped unreadable image: {error}", DatasetWarning, stacklevel=2)

    if todo:
        fresh = extract_embeddings(interpreter, [dataset.paths[r] for r in todo], progress=progress, on_error=report)
        for row, vector in zip(todo, fresh):
            X[row] = vector
            if cache is not None and not np.isnan(vector).any():
                cache.put(digests[row], vector)
        if cache is not None:
            cache.save()
    keep = ~np.isnan(X).any(axis=1)
    kept = dataset.subset(np.flatnonzero(keep))
    missing = set(range(len(dataset.classes))) - set(kept.labels.tolist())
    if missing:
        names = ", ".join(dataset.classes[i] for i in sorted(missing))
        raise DatasetError(f"no readable image left in class(es) {names}; replace the unreadable files")
    return EmbeddedDataset(kept, X[keep], kept.labels, len(dataset) - len(todo), unreadable)
