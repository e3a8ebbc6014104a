"""How many BLAS threads the learners' matrix products use, chosen from the size of the product.

OpenBLAS starts one thread per core and wakes them for every product above a tiny size. For the
products on-device learning computes (a batch or a few thousand embeddings times a ``[D, C]``
head) waking the threads costs more than the product: on the 2-core test machine a
``1024 x 1024 x 16`` product took 1.2 ms on one thread and 18 ms on two, and even a
``100k x 1024 x 100`` one was no faster on two (0.81 s vs 0.85 s); ``SoftmaxRegression.fit`` on
flowers ran 3x and scikit-learn's ``LogisticRegressionCV`` 35x slower with the default threads.
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

# Multiply-adds of one product from which more threads may be used. Measured on the 2-core test
# machine, no size up to 1e10 gained from a second thread, so this is set above what on-device
# learning computes; machines with more cores may gain earlier (lower it after measuring).
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
