"""Batch embedding extraction against the loop a user writes by hand, and against invoke alone.

One process, the same 200 image files: (a) lastlayer.extract_embeddings (decode overlapped with
inference), (b) the naive loop (Pillow open, convert, resize, set_tensor, invoke, get_tensor, one
image after another, same thread count), (c) invoke alone on pre-decoded tensors (the floor).
Prints images/s for each and the time ratios a/b (goal <= 0.95) and a/c.
"""

from __future__ import annotations

import os

import numpy as np
from _common import dataset_images, timed
from PIL import Image

from lastlayer import Interpreter, extract_embeddings, resolve_model
from lastlayer.zoo import DEFAULT_EXTRACTOR


def main(count: int = 200, repeats: int = 5) -> None:
    paths = dataset_images("flowers", count) + dataset_images("clothing", count)
    paths = paths[:count]
    for p in paths:  # warm the file cache so every variant reads from memory
        p.read_bytes()
    interp = Interpreter(resolve_model(DEFAULT_EXTRACTOR))
    raw = interp.litert
    inp, out = interp.input_details[0]["index"], interp.output_details[0]["index"]
    width, height = interp.input_size
    print(f"{len(paths)} images, {DEFAULT_EXTRACTOR}, {interp.num_threads} threads on {os.cpu_count()} cores")

    def naive() -> None:
        for path in paths:
            image = Image.open(path).convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
            raw.set_tensor(inp, np.asarray(image, dtype=np.uint8)[np.newaxis])
            raw.invoke()
            raw.get_tensor(out)

    decoded = [np.asarray(Image.open(p).convert("RGB").resize((width, height)), dtype=np.uint8)[np.newaxis] for p in paths]

    def floor() -> None:
        for tensor in decoded:
            raw.set_tensor(inp, tensor)
            raw.invoke()
            raw.get_tensor(out)

    best: dict[str, float] = {}
    for _ in range(repeats):  # interleave the variants, keep each one's best run
        for key, job in (("a", lambda: extract_embeddings(interp, paths, progress=False)), ("b", naive), ("c", floor)):
            times: dict[str, float] = {}
            with timed(times, key):
                job()
            best[key] = min(best.get(key, float("inf")), times[key])
    names = {"a": "lastlayer extract_embeddings", "b": "naive loop", "c": "invoke only (floor)"}
    for key in "abc":
        print(f"({key}) {names[key]:30} {len(paths) / best[key]:7.1f} images/s  ({best[key]:.2f} s)")
    print(f"a/b time ratio {best['a'] / best['b']:.3f} (goal <= 0.95)   a/c time ratio {best['a'] / best['c']:.3f}")


if __name__ == "__main__":
    main()
