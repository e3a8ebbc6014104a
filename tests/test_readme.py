"""The README's Python examples run as written (extracted from the README, so they cannot drift)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import ROOT

ALL_BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
# A block that starts with this comment needs hardware; tests/teach runs the same calls on a generated video.
BLOCKS = [block for block in ALL_BLOCKS if not block.startswith("# needs a camera")]


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 2 and len(ALL_BLOCKS) - len(BLOCKS) == 1


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, models_dir):
    code = BLOCKS[index]
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"README block {index} failed:\n{code}\n{done.stderr}"
