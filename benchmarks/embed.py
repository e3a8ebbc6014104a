"""Batch embedding extraction against the minimum CPU it needs and the wall-clock limit of the cores.

One process, the same image files (half flowers, half clothing), read once so every variant reads
from memory. Each round measures, interleaved chunk by chunk (every variant on the same 100 images
before the next 100):

- ``decode``: ``load_resized`` of every file in one thread (CPU ms per image);
- ``invoke``: one single-threaded interpreter on the pre-decoded images (set input, invoke, read
  output; CPU ms per image). CPU time, not wall time: other processes on the machine do not
  inflate this floor;
- ``invoke everywhere``: ``invoke`` on every usable core at once (one single-threaded interpreter
  per core, each on its share of the pre-decoded images; CPU ms per image): what running the cores
  side by side costs by itself;
- ``by hand``: the loop written by hand for every usable core at once: one thread and one
  single-threaded interpreter per core, each decoding and invoking its share of the images (wall
  time and CPU time): the floor with the cores competing for caches and memory, and decoding
  and inference taking turns on each core, as they do during extraction;
- ``extract``: :func:`lastlayer.extract_embeddings` with its default plan (wall time and the
  process's CPU time, all threads);
- ``naive``: the loop a user writes by hand (Pillow open, convert, resize, set_tensor, invoke,
  get_tensor, one image after another) on an interpreter with the default thread count.

Printed per round and as min / median / max over the rounds (ratios are within one round):

- CPU ratio = extract CPU per image / (invoke + decode)                 goal <= 1.05
- wall ratio = extract wall per image / ((invoke + decode) / cores)    goal <= 1.15
- by-hand ratios = extract CPU (wall) per image / by-hand CPU (wall) per image: what lastlayer's
  pool, ordering and error handling add beyond running decode and invoke side by side on every
  core (on this 2-core VM that alone costs 5-10 % more CPU than the two measured one at a time)
- busy = extract CPU / (extract wall x cores): the share of the cores it kept busy (other
  processes on the machine lower it, and raise the wall ratio with it)
  (the wall ratio only means something in rounds with busy near 1: see the per-round lines)
- naive ratio = extract wall / naive wall                              (lower is better)

``--scaling`` (on by default on Linux with ``taskset``) runs the same measurement in child
processes pinned with ``taskset -c 0`` and ``taskset -c 0,1`` and prints images/s of each and the
speed-up; with the serial (GIL-held) time per image it projects the rate on more cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from _common import dataset_images
from PIL import Image

from lastlayer import Interpreter, extract_embeddings, resolve_model
from lastlayer.images.decode import load_resized
from lastlayer.model.zoo import DEFAULT_EXTRACTOR
from lastlayer.runtime.batch import chunk_size, plan
from lastlayer.runtime.interpreter import usable_cores

CHUNK = 100  # images per job in turn


def spread(values: list[float], digits: int = 3) -> str:
    """``min / median / max`` of ``values``."""
    return " / ".join(f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


def image_paths(count: int) -> list[Path]:
    half = count // 2
    paths = dataset_images("flowers", half) + dataset_images("clothing", count - half)
    for path in paths:  # warm the file cache so every variant reads from memory
        path.read_bytes()
    return paths


def measure(count: int, rounds: int, verbose: bool = True) -> dict[str, list[float]]:
    """Per-round figures (see the module docstring); ms per image and ratios."""
    paths = image_paths(count)
    model = resolve_model(DEFAULT_EXTRACTOR)
    default = Interpreter(model)
    single = Interpreter(model, num_threads=1)
    width, height = default.input_size
    decoded = [load_resized(p, (width, height)) for p in paths]
    raw = default.litert
    inp, out = default.input_details[0]["index"], default.output_details[0]["index"]
    cores = usable_cores()
    chosen = plan(default, images=len(paths))
    extract_embeddings(default, paths[:8], progress=False)  # make the pool's interpreters before timing
    if verbose:
        how = (f"{chosen.interpreters} single-threaded interpreter(s) side by side, each decoding "
               f"{chunk_size(len(paths), chosen.interpreters)} images, then running them" if chosen.pooled
               else f"one {default.num_threads}-thread interpreter fed by {chosen.decoders} decode thread(s)")
        print(f"{len(paths)} images, {DEFAULT_EXTRACTOR}, {cores} usable core(s): {how}")

    def decode(part: slice) -> None:
        for path in paths[part]:
            load_resized(path, (width, height))

    def invoke(part: slice) -> None:
        for pixels in decoded[part]:
            single.set_image(pixels)
            single.invoke()
            single.output()

    lanes = [single] + [single.clone(num_threads=1) for _ in range(cores - 1)]

    def on_every_core(run) -> None:
        threads = [threading.Thread(target=run, args=(lane, index)) for index, lane in enumerate(lanes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def by_hand(part: slice) -> None:
        mine = paths[part]

        def run(lane: Interpreter, index: int) -> None:
            for path in mine[index::cores]:
                lane.set_image(load_resized(path, (width, height)))
                lane.invoke()
                lane.output()
        on_every_core(run)

    def invoke_everywhere(part: slice) -> None:
        mine = decoded[part]

        def run(lane: Interpreter, index: int) -> None:
            for pixels in mine[index::cores]:
                lane.set_image(pixels)
                lane.invoke()
                lane.output()
        on_every_core(run)

    def naive(part: slice) -> None:
        for path in paths[part]:
            image = Image.open(path).convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
            raw.set_tensor(inp, np.asarray(image, dtype=np.uint8)[np.newaxis])
            raw.invoke()
            raw.get_tensor(out)

    def extract(part: slice) -> None:
        extract_embeddings(default, paths[part], progress=False)

    figures: dict[str, list[float]] = {k: [] for k in ("decode_ms", "invoke_ms", "extract_ms", "extract_cpu_ms", "naive_ms",
                                                      "cpu_ratio", "wall_ratio", "naive_ratio", "images_per_s", "busy",
                                                      "by_hand_ms", "cpu_ratio_by_hand", "wall_ratio_by_hand",
                                                      "invoke_everywhere_ms", "contention")}
    n = len(paths)
    jobs = (("decode", decode), ("invoke", invoke), ("invoke_everywhere", invoke_everywhere), ("by_hand", by_hand),
            ("extract", extract), ("naive", naive))
    for number in range(rounds):
        wall = dict.fromkeys((key for key, _ in jobs), 0.0)
        cpu = dict.fromkeys((key for key, _ in jobs), 0.0)
        # Every job runs on the same small chunk before the next chunk: a host whose speed drifts
        # (a shared VM) drifts for all of them alike.
        for first in range(0, n, CHUNK):
            part = slice(first, first + CHUNK)
            for key, job in jobs:
                start, start_cpu = time.perf_counter(), time.process_time()
                job(part)
                wall[key] += time.perf_counter() - start
                cpu[key] += time.process_time() - start_cpu
        floor = (cpu["invoke"] + cpu["decode"]) / n
        round_figures = {
            "by_hand_ms": wall["by_hand"] / n * 1e3, "cpu_ratio_by_hand": cpu["extract"] / cpu["by_hand"],
            "wall_ratio_by_hand": wall["extract"] / wall["by_hand"],
            "invoke_everywhere_ms": cpu["invoke_everywhere"] / n * 1e3, "contention": cpu["invoke_everywhere"] / cpu["invoke"],
            "decode_ms": cpu["decode"] / n * 1e3, "invoke_ms": cpu["invoke"] / n * 1e3,
            "extract_ms": wall["extract"] / n * 1e3, "extract_cpu_ms": cpu["extract"] / n * 1e3,
            "naive_ms": wall["naive"] / n * 1e3,
            "cpu_ratio": cpu["extract"] / n / floor, "wall_ratio": wall["extract"] / n / (floor / cores),
            "naive_ratio": wall["extract"] / wall["naive"], "images_per_s": n / wall["extract"],
            "busy": cpu["extract"] / (wall["extract"] * cores),
        }
        for key, value in round_figures.items():
            figures[key].append(value)
        if verbose:
            print(f"  round {number + 1}: decode {round_figures['decode_ms']:.2f} ms, invoke(1 thread) "
                  f"{round_figures['invoke_ms']:.2f} ms, extract {round_figures['extract_ms']:.2f} ms wall / "
                  f"{round_figures['extract_cpu_ms']:.2f} ms CPU per image -> CPU ratio {round_figures['cpu_ratio']:.3f}, "
                  f"wall ratio {round_figures['wall_ratio']:.3f}, busy {round_figures['busy']:.2f}, vs naive {round_figures['naive_ratio']:.3f}; "
                  f"by hand {round_figures['by_hand_ms']:.2f} ms wall -> CPU ratio {round_figures['cpu_ratio_by_hand']:.3f}, "
                  f"wall ratio {round_figures['wall_ratio_by_hand']:.3f}")
    return figures


def serial_ms(interpreter: Interpreter) -> float:
    """Time per image that holds the GIL (an upper bound): the Python around decoding and inference.

    Measured on a 16x16 JPEG (its decode costs next to nothing natively) plus setting the input and
    reading the output without invoking.
    """
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 140, 200)).save(buffer, "JPEG")
    tiny = Path(os.environ.get("TMPDIR", "/tmp")) / f"lastlayer-bench-{os.getpid()}.jpg"
    tiny.write_bytes(buffer.getvalue())
    try:
        size = interpreter.input_size
        pixels = load_resized(tiny, size)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(200):
                load_resized(tiny, size)
                interpreter.set_image(pixels)
                interpreter.output()
            best = min(best, (time.perf_counter() - start) / 200)
    finally:
        tiny.unlink(missing_ok=True)
    return best * 1e3


def gil_release(interpreter: Interpreter) -> tuple[float, float, float]:
    """Median delay (ms) for a sleeping thread to wake while another thread invokes, idles, or holds the GIL.

    LiteRT releases the GIL while invoking when the first delay is near the idle one, far below the
    GIL-holding one (about Python's 5 ms switch interval).
    """
    import threading

    interpreter.set_image(np.zeros((*interpreter.input_size[::-1], 3), dtype=np.uint8))
    blob = bytes(range(256)) * 40_000

    def delay(work) -> float:
        stop = threading.Event()

        def busy() -> None:
            while not stop.is_set():
                work()

        thread = threading.Thread(target=busy)
        thread.start()
        time.sleep(0.02)
        delays = []
        for _ in range(100):
            start = time.perf_counter()
            time.sleep(0.0002)
            delays.append(time.perf_counter() - start - 0.0002)
        stop.set()
        thread.join()
        return statistics.median(delays) * 1e3

    return (delay(interpreter.litert.invoke), delay(lambda: time.sleep(0.005)),
            delay(lambda: blob.count(b"\x07\x08\x09\x0a\x0b")))


def scaling(count: int, rounds: int) -> None:
    """The same measurement pinned to core 0, then to cores 0 and 1, in child processes."""
    if shutil.which("taskset") is None or os.cpu_count() is None or os.cpu_count() < 2:
        print("scaling: needs taskset and 2 cores; skipped")
        return
    rates = {}
    for cores in ("0", "0,1"):
        child = subprocess.run(["taskset", "-c", cores, sys.executable, __file__, "--child", "--count", str(count),
                                "--rounds", str(rounds)], capture_output=True, text=True, check=True)
        rates[cores] = json.loads(child.stdout.strip().splitlines()[-1])
    one, two = rates["0"], rates["0,1"]
    print(f"scaling (taskset, {count} images x {rounds} rounds, min / median / max):")
    for cores, figures in rates.items():
        print(f"  -c {cores:4}: {spread(figures['images_per_s'], 1)} images/s, CPU ratio {spread(figures['cpu_ratio'])}, "
              f"wall ratio {spread(figures['wall_ratio'])}, busy {spread(figures['busy'], 2)}")
    speedups = [b / a for a, b in zip(one["images_per_s"], two["images_per_s"])]
    print(f"  speed-up 2 cores / 1 core: {spread(speedups)} (ideal 2.0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="images per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds")
    parser.add_argument("--no-scaling", action="store_true", help="skip the taskset runs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.count, args.rounds = min(args.count, 100), min(args.rounds, 3)
    if args.child:
        print(json.dumps(measure(args.count, args.rounds, verbose=False)))
        return
    figures = measure(args.count, args.rounds)
    print(f"over {args.rounds} rounds (min / median / max):")
    print(f"  decode {spread(figures['decode_ms'], 2)} ms, invoke (1 thread) {spread(figures['invoke_ms'], 2)} ms, "
          f"extract {spread(figures['extract_ms'], 2)} ms wall, {spread(figures['extract_cpu_ms'], 2)} ms CPU per image")
    print(f"  CPU ratio   extract CPU / (invoke + decode)           {spread(figures['cpu_ratio'])}  (goal <= 1.05)")
    print(f"  wall ratio  extract wall / ((invoke + decode) / cores) {spread(figures['wall_ratio'])}  (goal <= 1.15)")
    print(f"  invoke on every core at once: {spread(figures['invoke_everywhere_ms'], 2)} ms CPU per image, "
          f"{spread(figures['contention'])} x one core alone (cores sharing caches and memory)")
    print(f"  by hand on every core (decode + invoke per thread): {spread(figures['by_hand_ms'], 2)} ms wall per image")
    print(f"  CPU ratio   extract CPU / by-hand CPU                 {spread(figures['cpu_ratio_by_hand'])}  (what lastlayer adds)")
    print(f"  wall ratio  extract wall / by-hand wall               {spread(figures['wall_ratio_by_hand'])}")
    print(f"  busy        extract CPU / (wall x cores)              {spread(figures['busy'])}  (1.0: no other load)")
    quiet = [w for w, b in zip(figures["wall_ratio"], figures["busy"]) if b >= 0.9]
    if quiet:
        print(f"  wall ratio in the {len(quiet)} round(s) with busy >= 0.9: {spread(quiet)}")
    print(f"  vs naive    extract wall / naive loop wall             {spread(figures['naive_ratio'])}")
    single = Interpreter(resolve_model(DEFAULT_EXTRACTOR), num_threads=1)
    invoking, idle, holding = gil_release(single)
    print(f"  GIL: a sleeping thread wakes in {invoking:.2f} ms while another invokes ({idle:.2f} ms idle, {holding:.2f} ms "
          f"while another holds the GIL): invoke {'releases' if invoking < holding / 4 else 'HOLDS'} the GIL")
    serial = serial_ms(single)
    per_image = statistics.median(figures["invoke_ms"]) + statistics.median(figures["decode_ms"])
    print(f"  serial (GIL-held) time per image <= {serial:.3f} ms of {per_image:.2f} ms: interpreters in parallel scale "
          f"until about {per_image / serial:.0f} cores (16 cores: <= {min(16.0, per_image / serial):.1f}x one core)")
    if not args.no_scaling:
        scaling(min(args.count, 100) if args.quick else args.count, min(args.rounds, 3))


if __name__ == "__main__":
    main()
