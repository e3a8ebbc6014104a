"""Cost of the confusion PNG by number of classes: time and peak memory, each size in a fresh process.

Run: ``python benchmarks/report.py [--classes 10 100 1000]``. The baseline in the same run is the
cost of computing the report itself (``classification_report``), which every evaluation pays anyway.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

PROBE = r"""
import json, resource, sys, tempfile, time
import numpy as np
from lastlayer.report.metrics import classification_report
from lastlayer.report.plot import save_confusion_png
classes = int(sys.argv[1])
rng = np.random.default_rng(0)
n = classes * 10
y = np.repeat(np.arange(classes), 10)
scores = rng.random((n, classes), dtype=np.float32)
scores[np.arange(n), y] += 0.6
data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
report = classification_report(y, scores, [f"class {i}" for i in range(classes)])
metrics = time.perf_counter() - start
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
save_confusion_png(report, tempfile.mktemp(suffix=".png"), "benchmark")
plot = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"metrics_s": metrics, "plot_s": plot, "peak_mib": after / 1024, "data_mib": data / 1024,
                  "report_growth_mib": (before - data) / 1024, "plot_growth_mib": (after - before) / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args()
    print("peak MiB: the whole process (Python, NumPy, Pillow and the scores: 10 photos per class); "
          "growth: what the report and the PNG added to it")
    print(f"{'classes':>8} {'report s':>9} {'PNG s':>8} {'PNG/report':>10} {'peak MiB':>9} {'with scores':>11} "
          f"{'report growth':>14} {'PNG growth':>11}")
    for classes in args.classes:
        done = subprocess.run([sys.executable, "-c", PROBE, str(classes)], capture_output=True, text=True, check=True)
        r = json.loads(done.stdout)
        print(f"{classes:>8} {r['metrics_s']:>9.3f} {r['plot_s']:>8.3f} {r['plot_s'] / max(r['metrics_s'], 1e-9):>10.1f} "
              f"{r['peak_mib']:>9.0f} {r['data_mib']:>11.0f} {r['report_growth_mib']:>14.1f} {r['plot_growth_mib']:>11.1f}")


if __name__ == "__main__":
    main()
