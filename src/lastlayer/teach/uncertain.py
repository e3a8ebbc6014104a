"""Frames the model was unsure about, kept for teaching: unknown or nearly tied, deduplicated, bounded in count and memory.

The frames that would teach a model most are those it cannot place: of none of its classes (its
unknown rule said so) or between two of them (the two best probabilities within :data:`TIE_MARGIN`).
While a session runs, the live loop offers every prediction to an :class:`UncertainQueue`
(``predictions(..., uncertain=queue)``); the queue keeps a thumbnail and the frame's embedding of
each such frame, so that teaching it later needs no second embedding
(:meth:`lastlayer.teach.session.TeachingSession.teach_uncertain`).

A camera sees the same thing for many frames: a frame whose embedding is within
:data:`DUPLICATE_SIMILARITY` (cosine) of a kept one counts as another sighting of it instead of a new
entry. The queue holds at most ``capacity`` frames and ``max_bytes`` of thumbnails and embeddings;
the frame seen longest ago leaves first. Thread-safe: the live loop offers while a web request or a
terminal key lists, teaches or dismisses.

Typical use (a terminal or a page)::

    queue = session.uncertain                      # or UncertainQueue() for any predictor
    loop = LiveLoop(session, source, uncertain=queue).start()
    for item in queue.items():                     # newest first
        print(item.id, item.describe())
    session.teach_uncertain(item.id, "gear")       # stored with the frame's own embedding
    queue.dismiss(other.id)
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lastlayer.errors import NotFoundError
from lastlayer.runtime.prediction import UNKNOWN, Prediction

DEFAULT_CAPACITY = 24  # frames kept
DEFAULT_MAX_BYTES = 1 << 20  # thumbnails + embeddings kept (1 MiB); a 96 px thumbnail is 2-6 KB, an embedding 4 KB
DUPLICATE_SIMILARITY = 0.95  # cosine of two frames' embeddings above which they show the same thing
TIE_MARGIN = 0.15  # the two best probabilities closer than this: nearly tied
TIED = "tied"
FINGERPRINT_SIZE = 16  # without a model embedding, frames are told apart by a 16 x 16 grey thumbnail


@dataclass
class UncertainFrame:
    """One kept frame: why it was kept, what the model said, its thumbnail and its embedding.

    Attributes:
        id: its number in the queue (never reused).
        reason: ``"unknown"`` (the rule said none of the classes) or ``"tied"`` (two classes nearly tied).
        frame: the frame's index in its source (``None`` for a single picture).
        closest, runner_up: the best two classes and their probabilities (``None`` when there are fewer).
        similarity: what the unknown rule compared with its threshold (``None`` without a rule).
        seen: how many frames showed the same thing (1 + the duplicates folded into it).
        created, last_seen: ``time.time()`` of the first and the latest sighting.
        thumbnail: a small JPEG of the first sighting.
        embedding: the frame's unit embedding (float32), or ``None`` when the predictor gave none (such a frame
            cannot be taught from the queue; duplicates of it are found by a small grey thumbnail instead).
        revision: the teaching state's revision the prediction was made at (``None`` when not from a state).
    """

    id: int
    reason: str
    frame: int | None
    closest: tuple[str, float] | None
    runner_up: tuple[str, float] | None
    similarity: float | None
    thumbnail: bytes = field(repr=False)
    embedding: np.ndarray | None = field(repr=False)
    revision: int | None = None
    seen: int = 1
    created: float = field(default_factory=time.time)
    last_seen: float = 0.0
    _key: np.ndarray | None = field(default=None, repr=False)  # the unit vector duplicates are found by

    @property
    def nbytes(self) -> int:
        """The memory it holds: thumbnail, embedding and the vector duplicates are found by."""
        return len(self.thumbnail) + sum(int(a.nbytes) for a in (self.embedding, self._key) if a is not None)

    def describe(self) -> str:
        """``unknown (closest: roses 0.64)`` or ``tied: roses 0.48 / tulips 0.41``."""
        if self.closest is None:
            return self.reason
        if self.reason == UNKNOWN:
            return f"{UNKNOWN} (closest: {self.closest[0]} {self.closest[1]:.2f})"
        second = f" / {self.runner_up[0]} {self.runner_up[1]:.2f}" if self.runner_up else ""
        return f"{TIED}: {self.closest[0]} {self.closest[1]:.2f}{second}"

    def to_dict(self) -> dict[str, Any]:
        pair = lambda value: None if value is None else {"label": value[0], "score": round(float(value[1]), 6)}  # noqa: E731
        return {"id": self.id, "reason": self.reason, "frame": self.frame, "closest": pair(self.closest),
                "runner_up": pair(self.runner_up), "similarity": None if self.similarity is None else round(self.similarity, 6),
                "seen": self.seen, "created": round(self.created, 3), "last_seen": round(self.last_seen, 3),
                "revision": self.revision, "teachable": self.embedding is not None, "text": self.describe()}


def uncertainty(prediction: Prediction, margin: float = TIE_MARGIN) -> str | None:
    """Why ``prediction`` is uncertain: ``"unknown"``, ``"tied"`` (best two within ``margin``), or ``None``."""
    if prediction.unknown:
        return UNKNOWN
    if len(prediction.classes) >= 2 and prediction.classes[0][1] - prediction.classes[1][1] < margin:
        return TIED
    return None


def fingerprint(pixels: np.ndarray) -> np.ndarray:
    """A unit vector of what a frame looks like (16 x 16 grey, centred): duplicates are found by it without a model."""
    from PIL import Image

    grey = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("L").resize((FINGERPRINT_SIZE, FINGERPRINT_SIZE),
                                                                                   Image.BILINEAR)
    values = np.asarray(grey, dtype=np.float32).reshape(-1)
    values -= values.mean()
    norm = float(np.linalg.norm(values))
    return values / norm if norm > 0 else values


class UncertainQueue:
    """The uncertain frames of a live session, newest first (see the module docstring).

    Args:
        capacity: the most frames kept.
        max_bytes: the most memory their thumbnails and embeddings take.
        duplicate: cosine similarity of embeddings above which a frame is another sighting of a kept one.
        margin: the two best probabilities closer than this make a frame "tied" (0: only unknown frames).
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, max_bytes: int = DEFAULT_MAX_BYTES,
                 duplicate: float = DUPLICATE_SIMILARITY, margin: float = TIE_MARGIN) -> None:
        if capacity < 1 or max_bytes < 1 or not -1 <= duplicate <= 1 or margin < 0:
            raise ValueError("an uncertain queue needs capacity >= 1, max_bytes >= 1, -1 <= duplicate <= 1 and margin >= 0")
        self.capacity, self.max_bytes, self.duplicate, self.margin = int(capacity), int(max_bytes), float(duplicate), float(margin)
        self._items: OrderedDict[int, UncertainFrame] = OrderedDict()  # least recently seen first
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._bytes = 0
        self.version = 0  # bumped when a frame joins or leaves (not when a duplicate is seen)
        self.offered = self.duplicates = self.evicted = 0

    # ----------------------------------------------------------------- filling
    def offer(self, prediction: Prediction, pixels: np.ndarray | None = None, *, frame: int | None = None) -> UncertainFrame | None:
        """Keep the picture if ``prediction`` is uncertain; returns the new entry (``None``: certain, or a duplicate).

        ``prediction.embedding`` is what teaching it will store; ``pixels`` (the picture) give the
        thumbnail. A live state can be offered as ``offer_state(state)``.
        """
        reason = uncertainty(prediction, self.margin)
        if reason is None:
            return None
        embedding = None if prediction.embedding is None else _unit(np.asarray(prediction.embedding, np.float32).reshape(-1))
        key = embedding if embedding is not None else (fingerprint(pixels) if pixels is not None else None)
        now = time.time()
        with self._lock:
            self.offered += 1
            if key is not None:
                seen = self._duplicate_of(key)
                if seen is not None:
                    seen.seen += 1
                    seen.last_seen = now
                    self._items.move_to_end(seen.id)
                    self.duplicates += 1
                    return None
        thumb = _thumbnail(pixels) if pixels is not None else b""
        second = prediction.classes[1] if len(prediction.classes) > 1 else None
        item = UncertainFrame(0, reason, frame, prediction.top, second, prediction.similarity, thumb, embedding,
                              prediction.revision, created=now, last_seen=now,
                              _key=key if embedding is None else None)
        if item.nbytes > self.max_bytes:
            return None
        with self._lock:
            if key is not None and self._duplicate_of(key) is not None:  # another thread kept the same sight meanwhile
                return None
            item.id = next(self._ids)
            while self._items and (len(self._items) >= self.capacity or self._bytes + item.nbytes > self.max_bytes):
                self._drop(next(iter(self._items)))
                self.evicted += 1
            self._items[item.id] = item
            self._bytes += item.nbytes
            self.version += 1
        return item

    def offer_state(self, state: Any) -> UncertainFrame | None:
        """:meth:`offer` a live loop's state (its frame's own prediction, not the smoothed one)."""
        return self.offer(state.prediction, state.frame.pixels, frame=state.frame.index)

    def _duplicate_of(self, key: np.ndarray) -> UncertainFrame | None:
        best, best_similarity = None, self.duplicate
        for item in self._items.values():
            other = item.embedding if item.embedding is not None else item._key
            if other is None or other.shape != key.shape:
                continue
            similarity = float(np.dot(other, key))
            if similarity >= best_similarity:
                best, best_similarity = item, similarity
        return best

    def _drop(self, item_id: int) -> UncertainFrame:
        item = self._items.pop(item_id)
        self._bytes -= item.nbytes
        self.version += 1
        return item

    # ----------------------------------------------------------------- reading and acting
    def items(self) -> list[UncertainFrame]:
        """The kept frames, most recently seen first."""
        with self._lock:
            return list(reversed(self._items.values()))

    def get(self, item_id: int) -> UncertainFrame:
        """One kept frame (:class:`~lastlayer.errors.NotFoundError` when it was taught, dismissed or pushed out)."""
        with self._lock:
            return self._kept(item_id)

    def _kept(self, item_id: int) -> UncertainFrame:
        found = self._items.get(int(item_id))
        if found is None:
            raise NotFoundError(f"there is no uncertain frame {item_id} (taught, dismissed, or pushed out by newer ones)",
                                subject="uncertain")
        return found

    def thumbnail(self, item_id: int) -> bytes:
        return self.get(item_id).thumbnail

    def dismiss(self, item_id: int) -> UncertainFrame:
        """Forget one kept frame; returns it."""
        with self._lock:
            return self._drop(self._kept(item_id).id)

    def clear(self) -> None:
        with self._lock:
            for item_id in list(self._items):
                self._drop(item_id)

    @property
    def nbytes(self) -> int:
        """The memory the kept frames take (thumbnails, embeddings, duplicate keys)."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def to_dict(self) -> dict[str, Any]:
        """What a page lists: the frames (newest first) and the queue's bounds."""
        with self._lock:
            items = list(reversed(self._items.values()))
            return {"items": [item.to_dict() for item in items], "version": self.version, "capacity": self.capacity,
                    "bytes": self._bytes, "max_bytes": self.max_bytes}


class UncertainRecorder:
    """Saves each frame an :class:`UncertainQueue` newly keeps, whole, as ``DIR/<reason>/frame_NNNNNN.jpg`` (``watch
    --record-uncertain``): a folder to sort into classes and teach later. Repeats of a kept frame are not saved again;
    each file appears whole or not at all."""

    def __init__(self, folder: str | os.PathLike[str], queue: UncertainQueue | None = None) -> None:
        self.folder = Path(folder)
        self.queue = queue or UncertainQueue()
        self.saved = 0

    def offer(self, state: Any) -> dict[str, Any] | None:
        """Offer a live state's frame; returns what was saved (``frame``, ``reason``, ``path``, ...) or ``None``."""
        from lastlayer.files.outputs import atomic_write_bytes, ensure_output_dir
        from lastlayer.images.decode import encode_jpeg

        item = self.queue.offer_state(state)
        if item is None:
            return None
        path = ensure_output_dir(self.folder / item.reason) / f"frame_{state.frame.index:06d}.jpg"
        atomic_write_bytes(path, encode_jpeg(state.frame.pixels, quality=92))
        self.saved += 1
        return {**item.to_dict(), "path": str(path)}


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _thumbnail(pixels: np.ndarray) -> bytes:
    from lastlayer.teach.embedder import thumbnail

    return thumbnail(pixels) or b""
