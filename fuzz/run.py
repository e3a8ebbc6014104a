"""Fuzz lastlayer's model loading with mutations of real models, each run in a forked child.

    python fuzz/run.py --count 2000 --seed 0 --models /work/shared/models [--jobs 2] [--keep findings/]
    python fuzz/run.py --seed 0 --only 123 --models ...      # replay one case, in this process

Each mutant is written to a temporary file and a forked child runs it through what a user of
lastlayer would: ``load_model``, ``inspect_model(...).to_text()``, ``Interpreter`` with a zero image
and ``invoke``, ``cut_at_embedding`` (and loading its result again) and ``edgetpu.check_model``.
Outcomes, worst first: ``signal`` (the child died by a signal), ``timeout``, ``traceback`` (an
exception that is not a ``LastLayerError``), ``clean`` (a ``LastLayerError``) and ``ok``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a script: make ``fuzz`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz.mutate import Mutant, mutate, structural_ranges  # noqa: E402

OUTCOMES = ("ok", "clean", "traceback", "timeout", "signal")
STAGES = ("load", "inspect", "interpreter", "cut", "check")
# Small models first: the fuzzer spends its time on the graph, not on convolutions.
DEFAULT_WEIGHTS = {
    "model_invoking_error.tflite": 3,
    "mobilenet_quant_v1_224_head_layers.tflite": 4,
    "mobilenet_v1_0.25_128_quant.tflite": 4,
    "mobilenet_quant_v1_224_feature_layers_edgetpu.tflite": 1,
    "mobilenet_v1_0.5_160_quant.tflite": 1,
    "mobilenet_v2_1.0_224_quant.tflite": 1,
    "tf2_mobilenet_v2_1.0_224_ptq.tflite": 1,
    "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite": 1,
}


# ----------------------------------------------------------------------------------- child side
def _stages(path: str) -> list[tuple[str, Callable[[], object]]]:
    import numpy as np

    from lastlayer.edgetpu import check_model
    from lastlayer.model.io import load_model, model_to_bytes
    from lastlayer.model.surgery import cut_at_embedding
    from lastlayer.model.view import inspect_model
    from lastlayer.runtime import Interpreter

    def interpreter() -> None:
        interp = Interpreter(path, num_threads=1)
        width, height = interp.input_size
        interp.set_image(np.zeros((height, width, 3), dtype=np.uint8))
        interp.invoke()
        interp.output()

    def cut() -> None:
        model, _ = cut_at_embedding(load_model(path), None, path)
        load_model(model_to_bytes(model), source=f"{path} (cut)")

    return [
        ("load", lambda: load_model(path)),
        ("inspect", lambda: inspect_model(path).to_text()),
        ("interpreter", interpreter),
        ("cut", cut),
        ("check", lambda: check_model(path).to_text()),
    ]


def exercise(path: str, report: Callable[[tuple], None]) -> None:
    """Run every stage on ``path``; ``report`` receives ("stage", name) then ("done", name, outcome, detail)."""
    from lastlayer.errors import LastLayerError

    for name, stage in _stages(path):
        report(("stage", name))
        try:
            stage()
            report(("done", name, "ok", ""))
        except LastLayerError as exc:
            report(("done", name, "clean", str(exc)))
        except Exception as exc:  # a traceback the user would see: a finding
            frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
            report(("done", name, "traceback", "".join(frames[-4:]).strip()))


def _child(path: str, conn: multiprocessing.connection.Connection, memory_limit: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    except (ImportError, ValueError, OSError):
        pass
    exercise(path, conn.send)
    conn.close()


# ----------------------------------------------------------------------------------- parent side
@dataclass
class Case:
    number: int
    model: str
    description: str
    path: str
    stages: dict[str, tuple[str, str]] = field(default_factory=dict)
    outcome: str = "ok"
    detail: str = ""
    last_stage: str = ""


@dataclass
class Summary:
    cases: list[Case]
    seconds: float

    def count(self, outcome: str) -> int:
        return sum(c.outcome == outcome for c in self.cases)

    @property
    def findings(self) -> list[Case]:
        return [c for c in self.cases if c.outcome in ("traceback", "timeout", "signal")]

    def table(self) -> str:
        per_stage = Counter((stage, result[0]) for c in self.cases for stage, result in c.stages.items())
        header = f"{'stage':12}" + "".join(f"{o:>11}" for o in OUTCOMES)
        lines = [f"{len(self.cases)} mutations in {self.seconds:.1f} s", header, "-" * len(header)]
        for stage in STAGES:
            cells = [per_stage[(stage, o)] for o in OUTCOMES[:3]] + [
                sum(c.outcome == "timeout" and c.last_stage == stage for c in self.cases),
                sum(c.outcome == "signal" and c.last_stage == stage for c in self.cases),
            ]
            lines.append(f"{stage:12}" + "".join(f"{n:>11}" for n in cells))
        lines.append("-" * len(header))
        lines.append(f"{'case (worst)':12}" + "".join(f"{self.count(o):>11}" for o in OUTCOMES))
        return "\n".join(lines)


def _case_rng(seed: int, number: int) -> random.Random:
    return random.Random(f"lastlayer-fuzz:{seed}:{number}")


def build_cases(models: dict[str, bytes], count: int, seed: int, folder: Path, only: int | None = None) -> list[Case]:
    names = sorted(models)
    weights = [DEFAULT_WEIGHTS.get(n, 1) for n in names]
    ranges = {n: structural_ranges(models[n]) for n in names}
    cases = []
    numbers = [only] if only is not None else range(count)
    for number in numbers:
        rng = _case_rng(seed, number)
        name = rng.choices(names, weights=weights)[0]
        mutant: Mutant = mutate(models[name], rng, ranges[name])
        path = folder / f"case{number:05d}.tflite"
        path.write_bytes(mutant.data)
        cases.append(Case(number, name, mutant.description, str(path)))
    return cases


def _finish(case: Case, messages: list[tuple], exitcode: int | None, timed_out: bool) -> None:
    for message in messages:
        if message[0] == "stage":
            case.last_stage = message[1]
        else:
            _, stage, outcome, detail = message
            case.stages[stage] = (outcome, detail)
    worst = max((r[0] for r in case.stages.values()), key=OUTCOMES.index, default="ok")
    case.outcome, case.detail = worst, next((r[1] for r in case.stages.values() if r[0] == worst), "")
    if timed_out:
        case.outcome, case.detail = "timeout", f"in stage {case.last_stage}"
    elif exitcode is not None and exitcode < 0:
        case.outcome = "signal"
        case.detail = f"{signal.Signals(-exitcode).name} in stage {case.last_stage}"
    elif exitcode not in (0, None):
        case.outcome, case.detail = "signal", f"child exited with status {exitcode} in stage {case.last_stage}"


def run_cases(cases: list[Case], jobs: int = 2, timeout: float = 30.0, memory_limit: int = 8 << 30) -> None:
    context = multiprocessing.get_context("fork")
    pending = list(cases)
    running: dict[int, tuple[Case, multiprocessing.Process, multiprocessing.connection.Connection, float, list]] = {}
    while pending or running:
        while pending and len(running) < jobs:
            case = pending.pop(0)
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_child, args=(case.path, sender, memory_limit), daemon=True)
            process.start()
            sender.close()
            running[case.number] = (case, process, receiver, time.monotonic(), [])
        waitables = [entry[2] for entry in running.values()] + [entry[1].sentinel for entry in running.values()]
        multiprocessing.connection.wait(waitables, timeout=0.2)
        for number in list(running):
            case, process, receiver, started, messages = running[number]
            try:
                while receiver.poll():
                    messages.append(receiver.recv())
            except (EOFError, OSError):
                pass
            timed_out = time.monotonic() - started > timeout
            if process.is_alive() and not timed_out:
                continue
            killed = process.is_alive()
            if killed:
                process.kill()
            process.join()
            try:
                while receiver.poll():
                    messages.append(receiver.recv())
            except (EOFError, OSError):
                pass
            receiver.close()
            _finish(case, messages, process.exitcode, killed)
            del running[number]


def load_models(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tflite"))}


def fuzz(models_dir: Path, count: int, seed: int, jobs: int = 2, timeout: float = 30.0,
         keep: Path | None = None, only: int | None = None) -> Summary:
    models = load_models(models_dir)
    if not models:
        raise SystemExit(f"no .tflite models in {models_dir}")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lastlayer-fuzz-") as tmp:
        cases = build_cases(models, count, seed, Path(tmp), only)
        run_cases(cases, jobs=jobs, timeout=timeout)
        summary = Summary(cases, time.monotonic() - start)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for case in summary.findings:
                target = keep / f"seed{seed}-case{case.number:05d}-{case.outcome}.tflite"
                target.write_bytes(Path(case.path).read_bytes())
                target.with_suffix(".txt").write_text(f"{case.model}: {case.description}\n{case.detail}\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("LASTLAYER_MODELS", "../shared/models").split(os.pathsep)[0]))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per mutant")
    parser.add_argument("--keep", type=Path, help="copy crashing mutants (and what was done to them) here")
    parser.add_argument("--only", type=int, help="replay one case number, in this process, with tracebacks")
    args = parser.parse_args(argv)
    if args.only is not None:
        with tempfile.TemporaryDirectory(prefix="lastlayer-fuzz-") as tmp:
            case = build_cases(load_models(args.models), 0, args.seed, Path(tmp), args.only)[0]
            print(f"case {case.number}: {case.model}: {case.description}", flush=True)
            exercise(case.path, lambda message: print(*message, sep="  ", flush=True))
        return 0
    summary = fuzz(args.models, args.count, args.seed, args.jobs, args.timeout, args.keep)
    for case in summary.findings:
        print(f"[{case.outcome}] case {case.number} ({case.model}): {case.description}\n    {case.detail}".rstrip())
    print(summary.table())
    return 1 if summary.findings else 0


if __name__ == "__main__":
    sys.exit(main())
