"""Many images through one model: every usable core busy, rows in order, with a progress bar.

On the CPU, ``N`` images are in flight at once, each in its own thread with its own single-threaded
interpreter (a clone of the one given, made once and kept with it): the thread decodes, resizes and
invokes, and both Pillow and LiteRT release the GIL while they work, so ``N`` cores give close to
``N`` times the rate of one, with no core waiting for another and no XNNPACK threads competing with
decoding. ``N`` is the interpreter's thread budget (``num_threads``, by default the cores this
process may use, see :func:`~lastlayer.runtime.interpreter.usable_cores`).

With an Edge TPU model (one device), or a budget of one thread, the given interpreter runs every
image in the calling thread while a thread pool decodes the next ones.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from lastlayer.errors import ImageError
from lastlayer.images import ImagePath, Size, load_resized
from lastlayer.runtime.interpreter import Interpreter, usable_cores

MAX_DECODERS = 8  # decode threads ahead of a single interpreter (an Edge TPU is fed by at most this many)
MAX_INTERPRETERS = 16  # default cap on the pool: past ~20 cores the Python around each image (GIL-bound) limits the rate


@dataclass(frozen=True)
class Plan:
    """How a batch runs: ``interpreters`` images in flight, each with its own single-threaded interpreter
    (``interpreters > 1``), or one interpreter in the calling thread fed by ``decoders`` threads."""

    interpreters: int
    decoders: int

    @property
    def pooled(self) -> bool:
        return self.interpreters > 1


def plan(interpreter: Interpreter, workers: int | None = None, images: int | None = None) -> Plan:
    """The plan for ``images`` images on this machine.

    ``workers`` overrides the number of images in flight. On the CPU, that many single-threaded
    interpreters run side by side (default: the interpreter's ``num_threads``, at most the usable
    cores). An Edge TPU model keeps its one interpreter, fed by ``workers`` decode threads (default:
    every usable core, at most :data:`MAX_DECODERS`).
    """
    cores = usable_cores()
    limit = max(1, images) if images is not None else None
    if interpreter.uses_edgetpu:
        decoders = workers or min(cores, MAX_DECODERS)
        return Plan(1, max(1, min(decoders, limit or decoders)))
    count = workers or min(interpreter.num_threads, cores, MAX_INTERPRETERS)
    count = max(1, min(count, limit or count))
    if count > 1:
        return Plan(count, 0)
    # One interpreter: overlap decoding with inference on the cores its threads leave free.
    decoders = workers or max(1, min(cores - interpreter.num_threads, MAX_DECODERS))
    return Plan(1, max(1, min(decoders, limit or decoders)))


class _Pool:
    """The single-threaded clones kept with one interpreter, and who is using them."""

    def __init__(self) -> None:
        self.clones: list[Interpreter] = []
        self.busy = threading.Lock()


_POOLS: weakref.WeakKeyDictionary[Interpreter, _Pool] = weakref.WeakKeyDictionary()
_POOLS_LOCK = threading.Lock()


def _pool_of(interpreter: Interpreter) -> _Pool:
    with _POOLS_LOCK:
        pool = _POOLS.get(interpreter)
        if pool is None:
            pool = _POOLS[interpreter] = _Pool()
        return pool


def replicas(interpreter: Interpreter, count: int) -> list[Interpreter]:
    """``count`` single-threaded interpreters of ``interpreter``'s model, made once and kept for later batches.

    ``interpreter`` itself is the first of them when it already runs one thread.
    """
    pool = _pool_of(interpreter)
    with _POOLS_LOCK:
        own = [interpreter] if interpreter.num_threads == 1 else []
        while len(own) + len(pool.clones) < count:
            pool.clones.append(interpreter.clone(num_threads=1))
        return (own + pool.clones)[:count]


@contextmanager
def _leased(interpreter: Interpreter, count: int) -> Iterator[list[Interpreter]]:
    """The kept replicas for one batch; a batch running at the same time on the same interpreter gets its own clones."""
    pool = _pool_of(interpreter)
    if not pool.busy.acquire(blocking=False):
        yield [interpreter.clone(num_threads=1) for _ in range(count)]
        return
    try:
        yield replicas(interpreter, count)
    finally:
        pool.busy.release()


class Embedded(NamedTuple):
    """One image's outcome: its row, its output (or the :class:`ImageError` that stopped it) and inference seconds."""

    row: int
    vector: np.ndarray | None
    error: ImageError | None
    seconds: float


_Work = Callable[[ImagePath], object]


def _embed_one(free: queue.SimpleQueue, size: Size, keep_pixels: bool,
               path: ImagePath) -> tuple[np.ndarray, float, np.ndarray | None]:
    """Decode, resize and run one image on a free interpreter of the pool (in a worker thread)."""
    interpreter = free.get()
    try:
        pixels = load_resized(path, size)
        start = time.perf_counter()
        interpreter.set_image(pixels)
        interpreter.invoke()
        vector = interpreter.output()
        return vector, time.perf_counter() - start, pixels if keep_pixels else None
    finally:
        free.put(interpreter)


def _in_order(pool: ThreadPoolExecutor, work: _Work, paths: Sequence[ImagePath], depth: int) -> Iterator[tuple[int, Future]]:
    """Yield (row, future of ``work(path)``) in row order while up to ``depth`` more run in the background."""
    pending: list[tuple[int, Future]] = []
    submitted = 0
    try:
        while submitted < len(paths) and len(pending) < depth:
            pending.append((submitted, pool.submit(work, paths[submitted])))
            submitted += 1
        while pending:
            current = pending.pop(0)
            if submitted < len(paths):
                pending.append((submitted, pool.submit(work, paths[submitted])))
                submitted += 1
            yield current
    finally:
        for _, future in pending:
            future.cancel()


def iter_embeddings(interpreter: Interpreter, paths: Sequence[ImagePath], *, workers: int | None = None) -> Iterator[Embedded]:
    """Run every image through ``interpreter``, yielding an :class:`Embedded` per path in row order.

    An unreadable image yields its :class:`ImageError`; any other failure (e.g. of the model) is
    raised. Leaving the loop early stops the remaining work (at most one image per thread finishes).
    """
    if not paths:
        return
    size = interpreter.input_size
    layout = plan(interpreter, workers, len(paths))
    check = interpreter.degenerate_check
    with ExitStack() as stack:
        if layout.pooled:
            free: queue.SimpleQueue = queue.SimpleQueue()
            for member in stack.enter_context(_leased(interpreter, layout.interpreters)):
                free.put(member)
            threads = layout.interpreters

            def work(path: ImagePath) -> object:
                return _embed_one(free, size, check is not None and not check.done, path)
        else:
            threads = layout.decoders

            def work(path: ImagePath) -> object:
                return load_resized(path, size)

        pool = stack.enter_context(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lastlayer-embed"))
        for row, future in _in_order(pool, work, paths, depth=2 * threads + 2):
            try:
                done = future.result()
            except ImageError as error:
                yield Embedded(row, None, error, 0.0)
                continue
            if layout.pooled:
                vector, seconds, pixels = done  # type: ignore[misc]
                if pixels is not None and check is not None and not check.done:
                    check.observe(pixels, vector)
            else:
                start = time.perf_counter()
                vector = interpreter.run(done)  # type: ignore[arg-type]
                seconds = time.perf_counter() - start
            yield Embedded(row, vector, None, seconds)


def extract_embeddings(
    interpreter: Interpreter,
    paths: Iterable[ImagePath],
    *,
    progress: bool = True,
    workers: int | None = None,
    description: str = "embedding",
    on_error: Callable[[ImagePath, ImageError], None] | None = None,
    latencies: list[float] | None = None,
) -> np.ndarray:
    """Run every image through ``interpreter``; return a float32 ``[n, output_size]`` array in the order of ``paths``.

    On the CPU, ``workers`` images (default: the interpreter's ``num_threads``, at most the usable
    cores) are decoded, resized and run at once, each on its own single-threaded copy of the
    interpreter; an Edge TPU model runs on its one interpreter fed by ``workers`` decode threads
    (see :func:`plan`). A tqdm progress bar shows on stderr. An unreadable image raises
    :class:`ImageError`, unless ``on_error(path, error)`` is given: then it is called (in the
    calling thread, in row order) and that image's row is NaN. ``latencies`` collects each readable
    image's inference time (set input, invoke, read output) in seconds, in row order.
    """
    paths = list(paths)
    result = np.empty((len(paths), interpreter.output_size), dtype=np.float32)
    with progress_bar(len(paths), description, progress) as advance, \
            closing(iter_embeddings(interpreter, paths, workers=workers)) as outcomes:
        for row, vector, error, seconds in outcomes:
            if error is not None:
                if on_error is None:
                    raise error
                on_error(paths[row], error)
                result[row] = np.nan
            else:
                result[row] = vector
                if latencies is not None:
                    latencies.append(seconds)
            advance()
    return result


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[Callable[[], None]]:
    """A tqdm bar on stderr for ``total`` items, shown only when ``enabled``, on a terminal, for 2 or more items.

    Yields the function to call once per finished item (a no-op when no bar is shown).
    """
    if not (enabled and total >= 2 and _is_terminal()):
        yield lambda: None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=description, unit="img", leave=False)
    try:
        yield lambda: bar.update(1)
    finally:
        bar.close()


def _is_terminal() -> bool:
    """Progress bars only on a terminal: redrawn lines are noise in a log file."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
