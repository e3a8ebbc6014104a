"""The single-threaded clones kept with one interpreter: the workers of a batch and the lanes of a stream.

On the CPU, images run fastest as one single-threaded interpreter per core, each decoding and
invoking on its own core (see :mod:`lastlayer.runtime.batch`). Making an interpreter costs tens of
milliseconds, so the clones of an interpreter are made once, on first use, and kept with it for as
long as it lives: a batch (:func:`~lastlayer.runtime.batch.iter_embeddings`) and a stream
(:class:`~lastlayer.runtime.lanes.Lanes`) draw on the same :class:`ClonePool`. Each member has its
own lock, held while it runs, so a batch and a stream on the same interpreter never share one at
the same time.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import TYPE_CHECKING, ContextManager, Iterator, NamedTuple

if TYPE_CHECKING:
    from lastlayer.runtime.interpreter import Interpreter


class Member(NamedTuple):
    """One interpreter of a pool and the lock to hold while running it."""

    interpreter: Interpreter
    lock: ContextManager[object]


class ClonePool:
    """The single-threaded clones of one interpreter (made on demand, kept), and whether a batch is using them.

    An interpreter that already runs one thread is the first member of its own pool.
    """

    def __init__(self, interpreter: Interpreter) -> None:
        self._owner = weakref.ref(interpreter)  # the pool lives in a WeakKeyDictionary keyed by the owner
        self._own_lock = threading.Lock()
        self._clones: list[Member] = []
        self._growing = threading.Lock()
        self._batch = threading.Lock()

    def members(self, count: int) -> list[Member]:
        """The first ``count`` members, cloning what is missing (``clone(num_threads=1)`` of the owner)."""
        owner = self._owner()
        if owner is None:  # pragma: no cover  (the owner holds the only way to reach its pool)
            raise RuntimeError("the interpreter of this pool is gone")
        with self._growing:
            own = [Member(owner, self._own_lock)] if owner.num_threads == 1 else []
            while len(own) + len(self._clones) < count:
                self._clones.append(Member(owner.clone(num_threads=1), threading.Lock()))
            return (own + self._clones)[:count]

    @contextmanager
    def batch(self, count: int) -> Iterator[list[Member]]:
        """``count`` members for one batch; a second batch at the same time gets clones of its own (dropped after)."""
        if not self._batch.acquire(blocking=False):
            owner = self._owner()
            yield [Member(owner.clone(num_threads=1), threading.Lock()) for _ in range(count)]  # type: ignore[union-attr]
            return
        try:
            yield self.members(count)
        finally:
            self._batch.release()


_POOLS: weakref.WeakKeyDictionary[Interpreter, ClonePool] = weakref.WeakKeyDictionary()
_POOLS_LOCK = threading.Lock()


def pool_of(interpreter: Interpreter) -> ClonePool:
    """The pool kept with ``interpreter`` (made on first use, gone with it)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(interpreter)
        if pool is None:
            pool = _POOLS[interpreter] = ClonePool(interpreter)
        return pool
