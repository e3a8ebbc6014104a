"""Start-up stays light: ``import lastlayer`` and ``lastlayer --help`` load no LiteRT, Pillow, NumPy or matplotlib."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("ai_edge_litert", "PIL", "numpy", "matplotlib", "cv2")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_import_lastlayer_is_light():
    assert _loaded_after("import lastlayer") == []


def test_help_is_light_and_lists_each_command_once():
    assert _loaded_after("from lastlayer.cli import build_parser\nbuild_parser().format_help()") == []
    text = subprocess.run([sys.executable, "-m", "lastlayer", "--help"], capture_output=True, text=True, check=True).stdout
    for verb in ("classify", "train", "imprint", "evaluate", "inspect", "cut", "join", "check", "demo"):
        assert sum(line.split()[0] == verb for line in text.splitlines() if line.strip()) == 1, verb


def test_lazy_names_resolve_to_the_real_objects():
    import lastlayer
    from lastlayer.learn.softmax import SoftmaxRegression

    assert lastlayer.SoftmaxRegression is SoftmaxRegression
    assert all(hasattr(lastlayer, name) for name in lastlayer.__all__)


def test_constants_the_cli_needs_while_parsing_are_the_librarys_own():
    from lastlayer.cli import check, common
    from lastlayer.model.edgetpu import LATEST_RUNTIME
    from lastlayer.model.heads import OUTPUT_TYPES

    assert check.LATEST_RUNTIME is LATEST_RUNTIME and common.OUTPUT_TYPES is OUTPUT_TYPES
