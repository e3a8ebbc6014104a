"""The package builds as a wheel that works outside the repository (static web files included)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import EXTRACTOR, ROOT

pytestmark = pytest.mark.shared


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)


def test_wheel_installs_into_a_fresh_environment_and_runs(tmp_path, models_dir, images_dir):
    built = _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")])
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("lastlayer-*.whl"))
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    python = venv / "bin" / "python"
    installed = _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    assert installed.returncode == 0, installed.stderr
    # The dependencies come from the development environment (no network here); lastlayer itself only from the wheel.
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "LASTLAYER_MODELS": str(models_dir), "PYTHONPATH": ""}
    where = _run([str(python), "-c", "import lastlayer, pathlib; print(pathlib.Path(lastlayer.__file__).parent)"], cwd=outside, env=env)
    package = Path(where.stdout.strip())
    assert package.is_relative_to(venv) and (package / "serve" / "static" / "index.html").is_file()
    lastlayer = str(venv / "bin" / "lastlayer")
    helped = _run([lastlayer, "--help"], cwd=outside, env=env)
    assert helped.returncode == 0 and "imprint" in helped.stdout
    classified = _run([lastlayer, "classify", str(images_dir / "cat.bmp"), "--top-k", "1"], cwd=outside, env=env)
    assert classified.returncode == 0 and "Egyptian cat" in classified.stdout, classified.stderr
    data = outside / "data"
    for name in ("cat", "dog", "hotdog"):
        (data / name).mkdir(parents=True)
        for image in images_dir.glob(f"imprinting/{name}_*.bmp"):
            (data / name / image.name).symlink_to(image)
    imprinted = _run([lastlayer, "imprint", str(data), "-m", EXTRACTOR, "-o", str(outside / "out"), "--test-ratio", "0", "-q"],
                     cwd=outside, env=env)
    assert imprinted.returncode == 0, imprinted.stderr
    assert (outside / "out" / "model.tflite").is_file() and (outside / "out" / "labels.txt").read_text().split()[1::2] == [
        "cat", "dog", "hotdog"]
