"""Crashing models stay fixed, and a short seeded fuzz run finds no traceback and no crash.

Both run the models in forked children (``fuzz/run.py``), so a regression shows as a failed test
with the signal's name instead of killing the test session.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from fuzz.regressions import REGRESSIONS, build  # noqa: E402
from fuzz.run import FINDINGS, STAGES, Case, Workspace, fuzz, run_cases  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the fuzz harness forks")


@pytest.mark.parametrize("case", REGRESSIONS, ids=lambda c: c.name)
def test_regression_is_a_clean_model_error(models_dir, case, tmp_path):
    """Every command on a once-crashing model: the loader's one-line error, or (a valid model) no finding."""
    path = tmp_path / "case" / f"{case.name}.tflite"
    path.parent.mkdir()
    path.write_bytes(build(case, models_dir))
    run = Case(0, case.model or "-", case.name, str(path))
    run_cases([run], Workspace.create(tmp_path), jobs=1, timeout=120)
    outcomes = {stage: result[0] for stage, result in run.stages.items()}
    assert run.outcome not in FINDINGS, f"{case.name}: {run.outcome} {run.detail}"
    if case.expect is None:
        assert outcomes["load"] == "ok" and set(outcomes) == set(STAGES), outcomes
        return
    assert outcomes == dict.fromkeys(STAGES, "clean")
    message = run.stages["load"][1]
    assert str(path) in message and re.search(case.expect, message), message
    assert "\n" not in message
    for stage in STAGES[1:-1]:  # each command's one line names the file too
        assert str(path) in run.stages[stage][1], run.stages[stage]


@pytest.mark.parametrize(("count", "accepted_only"), [(60, False), (40, True)], ids=["any mutant", "accepted mutants"])
def test_short_fuzz_run_has_no_traceback_and_no_crash(models_dir, count, accepted_only):
    """Every command on mutants of the shared models and seeds; with ``accepted_only``, on mutants the validator
    accepts (where native crashes would hide): each must end ok or in one clean line, within the memory budget."""
    summary = fuzz(models_dir, count=count, seed=20240607, jobs=2, timeout=60, accepted_only=accepted_only)
    findings = "\n".join(f"[{c.outcome}] case {c.number} ({c.model}): {c.description}: {c.detail}" for c in summary.findings)
    assert not summary.findings, f"{summary.table()}\n{findings}"
    assert summary.count("clean") > 0 and summary.count("ok") > 0, summary.table()
    assert len(summary.cases) == count, summary.table()
    if accepted_only:
        assert sum(c.stages["load"][0] == "ok" for c in summary.cases) > count // 2, summary.table()


def _one_case(models_dir, tmp_path, name: str = "mobilenet_v1_0.25_128_quant.tflite") -> Case:
    path = tmp_path / "case" / "model.tflite"
    path.parent.mkdir()
    path.write_bytes((models_dir / name).read_bytes())
    return Case(0, name, "unchanged", str(path))


def _big_case(tmp_path) -> Case:
    """A valid model with 512 MiB of tensors alive at once ([1, 1024, 1024, 64] float through RELUs)."""
    from lastlayer.model.io import model_to_bytes
    from model.test_validate_memory import relu_chain

    path = tmp_path / "case" / "model.tflite"
    path.parent.mkdir()
    path.write_bytes(model_to_bytes(relu_chain(1024)))
    return Case(0, "relu chain", "unchanged", str(path))


def test_a_child_that_hits_its_memory_limit_is_a_finding(tmp_path):
    case = _big_case(tmp_path)
    status = Path("/proc/self/status").read_text()
    mapped = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmSize"))) * 1024
    run_cases([case], Workspace.create(tmp_path), jobs=1, timeout=60, memory_limit=mapped + (128 << 20))
    assert case.outcome == "memory", (case.outcome, case.detail, case.stages)


def test_a_child_whose_peak_passes_the_budget_is_a_finding(tmp_path):
    case = _big_case(tmp_path)
    run_cases([case], Workspace.create(tmp_path), jobs=1, timeout=120, budget=256 << 20)
    assert case.outcome == "memory" and "over the budget 256 MiB" in case.detail, (case.outcome, case.detail)


def test_a_child_that_runs_out_of_time_is_a_finding(models_dir, tmp_path):
    case = _one_case(models_dir, tmp_path)
    run_cases([case], Workspace.create(tmp_path), jobs=1, timeout=0.05)
    assert case.outcome == "timeout" and case.outcome in FINDINGS, (case.outcome, case.detail)


def test_the_same_model_within_its_limits_is_fine(models_dir, tmp_path):
    case = _one_case(models_dir, tmp_path)
    run_cases([case], Workspace.create(tmp_path), jobs=1, timeout=120)
    assert case.outcome == "ok", (case.outcome, case.detail, case.stages)
