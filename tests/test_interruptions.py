"""``train`` and ``imprint`` interrupted by SIGINT, SIGTERM, SIGHUP and SIGKILL never leave a mixed or broken output folder.

A folder holds an earlier good model (2 classes); a new run (3 classes) is killed at some moment. Afterwards the
folder holds the complete old set or the complete new one (model.tflite's embedded labels == labels.txt ==
report.json's classes), the model loads, and the next run leaves no temp file. ``benchmarks/interrupt.py`` runs
the same check many times at random moments.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def link_flowers(flowers: Path, target: Path, classes: list[str], count: int) -> Path:
    """``target/<class>/`` with symlinks to the first ``count`` photos of each class."""
    for name in classes:
        (target / name).mkdir(parents=True)
        for image in sorted((flowers / name).iterdir())[:count]:
            (target / name / image.name).symlink_to(image)
    return target


def command(verb: str, data: Path, out: Path) -> list[str]:
    """The ``python -m lastlayer`` command line of a small run."""
    extra = ["--solver", "sgd", "--num-iter", "300"] if verb == "train" else ["--finetune"]
    return [sys.executable, "-m", "lastlayer", verb, str(data), "-o", str(out), *extra]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}


def run_and_kill(argv: list[str], signum: int, *, after_line: str | None = None, delay: float = 0.0) -> tuple[int, str]:
    """Start ``argv``, send ``signum`` ``delay`` seconds after ``after_line`` appeared on stderr (or after start)."""
    child = subprocess.Popen(argv, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    if after_line is not None:
        for line in child.stderr:
            seen.append(line)
            if after_line in line:
                break
    time.sleep(delay)
    if child.poll() is None:
        child.send_signal(signum)
    rest = child.stderr.read()
    child.wait(timeout=120)
    return child.returncode, "".join(seen) + rest


def folder_state(out: Path) -> tuple[str, ...]:
    """The classes the folder's set agrees on; raises AssertionError for a mixed or broken folder."""
    from lastlayer.model.labels import read_label_file
    from lastlayer.model.zoo import open_model

    model = open_model(out / "model.tflite")
    embedded = tuple(model.labels[i] for i in sorted(model.labels))
    listed = tuple(read_label_file(out / "labels.txt")[i] for i in range(len(embedded)))
    reported = tuple(json.loads((out / "report.json").read_text())["classes"])
    assert embedded == listed == reported, f"mixed folder: model {embedded}, labels.txt {listed}, report.json {reported}"
    return embedded


def leftovers(out: Path) -> list[str]:
    """Temp files and journals in ``out``."""
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


@pytest.fixture
def scene(datasets_dir: Path, tmp_path: Path) -> dict[str, Path]:
    flowers = datasets_dir / "flowers"
    old = link_flowers(flowers, tmp_path / "old", ["daisy", "roses"], 4)
    new = link_flowers(flowers, tmp_path / "new", ["daisy", "roses", "tulips"], 10)
    out = tmp_path / "out"
    done = subprocess.run(command("imprint", old, out), env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {"old": old, "new": new, "out": out}


OLD, NEW = ("daisy", "roses"), ("daisy", "roses", "tulips")


@pytest.mark.parametrize("verb, signum, after_line, delay", [
    ("train", signal.SIGINT, "images in", 0.0),
    ("train", signal.SIGTERM, "images in", 0.5),
    ("imprint", signal.SIGHUP, "images in", 0.2),
    ("imprint", signal.SIGKILL, "images in", 0.3),
    ("train", signal.SIGTERM, "iter", 0.0),
])
def test_an_interrupted_run_leaves_the_old_or_the_new_set(scene, verb, signum, after_line, delay):
    out = scene["out"]
    code, err = run_and_kill(command(verb, scene["new"], out), signum, after_line=after_line, delay=delay)
    assert "Traceback" not in err, err
    if code == -signum and signum != signal.SIGKILL:
        assert folder_state(out) == NEW  # the signal came after the work, while the interpreter shut down
    elif code != 0:
        expected = -signal.SIGKILL if signum == signal.SIGKILL else 128 + signum
        assert code == expected, err
        if signum != signal.SIGKILL:
            assert err.strip().splitlines()[-1] == f"lastlayer: interrupted ({signal.Signals(signum).name})"
    assert folder_state(out) in (OLD, NEW)
    done = subprocess.run(command("imprint", scene["new"], out), env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert folder_state(out) == NEW and leftovers(out) == []


def test_a_new_folder_is_not_created_by_an_interrupted_or_failing_run(scene, tmp_path):
    target = tmp_path / "fresh" / "out"
    code, err = run_and_kill(command("train", scene["new"], target), signal.SIGINT, after_line="images in")
    assert code in (0, 130) and "Traceback" not in err
    assert target.is_dir() or not (tmp_path / "fresh").exists()
    if target.is_dir():
        assert folder_state(target) == NEW and leftovers(target) == []


STUCK_WORKER = """
import sys, threading
import lastlayer.runtime.batch as batch

real = batch._run_chunk
calls = []

def stuck_after_the_first(*args):
    calls.append(1)
    if len(calls) > 1:
        sys.stderr.write("worker stuck\\n")
        sys.stderr.flush()
        threading.Event().wait()  # a worker that never finishes (as one waiting for a lock the signal left held)
    return real(*args)

batch._run_chunk = stuck_after_the_first
sys.argv = ["lastlayer"] + sys.argv[1:]
from lastlayer.cli import entry_point
entry_point()
"""


def test_an_interruption_never_waits_for_a_stuck_worker(scene):
    """A signal may leave a lock held that a worker waits for: the command still ends, with its exit code."""
    argv = [sys.executable, "-c", STUCK_WORKER, "imprint", str(scene["new"]), "-o", str(scene["out"]), "--no-cache"]
    child = subprocess.Popen(argv, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in child.stderr:
        seen.append(line)
        if "worker stuck" in line:
            break
    child.send_signal(signal.SIGTERM)
    try:
        rest = child.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail("the interrupted command waited for its stuck worker")
    err = "".join(seen) + rest
    assert child.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "lastlayer: interrupted (SIGTERM)" and "Traceback" not in err
    assert folder_state(scene["out"]) == OLD and leftovers(scene["out"]) == []
