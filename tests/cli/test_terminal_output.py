"""Output meant for logs: no progress-bar redraws when stderr is not a terminal, one line per warning."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import EXTRACTOR

pytestmark = pytest.mark.shared


def test_a_logged_run_has_no_carriage_returns_and_warnings_on_their_own_lines(tmp_path, images_dir, models_dir):
    data = tmp_path / "data"
    for name in ("cat", "dog", "hotdog"):
        (data / name).mkdir(parents=True)
        for image in images_dir.glob(f"imprinting/{name}_*.bmp"):
            (data / name / image.name).symlink_to(image)
    (data / "dog" / "notes.txt").write_text("not an image")
    done = subprocess.run([sys.executable, "-m", "lastlayer", "imprint", str(data), "-m", EXTRACTOR, "-o", str(tmp_path / "out"),
                           "--test-ratio", "0"], capture_output=True, env={**os.environ, "LASTLAYER_MODELS": str(models_dir)},
                          timeout=300)  # bytes: text mode would turn the "\r" of a progress bar into "\n"
    stderr = done.stderr.decode("utf-8")
    assert done.returncode == 0, stderr
    assert "\r" not in stderr and "\x1b[" not in stderr
    warnings = [line for line in stderr.splitlines() if "warning" in line]
    assert warnings and all(line.startswith("lastlayer: warning: ") for line in warnings)
    quiet = subprocess.run([sys.executable, "-m", "lastlayer", "imprint", str(data), "-m", EXTRACTOR, "-o", str(tmp_path / "out2"),
                            "--test-ratio", "0", "--quiet"], capture_output=True, text=True,
                           env={**os.environ, "LASTLAYER_MODELS": str(models_dir)}, timeout=300)
    assert quiet.returncode == 0 and "images in" not in quiet.stderr and len(quiet.stdout.splitlines()) == 2
