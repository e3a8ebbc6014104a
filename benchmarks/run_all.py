"""Run every benchmark, one after another in fresh processes, and print how long each took.

``make bench`` runs this. Each script prints its own ratios against a baseline measured in the same
run; this only streams their output, times them and exits 1 if any failed. ``--quick`` passes
``--quick`` to the scripts that take it (fewer rounds); ``--only embed warm`` runs a subset and
``--skip accuracy`` leaves one out.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["embed", "warm", "softmax", "imprint", "keep_classes", "accuracy", "unknown", "uncertain", "live", "serve", "report", "validate"]
TAKE_QUICK = {"embed", "warm", "accuracy", "keep_classes", "unknown"}
BUDGET_S = 600.0  # the whole suite should finish within 10 minutes on a 2-core machine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds where a script supports it")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run just these")
    parser.add_argument("--skip", nargs="+", choices=SCRIPTS, default=[], help="leave these out")
    args = parser.parse_args()
    durations: dict[str, tuple[float, int]] = {}
    for name in [n for n in args.only or SCRIPTS if n not in args.skip]:
        command = [sys.executable, str(HERE / f"{name}.py")]
        if args.quick and name in TAKE_QUICK:
            command.append("--quick")
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call(command, cwd=HERE.parent)
        durations[name] = (time.perf_counter() - start, code)
    total = sum(seconds for seconds, _ in durations.values())
    print("\n=== durations ===")
    for name, (seconds, code) in durations.items():
        print(f"  {name:9} {seconds:6.1f} s{'' if code == 0 else f'  FAILED (exit {code})'}")
    verdict = "within" if total <= BUDGET_S else "OVER"
    print(f"  {'total':9} {total:6.1f} s ({verdict} the {BUDGET_S / 60:.0f}-minute budget)")
    return 0 if all(code == 0 for _, code in durations.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
