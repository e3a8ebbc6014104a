"""Many images through one model: decoding overlapped with inference, with a progress bar."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from lastlayer.errors import ImageError
from lastlayer.images import ImagePath, Size, load_resized
from lastlayer.runtime.interpreter import Interpreter


def _prefetch(pool: ThreadPoolExecutor, paths: Sequence[ImagePath], size: Size, depth: int) -> Iterator[tuple[ImagePath, Future]]:
    """Yield (path, decoding future) in order while up to ``depth`` more decode in the background."""
    pending: list[tuple[ImagePath, Future]] = []
    items = iter(paths)
    for path in items:
        pending.append((path, pool.submit(load_resized, path, size)))
        if len(pending) >= depth:
            break
    try:
        while pending:
            current = pending.pop(0)
            nxt = next(items, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(load_resized, nxt, size)))
            yield current
    finally:
        for _, future in pending:
            future.cancel()


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
    """Run every image through ``interpreter``; return a float32 ``[n, output_size]`` array.

    Decoding and resizing run in a thread pool (Pillow releases the GIL) while the main thread
    invokes the model, so the interpreter is the bottleneck. A tqdm progress bar shows on stderr.
    An unreadable image raises :class:`ImageError`, unless ``on_error(path, error)`` is given:
    then it is called and that image's row is NaN. ``latencies`` collects each image's inference
    time (set input, invoke, read output) in seconds.
    """
    from tqdm.auto import tqdm

    paths = list(paths)
    result = np.empty((len(paths), interpreter.output_size), dtype=np.float32)
    workers = workers or max(1, min(4, (os.cpu_count() or 2) // 2))
    size = interpreter.input_size
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lastlayer-decode") as pool:
        images = _prefetch(pool, paths, size, depth=2 * workers + 2)
        bar = tqdm(images, total=len(paths), desc=description, unit="img", disable=not progress or len(paths) < 2 or not _is_terminal(), leave=False)
        for row, (path, future) in enumerate(bar):
            try:
                pixels = future.result()
            except ImageError as error:
                if on_error is None:
                    raise
                on_error(path, error)
                result[row] = np.nan
                continue
            start = time.perf_counter()
            result[row] = interpreter.run(pixels)
            if latencies is not None:
                latencies.append(time.perf_counter() - start)
    return result


def _is_terminal() -> bool:
    """Progress bars only on a terminal: redrawn lines are noise in a log file."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
