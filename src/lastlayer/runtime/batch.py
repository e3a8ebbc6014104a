"""Many images through one model: every usable core busy, rows in order, with a progress bar.

On the CPU, ``N`` worker threads each own a single-threaded interpreter (a clone of the one given,
made once and kept with it: :mod:`lastlayer.runtime.clones`) and take the images a chunk at a time: decode and resize the chunk,
then invoke on each image of it. Both Pillow and LiteRT release the GIL while they work, so ``N``
cores give close to ``N`` times the rate of one, with no core waiting for another and no XNNPACK
threads competing with decoding; running a chunk's inferences back to back keeps the model's
weights in the core's caches (interleaving one decode with one inference cost 5-7 % more CPU per
image). ``N`` is the interpreter's thread budget (``num_threads``, by default the cores this
process may use, see :func:`~lastlayer.runtime.interpreter.usable_cores`).

With an Edge TPU model (one device), or a budget of one thread on a machine with spare cores, the
given interpreter runs every image in the calling thread while a thread pool decodes the next ones.
"""

from __future__ import annotations

import queue
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from lastlayer.errors import ImageError
from lastlayer.images.decode import ImagePath, Size, load_resized
from lastlayer.runtime.clones import Member, pool_of
from lastlayer.runtime.interpreter import Interpreter, usable_cores

MAX_DECODERS = 8  # decode threads ahead of a single interpreter (an Edge TPU is fed by at most this many)
MAX_INTERPRETERS = 16  # default cap on the pool: past ~20 cores the Python around each image (GIL-bound) limits the rate


@dataclass(frozen=True)
class Plan:
    """How a batch runs: ``interpreters`` worker threads, each with its own single-threaded interpreter,
    decoding a chunk of images and then running it (``decoders == 0``), or one interpreter in the
    calling thread fed by ``decoders`` threads."""

    interpreters: int
    decoders: int

    @property
    def pooled(self) -> bool:
        return self.decoders == 0


def plan(interpreter: Interpreter, workers: int | None = None, images: int | None = None) -> Plan:
    """The plan for ``images`` images on this machine.

    ``workers`` overrides the number of images in flight. On the CPU, that many single-threaded
    interpreters run side by side (default: the interpreter's ``num_threads``, at most the usable
    cores). An Edge TPU model keeps its one interpreter, fed by ``workers`` decode threads (default:
    every usable core, at most :data:`MAX_DECODERS`); so does a one-thread budget on a machine with
    cores to spare for decoding. On a single core, the one interpreter decodes and runs chunks in turn.
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
    spare = cores - interpreter.num_threads
    if workers is None and spare < 1:
        return Plan(1, 0)  # no core to decode on while inferring: decode a chunk, then run it
    # One interpreter: overlap decoding with inference on the cores its threads leave free.
    decoders = workers or min(spare, MAX_DECODERS)
    return Plan(1, max(1, min(decoders, limit or decoders)))


def replicas(interpreter: Interpreter, count: int) -> list[Interpreter]:
    """``count`` single-threaded interpreters of ``interpreter``'s model, made once and kept for later batches.

    ``interpreter`` itself is the first of them when it already runs one thread (see :class:`~lastlayer.runtime.clones.ClonePool`).
    """
    return [member.interpreter for member in pool_of(interpreter).members(count)]


class Embedded(NamedTuple):
    """One image's outcome: its row, its output (or the :class:`ImageError` that stopped it) and inference seconds."""

    row: int
    vector: np.ndarray | None
    error: ImageError | None
    seconds: float


CHUNK = 16  # images a worker decodes before running them (at most; smaller for small batches)


def chunk_size(images: int, workers: int) -> int:
    """Images per chunk: up to :data:`CHUNK`, small enough that every worker gets about four chunks."""
    return max(1, min(CHUNK, images // (4 * max(1, workers))))


class _Outcome(NamedTuple):
    """One image of a chunk: its output, or the ImageError that stopped it, or the failure that stops the batch."""

    vector: np.ndarray | None
    error: ImageError | None
    failure: BaseException | None
    seconds: float


def _run_chunk(free: queue.SimpleQueue, size: Size, paths: Sequence[ImagePath]) -> list[_Outcome]:
    """Decode and resize a chunk of images, then run them on a free member of the pool (in a worker thread).

    A failure other than an unreadable image ends the chunk there; the images before it keep their rows.
    """
    decoded: list[np.ndarray | ImageError] = []
    for path in paths:
        try:
            decoded.append(load_resized(path, size))
        except ImageError as error:
            decoded.append(error)
    outcomes: list[_Outcome] = []
    member: Member = free.get()
    try:
        with member.lock:
            for pixels in decoded:
                if isinstance(pixels, ImageError):
                    outcomes.append(_Outcome(None, pixels, None, 0.0))
                    continue
                try:
                    start = time.perf_counter()
                    vector = member.interpreter.run(pixels)
                except Exception as failure:  # raised by the consumer after the rows before it
                    outcomes.append(_Outcome(None, None, failure, 0.0))
                    break
                outcomes.append(_Outcome(vector, None, None, time.perf_counter() - start))
    finally:
        free.put(member)
    return outcomes


_Work = Callable[[Any], object]


def _in_order(pool: ThreadPoolExecutor, work: _Work, units: Sequence[Any], depth: int) -> Iterator[tuple[int, Future]]:
    """Yield (index, future of ``work(unit)``) in order while up to ``depth`` more run in the background."""
    pending: list[tuple[int, Future]] = []
    submitted = 0
    try:
        while submitted < len(units) and len(pending) < depth:
            pending.append((submitted, pool.submit(work, units[submitted])))
            submitted += 1
        while pending:
            current = pending.pop(0)
            if submitted < len(units):
                pending.append((submitted, pool.submit(work, units[submitted])))
                submitted += 1
            yield current
    finally:
        for _, future in pending:
            future.cancel()


@contextmanager
def _workers(threads: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool that is waited for on the way out, except after an interruption.

    A signal (Ctrl-C, SIGTERM) raises in the main thread wherever it is, possibly while it holds the
    lock of a future a worker is about to complete; waiting for that worker would then wait forever.
    """
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lastlayer-embed")
    try:
        yield pool
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) or isinstance(exc.__context__, KeyboardInterrupt):
            pool.shutdown(wait=False, cancel_futures=True)
        else:
            pool.shutdown(wait=True)
        raise
    pool.shutdown(wait=True)


def iter_embeddings(interpreter: Interpreter, paths: Sequence[ImagePath], *, workers: int | None = None) -> Iterator[Embedded]:
    """Run every image through ``interpreter``, yielding an :class:`Embedded` per path in row order.

    An unreadable image yields its :class:`ImageError`; any other failure (e.g. of the model) is
    raised after the rows before it. Leaving the loop early stops the remaining work (at most one
    chunk per thread finishes).
    """
    if not paths:
        return
    size = interpreter.input_size
    layout = plan(interpreter, workers, len(paths))
    with ExitStack() as stack:
        if layout.pooled:
            free: queue.SimpleQueue = queue.SimpleQueue()
            for member in stack.enter_context(pool_of(interpreter).batch(layout.interpreters)):
                free.put(member)
            threads = layout.interpreters
            step = chunk_size(len(paths), threads)
            chunks = [paths[start:start + step] for start in range(0, len(paths), step)]
            pool = stack.enter_context(_workers(threads))
            for index, future in _in_order(pool, lambda chunk: _run_chunk(free, size, chunk), chunks, depth=2 * threads):
                for offset, outcome in enumerate(future.result()):  # type: ignore[union-attr]
                    if outcome.failure is not None:
                        raise outcome.failure
                    row = index * step + offset
                    yield Embedded(row, outcome.vector, outcome.error, outcome.seconds)
            return
        threads = layout.decoders
        pool = stack.enter_context(_workers(threads))
        for row, future in _in_order(pool, lambda path: load_resized(path, size), paths, depth=2 * threads + 2):
            try:
                pixels = future.result()
            except ImageError as error:
                yield Embedded(row, None, error, 0.0)
                continue
            start = time.perf_counter()
            vector = interpreter.run(pixels)  # type: ignore[arg-type]
            yield Embedded(row, vector, None, time.perf_counter() - start)


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

    On the CPU, ``workers`` threads (default: the interpreter's ``num_threads``, at most the usable
    cores) each decode and resize a chunk of images and run it on their own single-threaded copy of
    the interpreter; an Edge TPU model runs on its one interpreter fed by ``workers`` decode threads
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
