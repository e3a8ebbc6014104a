"""How many BLAS threads the learners' matrix products use, chosen from the size of the product.

OpenBLAS starts one thread per core and wakes them for every product above a tiny size. When the
cores are busy with anything else (a camera loop, the interpreter, other processes: measured with
the 2-core test machine under load 3) that costs far more than the product: a
``1024 x 1024 x 16`` product took 1.2 ms on one thread and 18 ms on two, ``SoftmaxRegression.fit``
on PyCoral's 16 x 1024 case 0.47 s instead of 0.12 s, scikit-learn's ``LogisticRegressionCV`` on
flowers 33 s instead of 0.9 s. On the same machine idle, two threads gained at most 1.3-1.7x
(0.08 vs 0.11 s on that case; 0.39 vs 0.65 s for 100 batches of 1000 x 1024 x 100).
``benchmarks/softmax.py`` prints the measurement.

So every learner wraps its math in :func:`blas_threads`: one thread below
:data:`MULTITHREAD_MIN_WORK` multiply-adds per product, otherwise the library's own setting (at
most :data:`max_threads`, when set). The limit is process-wide while the block runs (BLAS
libraries have no per-thread setting) and restored afterwards; it only ever lowers the count.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator

# Multiply-adds of one product from which more threads may be used. The small gain of an idle
# machine is not worth the large loss of a busy one at the sizes on-device learning computes, so
# this is set above them; lower it (or set ``max_threads``) after measuring on a dedicated machine.
MULTITHREAD_MIN_WORK = 2e10
# Upper bound on BLAS threads for products above the threshold (``None``: the library's default).
max_threads: int | None = None

_state: dict[str, Any] = {"controller": None, "modules": -1}


def _controller() -> Any:
    """A cached ``threadpoolctl.ThreadpoolController`` (rebuilt when new modules, e.g. SciPy, were imported)."""
    if _state["controller"] is None or _state["modules"] != len(sys.modules):
        from threadpoolctl import ThreadpoolController

        _state["controller"] = ThreadpoolController()
        _state["modules"] = len(sys.modules)
    return _state["controller"]


def threads_for(work: float) -> int | None:
    """The BLAS thread count for a product of ``work`` multiply-adds: 1, or ``max_threads`` (``None``: no limit)."""
    return 1 if work < MULTITHREAD_MIN_WORK else max_threads


@contextmanager
def blas_threads(work: float) -> Iterator[int | None]:
    """Run the block with the BLAS thread count :func:`threads_for` chooses for ``work`` multiply-adds.

    ``work`` is the size of the block's largest product, e.g. ``n_samples * n_features * n_classes``.
    Yields the limit applied (``None``: left as it was).
    """
    limit = threads_for(work)
    if limit is None:
        yield None
        return
    with _controller().limit(limits=int(limit), user_api="blas"):
        yield limit
