"""``lastlayer teach`` in a real pseudo-terminal, typed at as a person does: names with ``q`` and spaces, Esc, rename, delete.

The process runs under ``pty.fork`` (a real terminal for it: cbreak mode, no echo of its own), and the test
reads what it draws. Waits end on what appears, with a generous timeout; nothing is timed.
"""

from __future__ import annotations

import os
import pty
import re
import select
import sys
import termios
import time
from pathlib import Path

import pytest

from lastlayer.cli.terminal import ESCAPE, split_keys
from lastlayer.images.render import write_image_folder
from lastlayer.teach.session import TeachingSession

from conftest import EXTRACTOR

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class Terminal:
    """A command in a pseudo-terminal: type into it, wait for what it shows."""

    def __init__(self, argv: list[str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the command, with the pty as its terminal
            os.execv(sys.executable, [sys.executable, "-m", "lastlayer", *argv])
        self.shown = ""
        self.code: int | None = None

    def _pump(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # the child closed the terminal
            return False
        self.shown += data.decode("utf-8", errors="replace")
        return bool(data)

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        """Until the screen's text (escapes left out) holds ``text``."""
        deadline = time.monotonic() + timeout
        while text not in self.text:
            if time.monotonic() > deadline or not self._pump(0.1):
                if text in self.text:
                    return
                pytest.fail(f"the terminal never showed {text!r}; it showed: {self.text[-1500:]!r}")

    @property
    def text(self) -> str:
        return ANSI.sub("", self.shown)

    def type(self, keys: str, each: float = 0.02) -> None:
        """Type ``keys`` one by one, like a person (``each`` seconds apart, reading the screen meanwhile)."""
        for key in keys:
            os.write(self.fd, key.encode())
            self._pump(each)

    def send(self, data: str) -> None:
        """Send ``data`` in one write (a paste, or keys typed faster than they are read)."""
        os.write(self.fd, data.encode())

    def modes(self) -> list:
        return termios.tcgetattr(self.fd)

    def finish(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                while self._pump(0.05) and self._pump(0.05):
                    pass
                self.code = os.waitstatus_to_exitcode(status)
                return self.code
            self._pump(0.05)
        os.kill(self.pid, 9)
        pytest.fail(f"the command did not end; it showed: {self.text[-1500:]!r}")


@pytest.fixture
def gears(tmp_path: Path) -> Path:
    folder = tmp_path / "gears"
    write_image_folder(folder, [("gear", 4)])
    return folder


def _teach(state: Path, source: Path, model: Path) -> Terminal:
    return Terminal(["teach", "--state", str(state), "--source", str(source), "--loop", "--model", str(model)])


@pytest.mark.shared
def test_a_name_with_q_and_spaces_typed_in_a_terminal_is_kept_and_found_after_a_restart(model_file, gears, tmp_path):
    state, model = tmp_path / "state", model_file(EXTRACTOR)
    terminal = _teach(state, gears, model)
    terminal.wait_for("classes: none yet")
    terminal.wait_for("frames/s")  # the status line
    echo_before = terminal.modes()[3] & termios.ECHO
    terminal.type("n")
    terminal.wait_for("name of the new class: ")
    terminal.type("quartz bin q")  # a q inside a name is a letter, not quit
    terminal.wait_for("name of the new class: quartz bin q")  # echoed as typed, on the prompt line
    terminal.type("\r")
    terminal.wait_for("class 1: quartz bin q")
    terminal.type("1")
    terminal.wait_for("to quartz bin q (1 example)")
    terminal.type("q")
    assert terminal.finish() == 0
    assert echo_before == 0 and terminal.modes()[3] & termios.ECHO  # cbreak while teaching, the terminal given back
    assert terminal.shown.endswith(f"\r\x1b[K1 class, 1 example kept in {state}\r\n")  # the status line ended cleanly
    with TeachingSession(state) as session:
        assert [(c.name, c.examples) for c in session.classes()] == [("quartz bin q", 1)]

    again = _teach(state, gears, model)
    again.wait_for("classes: 1 quartz bin q (1)")
    again.send("q")
    assert again.finish() == 0


@pytest.mark.shared
def test_esc_cancels_r_renames_d_deletes_and_keys_typed_ahead_are_not_lost(model_file, gears, tmp_path):
    state, model = tmp_path / "state", model_file(EXTRACTOR)
    with TeachingSession(state, model) as session:
        session.add_class("gear")
        session.add_class("nut")
    terminal = _teach(state, gears, model)
    terminal.wait_for("classes: 1 gear (0), 2 nut (0)")
    terminal.send("nwasher" + ESCAPE)  # typed faster than they are read: one owner takes them in order
    terminal.wait_for("name of the new class: washer  (cancelled)")
    terminal.send("r2\r")
    terminal.wait_for("new name for nut: nut")  # the old name, to edit
    terminal.send("\x15hex nut\r")  # Ctrl-U clears it
    terminal.wait_for("renamed nut to hex nut")
    terminal.send("d1\r")
    terminal.wait_for("delete gear and its 0 examples? (y/n)")
    terminal.send("n")
    terminal.wait_for("kept gear")
    terminal.send("d1\ry")
    terminal.wait_for("deleted gear and its 0 examples")
    terminal.send("\x1b[A")  # an arrow key is no command
    terminal.send("nq\r")
    terminal.wait_for("class 2: q")
    terminal.send("\x04")  # Ctrl-D quits as q does
    assert terminal.finish() == 0
    assert "unknown command" not in terminal.text
    with TeachingSession(state) as session:
        assert [c.name for c in session.classes()] == ["hex nut", "q"]


def test_keys_are_split_as_a_terminal_sends_them():
    assert split_keys("ab\r\x1b[A\x1bOC\x1b[3~\x1b") == ["a", "b", "\n", "\x1b[A", "\x1bOC", "\x1b[3~", "\x1b"]
    assert split_keys("\x1bq") == ["\x1b", "q"]  # Esc then q: a cancel, then the key
