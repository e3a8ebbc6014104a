"""Fuzz lastlayer with mutations of real models, each run in a forked child under a memory and a time limit.

    python fuzz/run.py --count 3000 --seed 0 --models /work/shared/models [--jobs 2] [--keep findings/]
    python fuzz/run.py --count 500 --accepted-only ...    # only mutants the validator accepts
    python fuzz/run.py --sweep-operators ...              # every builtin operator code, on two models
    python fuzz/run.py --seed 0 --only 123 ...            # replay one case, in this process

Seeds: the shared models plus float networks and models lastlayer writes (``fuzz/seeds.py``). Each
mutant goes where a user takes a model: ``load_model``; the commands ``inspect``, ``check``,
``classify``, ``cut``, ``imprint`` and ``train`` (``lastlayer.cli.main`` in the child, on a tiny
dataset); and ``lastlayer.pycoral``'s ``make_interpreter`` + ``allocate_tensors`` + ``invoke``.

Outcomes per stage, worst first: ``signal`` (the child died by a signal or exited oddly),
``memory`` (the address-space limit was hit, or the child's peak memory passed the budget: the
validator's model-memory bound plus 1 GiB), ``timeout``, ``traceback`` (an exception out of the
library), ``internal`` (the CLI's "internal error" line), ``warning`` (a Python warning that is not
one of lastlayer's, e.g. NumPy's), ``clean`` (a one-line error) and ``ok``. Everything from
``warning`` up is a finding. With ``--accepted-only`` a case keeps mutating (up to 50 tries) until
lastlayer's validator accepts the model: where the crashes hide.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a script: make ``fuzz`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz.mutate import Mutant, mutate, structural_ranges  # noqa: E402

OUTCOMES = ("ok", "clean", "warning", "internal", "traceback", "timeout", "memory", "signal")
FINDINGS = OUTCOMES[2:]
STAGES = ("load", "inspect", "check", "classify", "cut", "imprint", "train", "pycoral")
MEMORY_LIMIT = 8 << 30  # RLIMIT_AS of a child (address space, larger than the memory it touches)
# Small models first: the fuzzer spends its time on the graph, not on convolutions.
DEFAULT_WEIGHTS = {
    "model_invoking_error.tflite": 2,
    "mobilenet_quant_v1_224_head_layers.tflite": 4,
    "mobilenet_v1_0.25_128_quant.tflite": 4,
    "float:v3_block_nchw.tflite": 5,
    "float:mobilenet_v1_0.25_128.tflite": 2,
    "written:train_float32_on_float_extractor.tflite": 2,
}
_MEMORY_SIGNS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "out of memory", "Failed to allocate",
                 "can't start new thread", "failed to map segment",
                 ": RuntimeError;")  # LiteRT's allocate_tensors says nothing more when its arena cannot be had


# ----------------------------------------------------------------------------------- child side
@dataclass
class Workspace:
    """What the child's commands read and write: an image, a 2-class dataset, an output folder."""

    root: Path

    @property
    def image(self) -> str:
        return str(self.root / "image.png")

    @property
    def dataset(self) -> str:
        return str(self.root / "data")

    @classmethod
    def create(cls, root: Path) -> Workspace:
        from PIL import Image

        for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            folder = root / "data" / name
            folder.mkdir(parents=True, exist_ok=True)
            for shade in range(2):
                Image.new("RGB", (40, 32), tuple(c + 20 * shade for c in colour)).save(folder / f"{shade}.png")
        Image.new("RGB", (40, 32), (90, 140, 60)).save(root / "image.png")
        return cls(root)


def _cli(argv: list[str], stage: str) -> tuple[str, str]:
    """Run one ``lastlayer`` command in this process; its outcome and the line that tells it."""
    from lastlayer import cli

    captured = io.StringIO()
    foreign: list[str] = []

    def record(message: Warning | str, category: type, *rest: object) -> None:
        if not category.__module__.startswith("lastlayer"):
            foreign.append(f"{category.__name__}: {message}")

    shown, cli._show_warning = cli._show_warning, record  # the CLI shows warnings through this hook
    try:
        with contextlib.redirect_stderr(captured):
            code = cli.main(argv)
    finally:
        cli._show_warning = shown
    lines = captured.getvalue().strip().splitlines()
    last = lines[-1] if lines else ""
    errors = [line for line in lines if line.startswith("lastlayer: error: ")]
    if foreign:
        return "warning", foreign[0]
    if "Traceback" in captured.getvalue():
        return "traceback", captured.getvalue()[-600:]
    if code == 0 or (stage == "check" and code == 1 and not errors):  # check: 1 = does not map fully
        return "ok", ""
    if errors and "internal error" in errors[-1]:
        return ("memory" if any(sign in errors[-1] for sign in _MEMORY_SIGNS) else "internal"), errors[-1]
    if code == 1 and len(errors) == 1 and errors[0] == last:
        return "clean", last
    return "internal", f"exit {code}: {last}"


def _stages(path: str, work: Workspace) -> list[tuple[str, Callable[[], tuple[str, str] | None]]]:
    def load() -> None:
        from lastlayer.model.io import load_model

        load_model(path)

    def pycoral() -> tuple[str, str] | None:
        import numpy as np

        from lastlayer.pycoral.utils.edgetpu import make_interpreter

        interpreter = make_interpreter(path)
        try:
            interpreter.allocate_tensors()
            for detail in interpreter.get_input_details():
                interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
            interpreter.invoke()
        except (RuntimeError, ValueError) as exc:  # LiteRT's own clean errors, as PyCoral passes them on
            return "clean", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None

    out = str(work.root / "out")
    return [
        ("load", load),
        ("inspect", lambda: _cli(["inspect", path], "inspect")),
        ("check", lambda: _cli(["check", path, "--quiet"], "check")),
        ("classify", lambda: _cli(["classify", "-m", path, work.image, "--quiet", "--threads", "1"], "classify")),
        ("cut", lambda: _cli(["cut", path, "-o", f"{out}/cut.tflite"], "cut")),
        ("imprint", lambda: _cli(["imprint", work.dataset, "-m", path, "-o", f"{out}/imprint", "--no-cache", "--quiet"],
                                 "imprint")),
        ("train", lambda: _cli(["train", work.dataset, "-e", path, "-o", f"{out}/train", "--no-cache", "--quiet",
                                "--solver", "sgd", "--num-iter", "3", "--val-ratio", "0"], "train")),
        ("pycoral", pycoral),
    ]


def exercise(path: str, work: Workspace, report: Callable[[tuple], None]) -> None:
    """Run every stage on ``path``; ``report`` receives ("stage", name) then ("done", name, outcome, detail)."""
    from lastlayer.errors import LastLayerError

    (work.root / "out").mkdir(exist_ok=True)
    for name, stage in _stages(path, work):
        report(("stage", name))
        try:
            with warnings.catch_warnings(record=True) as caught:  # (the CLI stages show theirs through their own hook)
                warnings.simplefilter("always")
                result = stage()
            outcome, detail = result if result is not None else ("ok", "")
            foreign = [w for w in caught if not w.category.__module__.startswith("lastlayer")]
            if foreign and outcome in ("ok", "clean"):
                outcome, detail = "warning", f"{foreign[0].category.__name__}: {foreign[0].message}"
            if outcome in ("clean", "internal") and any(sign in detail for sign in _MEMORY_SIGNS):
                outcome = "memory"  # a clean line, but about the limit the child hit
        except LastLayerError as exc:
            outcome, detail = "clean", str(exc)
        except MemoryError as exc:
            outcome, detail = "memory", f"MemoryError: {exc}"
        except Exception as exc:  # a traceback the user would see: a finding
            frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
            outcome, detail = "traceback", "".join(frames[-4:]).strip()
        report(("done", name, outcome, detail))


def _peak_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _child(path: str, work: Workspace, conn: multiprocessing.connection.Connection, memory_limit: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    errors = os.open(work.root / "stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(devnull, 1)
    os.dup2(errors, 2)  # native messages ("free(): invalid next size") tell what killed a child
    os.environ["LASTLAYER_CACHE"] = str(work.root / "cache")
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    except (ImportError, ValueError, OSError):
        pass
    exercise(path, work, conn.send)
    conn.send(("peak", _peak_bytes()))
    conn.close()


def _preload() -> None:
    """Import what the children run before forking them, so that each child starts at once."""
    import numpy  # noqa: F401
    from ai_edge_litert import interpreter  # noqa: F401

    import lastlayer.cli
    import lastlayer.pycoral.utils.edgetpu  # noqa: F401

    for verb in ("inspect", "check", "classify", "cut", "imprint", "train"):
        module = lastlayer.cli._verb(verb)
        del module


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
    peak: int = 0


@dataclass
class Summary:
    cases: list[Case]
    seconds: float
    accepted_only: bool = False

    def count(self, outcome: str) -> int:
        return sum(c.outcome == outcome for c in self.cases)

    @property
    def findings(self) -> list[Case]:
        return [c for c in self.cases if c.outcome in FINDINGS]

    def table(self) -> str:
        per_stage = Counter((stage, result[0]) for c in self.cases for stage, result in c.stages.items())
        killed = Counter((c.last_stage, c.outcome) for c in self.cases if c.outcome in ("timeout", "signal")
                         and c.last_stage not in c.stages)
        header = f"{'stage':10}" + "".join(f"{o:>10}" for o in OUTCOMES)
        mode = " (accepted-only: every mutant passed the validator)" if self.accepted_only else ""
        peak = max((c.peak for c in self.cases), default=0)
        lines = [f"{len(self.cases)} mutations in {self.seconds:.1f} s{mode}; largest child peak {peak / 2**20:,.0f} MiB",
                 header, "-" * len(header)]
        for stage in STAGES:
            lines.append(f"{stage:10}" + "".join(f"{per_stage[(stage, o)] + killed[(stage, o)]:>10}" for o in OUTCOMES))
        lines.append("-" * len(header))
        lines.append(f"{'case':10}" + "".join(f"{self.count(o):>10}" for o in OUTCOMES))
        return "\n".join(lines)


def _case_rng(seed: int, number: int) -> random.Random:
    return random.Random(f"lastlayer-fuzz:{seed}:{number}")


def accepted(data: bytes) -> bool:
    """Whether lastlayer's validator accepts ``data`` (pure Python: no native code runs in the parent)."""
    from ai_edge_litert import schema_py_generated as schema

    from lastlayer.errors import LastLayerError
    from lastlayer.model.validate import validate_model

    try:
        validate_model(schema.ModelT.InitFromPackedBuf(data, 0), "mutant", file_size=len(data))
    except LastLayerError:
        return False
    except Exception:  # unparsable
        return False
    return True


def build_cases(models: dict[str, bytes], count: int, seed: int, folder: Path, only: int | None = None,
                accepted_only: bool = False, tries: int = 50) -> list[Case]:
    names = sorted(models)
    weights = [DEFAULT_WEIGHTS.get(n, 1) for n in names]
    ranges = {n: structural_ranges(models[n]) for n in names}
    cases = []
    numbers = [only] if only is not None else range(count)
    for number in numbers:
        rng = _case_rng(seed, number)
        for _ in range(tries if accepted_only else 1):
            name = rng.choices(names, weights=weights)[0]
            mutant: Mutant = mutate(models[name], rng, ranges[name])
            if not accepted_only or accepted(mutant.data):
                break
        else:
            continue  # no accepted mutant in this many tries: the case is skipped
        case_dir = folder / f"case{number:05d}"
        case_dir.mkdir()
        path = case_dir / "model.tflite"
        path.write_bytes(mutant.data)
        cases.append(Case(number, name, mutant.description, str(path)))
    return cases


SWEEP_MODELS = ("mobilenet_quant_v1_224_head_layers.tflite", "float:v3_block_nchw.tflite")


def sweep_cases(models: dict[str, bytes], folder: Path) -> list[Case]:
    """Every builtin operator code on the first and on the last operator of a uint8 and a float model."""
    from fuzz.mutate import pack, parse
    from fuzz.structural_edits import BUILTIN_CODES

    cases = []
    for name in (n for n in SWEEP_MODELS if n in models):
        for code in BUILTIN_CODES:
            for position in (0, -1):
                model = parse(models[name])
                entry = schema_operator_code(code)
                model.operatorCodes = list(model.operatorCodes) + [entry]
                model.subgraphs[0].operators[position].opcodeIndex = len(model.operatorCodes) - 1
                number = len(cases)
                case_dir = folder / f"case{number:05d}"
                case_dir.mkdir()
                (case_dir / "model.tflite").write_bytes(pack(model))
                cases.append(Case(number, name, f"operator {position} -> builtin {code}", str(case_dir / "model.tflite")))
    return cases


def schema_operator_code(code: int) -> object:
    from ai_edge_litert import schema_py_generated as schema

    entry = schema.OperatorCodeT()
    entry.builtinCode, entry.deprecatedBuiltinCode, entry.version = code, min(code, 127), 1
    return entry


def _memory_budget() -> int:
    try:
        from lastlayer.model.validate import max_model_memory
    except ImportError:  # a lastlayer from before the memory bound (replaying old crashes)
        return 3 << 30
    return max_model_memory() + (1 << 30)


def _finish(case: Case, messages: list[tuple], exitcode: int | None, timed_out: bool, budget: int) -> None:
    for message in messages:
        if message[0] == "stage":
            case.last_stage = message[1]
        elif message[0] == "peak":
            case.peak = int(message[1])
        else:
            _, stage, outcome, detail = message
            case.stages[stage] = (outcome, detail)
    worst = max((r[0] for r in case.stages.values()), key=OUTCOMES.index, default="ok")
    case.outcome, case.detail = worst, next((r[1] for r in case.stages.values() if r[0] == worst), "")
    native = (Path(case.path).parent / "stderr.txt")
    said = native.read_text(errors="replace").strip().splitlines()[-1:] if native.exists() else []
    if case.peak > budget and OUTCOMES.index(case.outcome) < OUTCOMES.index("memory"):
        case.outcome, case.detail = "memory", f"peak {case.peak / 2**20:,.0f} MiB over the budget {budget / 2**20:,.0f} MiB"
    if timed_out:
        case.outcome, case.detail = "timeout", f"in stage {case.last_stage}"
    elif exitcode is not None and exitcode != 0:
        name = signal.Signals(-exitcode).name if exitcode < 0 else f"exit status {exitcode}"
        hit_limit = any(sign in " ".join(said) for sign in _MEMORY_SIGNS)
        case.outcome = "memory" if hit_limit else "signal"
        case.detail = f"{name} in stage {case.last_stage}" + (f": {said[0][:200]}" if said else "")


def run_cases(cases: list[Case], work: Workspace, jobs: int = 2, timeout: float = 60.0, memory_limit: int = MEMORY_LIMIT,
              budget: int | None = None) -> None:
    """Run each case in a forked child (``jobs`` at a time) under ``memory_limit`` bytes of address space and
    ``timeout`` seconds; a peak above ``budget`` (default: the validator's bound + 1 GiB) is a memory finding."""
    _preload()
    budget = budget or _memory_budget()
    context = multiprocessing.get_context("fork")
    pending = list(cases)
    running: dict[int, tuple[Case, multiprocessing.Process, multiprocessing.connection.Connection, float, list]] = {}
    while pending or running:
        while pending and len(running) < jobs:
            case = pending.pop(0)
            receiver, sender = context.Pipe(duplex=False)
            case_work = Workspace(Path(case.path).parent)
            for link in ("data", "image.png"):
                if not (case_work.root / link).exists():
                    (case_work.root / link).symlink_to(work.root / link)
            process = context.Process(target=_child, args=(case.path, case_work, sender, memory_limit), daemon=True)
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
            _finish(case, messages, process.exitcode, killed, budget)
            del running[number]


def load_models(folder: Path, seeds: bool = True) -> dict[str, bytes]:
    """The shared models in ``folder`` and (``seeds``) the seeds built from them."""
    models = {p.name: p.read_bytes() for p in sorted(folder.glob("*.tflite"))}
    if seeds and models:
        from fuzz.seeds import seed_models

        models.update(seed_models(folder))
    return models


def fuzz(models_dir: Path, count: int, seed: int, jobs: int = 2, timeout: float = 60.0, keep: Path | None = None,
         only: int | None = None, accepted_only: bool = False, memory_limit: int = MEMORY_LIMIT, sweep: bool = False) -> Summary:
    models = load_models(models_dir)
    if not models:
        raise SystemExit(f"no .tflite models in {models_dir}")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lastlayer-fuzz-") as tmp:
        work = Workspace.create(Path(tmp))
        cases = sweep_cases(models, Path(tmp)) if sweep else build_cases(models, count, seed, Path(tmp), only, accepted_only)
        run_cases(cases, work, jobs=jobs, timeout=timeout, memory_limit=memory_limit)
        summary = Summary(cases, time.monotonic() - start, accepted_only)
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
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per mutant (all stages)")
    parser.add_argument("--memory-limit", type=float, default=MEMORY_LIMIT / 2**30, help="GiB of address space per child")
    parser.add_argument("--accepted-only", action="store_true", help="keep only mutants the validator accepts")
    parser.add_argument("--sweep-operators", action="store_true",
                        help="instead of random mutants: every builtin operator code on the first and last operator of two models")
    parser.add_argument("--keep", type=Path, help="copy the mutants of findings (and what was done to them) here")
    parser.add_argument("--only", type=int, help="replay one case number, in this process, with tracebacks")
    args = parser.parse_args(argv)
    if args.only is not None:
        with tempfile.TemporaryDirectory(prefix="lastlayer-fuzz-") as tmp:
            work = Workspace.create(Path(tmp))
            cases = build_cases(load_models(args.models), 0, args.seed, Path(tmp), args.only, args.accepted_only)
            if not cases:
                print(f"case {args.only}: no accepted mutant")
                return 0
            case = cases[0]
            print(f"case {case.number}: {case.model}: {case.description}", flush=True)
            exercise(case.path, work, lambda message: print(*message, sep="  ", flush=True))
        return 0
    summary = fuzz(args.models, args.count, args.seed, args.jobs, args.timeout, args.keep,
                   accepted_only=args.accepted_only, memory_limit=int(args.memory_limit * 2**30), sweep=args.sweep_operators)
    for case in summary.findings:
        print(f"[{case.outcome}] case {case.number} ({case.model}): {case.description}\n    {case.detail}".rstrip())
    print(summary.table())
    return 1 if summary.findings else 0


if __name__ == "__main__":
    sys.exit(main())
