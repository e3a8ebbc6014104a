"""Interpreters for images that arrive one at a time (a camera, a video), several in flight at once.

A stream has no batch to split, but frames can still overlap: while one thread invokes on frame
``n``, another decodes, resizes and invokes on frame ``n + 1``. On the CPU, :class:`Lanes` runs on
single-threaded clones side by side, as many as :func:`~lastlayer.runtime.batch.plan` gives a batch
(one per core of the thread budget), so each frame's decoding and inference stay on one core and no
XNNPACK thread waits for a core taken by decoding. They are the clones a batch uses
(:mod:`lastlayer.runtime.clones`), each behind its own lock. An Edge TPU model (one device) or a
budget of one thread keeps the one interpreter, shared under the owner's lock.
"""

from __future__ import annotations

import threading
from typing import ContextManager

import numpy as np

from lastlayer.runtime.batch import plan
from lastlayer.runtime.clones import Member, pool_of
from lastlayer.runtime.interpreter import Interpreter


class Lanes:
    """Interpreters that may run at the same time from different threads, each behind its own lock.

    Args:
        interpreter: the owner's interpreter; its pool's single-threaded clones are the lanes when
            the plan runs several.
        lock: the lock the owner already holds around ``interpreter``; used when it is the only lane.

    The clones are made on first use (``len`` or :meth:`run`), so an owner that never streams
    frames never pays for them.
    """

    def __init__(self, interpreter: Interpreter, lock: ContextManager[object]) -> None:
        self._interpreter, self._owner_lock = interpreter, lock
        self._making = threading.Lock()
        self._lanes: list[Member] | None = None

    def _made(self) -> list[Member]:
        with self._making:
            if self._lanes is None:
                count = plan(self._interpreter).interpreters
                self._lanes = pool_of(self._interpreter).members(count) if count > 1 else [Member(self._interpreter, self._owner_lock)]
            return self._lanes

    def __len__(self) -> int:
        return len(self._made())

    def run(self, pixels: np.ndarray, lane: int | None = None) -> np.ndarray:
        """The output for model-sized ``pixels`` on lane ``lane`` (any integer: taken modulo the lane count).

        ``lane=None`` runs the owner's own interpreter under the owner's lock, and makes no clones.
        """
        if lane is None:
            interpreter, lock = self._interpreter, self._owner_lock
        else:
            lanes = self._made()
            interpreter, lock = lanes[lane % len(lanes)]
        with lock:
            return interpreter.run(pixels)
