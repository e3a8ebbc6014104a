"""Install lines that work as written: the README's shell lines and the hints for a missing extra.

lastlayer is installed from a wheel or a checkout, not from an index, so ``pip install 'lastlayer[camera]'``
fails; the hints name the extra's own packages, which install the same way everywhere. A quoted glob
(``'dist/lastlayer-*.whl[camera]'``) is not expanded by the shell, so none may appear in a command.
"""

from __future__ import annotations

import re
import shlex
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

import pytest

from lastlayer.serve import WEB_EXTRA_HINT
from lastlayer.sources.opencv import MISSING_OPENCV

from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
SHELL_LINES = [line.split("  #")[0].strip() for block in re.findall(r"```\n(.*?)```", README, flags=re.S)
               for line in block.splitlines() if line.strip() and not line.startswith("#")]


def _extra(name: str) -> set[str]:
    if tomllib is None:
        pytest.skip("reading pyproject.toml needs Python 3.11's tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {re.split(r"[<>=!~ \[]", requirement)[0] for requirement in extras[name]}


@pytest.mark.parametrize(("hint", "extra"), [(WEB_EXTRA_HINT, "web"), (MISSING_OPENCV, "camera")])
def test_a_missing_extra_hint_installs_the_extras_own_packages(hint, extra):
    command = hint.split("pip install ", 1)[1].split(";")[0].split(" (")[0]
    assert set(command.split()) == _extra(extra) and "lastlayer[" not in hint


def test_no_readme_command_quotes_a_glob_or_installs_lastlayer_from_an_index():
    commands = [line for line in SHELL_LINES if " install " in f" {line} "]
    assert len(commands) >= 4
    for line in commands:
        words = shlex.split(line, comments=True)
        quoted = re.findall(r"'([^']*)'|\"([^\"]*)\"", line)
        assert not any(set("*?") & set(a + b) for a, b in quoted), f"a quoted glob is not expanded: {line}"
        assert not any(re.fullmatch(r"lastlayer\[.*\]", word) for word in words), f"lastlayer is on no index: {line}"
