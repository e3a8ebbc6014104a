"""Warm runs: time without re-hashing unchanged files, and peak memory in copies of the embeddings.

1. Time. A dataset of ``--count`` (20,000) distinct file names, symlinks to the 400 flower photos
   (so the embedding cache holds 400 vectors after one cold run). Each round, interleaved, times a
   warm ``load_dataset`` + ``embed_dataset`` (the embedding part of a warm ``lastlayer imprint``)
   with every file hashed (``lastlayer.embeddings.digests.USE_STAMPS = False``, the former behaviour) and with
   the stat shortcut; prints the hashing share of each and the ratio shortcut / hashing.
2. Memory. ``--count`` distinct tiny JPEGs whose embeddings are put in the cache beforehand; a
   child process embeds them warm and reports its peak RSS, and the Python heap's peak during
   ``embed_dataset`` (tracemalloc, which counts NumPy's buffers) in copies of ``X`` (goal <= 2).

Everything lives in a temporary folder with its own ``LASTLAYER_CACHE``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, dataset_images


def spread(values: list[float], digits: int = 3) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


def linked_dataset(folder: Path, count: int) -> Path:
    """``count`` symlinks under distinct names, spread over the flower classes."""
    photos = dataset_images("flowers")
    classes = sorted({p.parent.name for p in photos})
    by_class = {c: [p for p in photos if p.parent.name == c] for c in classes}
    for name in classes:
        (folder / name).mkdir(parents=True)
    for i in range(count):
        name = classes[i % len(classes)]
        photo = by_class[name][(i // len(classes)) % len(by_class[name])]
        (folder / name / f"{i:06d}_{photo.name}").symlink_to(photo)
    return folder


def tiny_dataset(folder: Path, count: int) -> Path:
    """``count`` distinct small JPEGs (one 16x16 image with a distinct trailing comment each)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    for c in range(5):
        (folder / f"c{c}").mkdir(parents=True)
    for i in range(count):
        (folder / f"c{i % 5}" / f"{i:06d}.jpg").write_bytes(jpeg + f"#{i}".encode())
    return folder


def time_rounds(data: Path, rounds: int) -> None:
    from lastlayer import Interpreter, resolve_model
    from lastlayer.embeddings import digests as digest_module
    from lastlayer.embeddings.cache import embed_dataset
    from lastlayer.embeddings.database import CacheDatabase
    from lastlayer.files.datasets import load_dataset
    from lastlayer.model.zoo import DEFAULT_EXTRACTOR

    interpreter = Interpreter(resolve_model(DEFAULT_EXTRACTOR))
    start = time.perf_counter()
    cold = embed_dataset(interpreter, load_dataset(data), progress=False)
    print(f"{len(cold.y)} files (symlinks to 400 photos): cold run {time.perf_counter() - start:.1f} s")
    figures: dict[str, list[float]] = {k: [] for k in ("hash_s", "hash_share", "stamp_s", "stamp_share", "ratio")}
    for _ in range(rounds):
        for key, use_stamps in (("hash", False), ("stamp", True)):
            digest_module.USE_STAMPS = use_stamps
            start = time.perf_counter()
            dataset = load_dataset(data)
            loaded = time.perf_counter()
            embedded = embed_dataset(interpreter, dataset, progress=False)
            total = time.perf_counter() - start
            assert embedded.cached == len(dataset)
            start = time.perf_counter()
            with CacheDatabase() as database:
                digest_module.file_digests(dataset.paths, database)
            digests_s = time.perf_counter() - start
            figures[f"{key}_s"].append(total)
            figures[f"{key}_share"].append(min(1.0, digests_s / total))
            del loaded
        figures["ratio"].append(figures["stamp_s"][-1] / figures["hash_s"][-1])
    digest_module.USE_STAMPS = True
    print(f"warm load + embed, {rounds} rounds (min / median / max):")
    print(f"  every file hashed   {spread(figures['hash_s'], 2)} s, hashing {spread(figures['hash_share'], 2)} of it")
    print(f"  stat shortcut       {spread(figures['stamp_s'], 2)} s, digests {spread(figures['stamp_share'], 2)} of it")
    print(f"  ratio shortcut / hashed {spread(figures['ratio'])}")


_CHILD = """
import json, os, sys, tracemalloc
import numpy as np
from lastlayer import Interpreter, resolve_model
from lastlayer.files.datasets import load_dataset
from lastlayer.embeddings.cache import EmbeddingCache, dataset_digests, embed_dataset
from lastlayer.model.zoo import DEFAULT_EXTRACTOR
interpreter = Interpreter(resolve_model(DEFAULT_EXTRACTOR))
dataset = load_dataset(sys.argv[1])
if sys.argv[2] == "fill":
    cache = EmbeddingCache(interpreter.cache_key)
    rng = np.random.default_rng(0)
    for digest in dataset_digests(dataset, cache.database):
        cache.put(digest, rng.random(interpreter.output_size, dtype=np.float32))
    cache.close()
    sys.exit(0)
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def high_water():  # VmHWM: ru_maxrss would include the parent's RSS at the fork before exec
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
before = rss()
trace = sys.argv[2] == "trace"  # tracemalloc's own bookkeeping would inflate the RSS: one child for each
if trace:
    tracemalloc.start()
embedded = embed_dataset(interpreter, dataset, progress=False)
heap_peak = tracemalloc.get_traced_memory()[1] if trace else 0
peak = high_water()
print(json.dumps({"x_bytes": embedded.X.nbytes, "heap_peak": heap_peak, "rss_before": before, "rss_peak": peak,
                  "cached": embedded.cached, "n": len(embedded.y)}))
"""


def memory(data: Path, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-c", _CHILD, str(data), "fill"], env=env, check=True)
    figures = {}
    for mode in ("trace", "rss"):
        done = subprocess.run([sys.executable, "-c", _CHILD, str(data), mode], env=env, check=True, capture_output=True,
                              text=True)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        heap = figures.get("heap_peak", 0)
        figures.update(measured)
        figures["heap_peak"] = max(heap, measured["heap_peak"])
    mib = 2**20
    x = figures["x_bytes"]
    print(f"{figures['n']} distinct files, warm ({figures['cached']} from the cache), X = {x / mib:.0f} MiB:")
    print(f"  Python heap peak during embed_dataset {figures['heap_peak'] / mib:.0f} MiB = {figures['heap_peak'] / x:.2f} "
          f"copies of X (goal <= 2)")
    print(f"  process RSS {figures['rss_before'] / mib:.0f} MiB before, peak {figures['rss_peak'] / mib:.0f} MiB "
          f"(+{(figures['rss_peak'] - figures['rss_before']) / x:.2f} copies of X)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.rounds = min(args.rounds, 3)
    with tempfile.TemporaryDirectory(prefix="lastlayer-warm-") as temp:
        root = Path(temp)
        os.environ["LASTLAYER_CACHE"] = str(root / "cache")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        time_rounds(linked_dataset(root / "linked", args.count), args.rounds)
        if sys.platform.startswith("linux"):
            memory(tiny_dataset(root / "tiny", args.count), env)


if __name__ == "__main__":
    main()
