"""Long interruption run: kill ``train`` / ``imprint`` at random moments and check the output folder every time.

    LASTLAYER_SHARED=../shared .venv/bin/python benchmarks/interrupt.py --trials 100

Each trial starts from a folder holding an earlier good 2-class model, runs a 3-class ``train`` or ``imprint``
into it, sends SIGINT, SIGTERM, SIGHUP or SIGKILL after a random delay, then checks that the folder holds the
complete old set or the complete new one, and that the next (uninterrupted) run leaves no temp file. Ends with
two concurrent runs on different data sharing one embedding cache, which must hold the union.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from test_interruptions import NEW, OLD, command, environment, folder_state, leftovers, link_flowers, run_and_kill  # noqa: E402

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]


def _cache_rows(cache: Path) -> int:
    with sqlite3.connect(cache / "embeddings" / "embeddings.sqlite3", timeout=30) as db:
        return int(db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])


def trial(work: Path, flowers: Path, rng: random.Random, seconds: float) -> dict[str, object]:
    """One kill at a random moment; returns what was seen."""
    old = link_flowers(flowers, work / "old", list(OLD), 4)
    new = link_flowers(flowers, work / "new", list(NEW), rng.choice([8, 16, 24]))
    out = work / "out"
    subprocess.run(command("imprint", old, out), env=environment(), capture_output=True, check=True)
    verb, signum, delay = rng.choice(["train", "imprint"]), rng.choice(SIGNALS), rng.uniform(0, seconds)
    code, err = run_and_kill(command(verb, new, out), signum, delay=delay)
    result: dict[str, object] = {"verb": verb, "signal": signal.Signals(signum).name, "delay": round(delay, 2), "code": code,
                                 "traceback": "Traceback" in err}
    try:
        result["state"] = {OLD: "old", NEW: "new"}.get(folder_state(out), "other")
    except Exception as exc:  # noqa: BLE001  (a mixed or unloadable folder is what this script counts)
        result["state"] = f"BROKEN: {exc}"
    subprocess.run(command("imprint", new, out), env=environment(), capture_output=True, check=True)
    result["leftovers"] = leftovers(out)
    return result


def concurrent_cache(work: Path, flowers: Path) -> tuple[int, int]:
    """Two runs on different data at once, one cache: (rows in the cache, rows expected)."""
    one = link_flowers(flowers, work / "one", ["daisy", "roses"], 30)
    two = link_flowers(flowers, work / "two", ["tulips", "sunflowers"], 30)
    runs = [subprocess.Popen(command("train", data, work / f"out-{data.name}"), env=environment(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for data in (one, two)]
    for run in runs:
        run.wait()
    return _cache_rows(Path(os.environ["LASTLAYER_CACHE"])), 120


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0, help="random delays are drawn from [0, seconds)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shared = Path(os.environ.get("LASTLAYER_SHARED", ROOT.parent / "shared"))
    flowers = shared / "datasets" / "flowers"
    os.environ.setdefault("LASTLAYER_MODELS", str(shared / "models"))
    rng = random.Random(args.seed)
    tally: collections.Counter[str] = collections.Counter()
    problems = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for number in range(args.trials):
            work = Path(scratch) / f"t{number}"
            os.environ["LASTLAYER_CACHE"] = str(work / "cache")
            result = trial(work, flowers, rng, args.seconds)
            tally[f"{result['signal']} -> {result['state']}"] += 1
            if str(result["state"]).startswith("BROKEN") or result["leftovers"] or result["traceback"]:
                problems.append(result)
        os.environ["LASTLAYER_CACHE"] = str(Path(scratch) / "shared-cache")
        rows, expected = concurrent_cache(Path(scratch) / "concurrent", flowers)
    print(f"{args.trials} trials in {time.perf_counter() - start:.0f} s")
    for key in sorted(tally):
        print(f"  {key}: {tally[key]}")
    print(f"mixed or broken folders, leftovers after the next run, tracebacks: {len(problems)}")
    for problem in problems:
        print("  ", problem)
    print(f"concurrent runs sharing one cache: {rows} of {expected} embeddings cached")


if __name__ == "__main__":
    main()
