"""The terminal of ``lastlayer teach``: one reader of standard input, keys or lines, a line editor, and the status line.

On a terminal, one thread reads standard input in cbreak mode (no echo, no line buffering) and turns the
bytes into keys (:func:`split_keys`: an escape sequence such as an arrow is one key, a lone Esc another);
the teaching loop takes them one at a time from :class:`Keys`, so nothing else ever reads the terminal.
A key is a command; a command that needs words opens a prompt (:func:`ask`): a line editor fed by the
same keys, drawn by :class:`Screen` on the bottom line in place of the status line, with Enter to accept,
Esc to cancel, Backspace, Ctrl-U, Ctrl-W, the arrows, Home and End. Without a terminal, standard input is
read as lines (one command per line) and nothing is drawn.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import queue
import re
import shutil
import sys
import threading
import unicodedata
from typing import IO, Iterator

ENTER, ESCAPE, END_OF_INPUT = "\n", "\x1b", "\x04"
BACKSPACES = ("\x7f", "\x08")
_SEQUENCE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|O.)")  # CSI (arrows, Home, End, Delete...) or SS3 keys
_MOVES = {"\x1b[D": -1, "\x1bOD": -1, "\x1b[C": 1, "\x1bOC": 1}
_HOME = ("\x1b[H", "\x1bOH", "\x1b[1~", "\x1b[7~", "\x01")
_END = ("\x1b[F", "\x1bOF", "\x1b[4~", "\x1b[8~", "\x05")
_DELETE = "\x1b[3~"


def split_keys(text: str) -> list[str]:
    """The keys in a chunk of terminal input: an escape sequence is one key, a lone Esc is :data:`ESCAPE`, Return is :data:`ENTER`."""
    keys: list[str] = []
    position = 0
    while position < len(text):
        found = _SEQUENCE.match(text, position) if text[position] == ESCAPE else None
        if found:
            keys.append(found.group())
            position = found.end()
            continue
        char = text[position]
        keys.append(ENTER if char == "\r" else char)
        position += 1
    return keys


class Keys:
    """The one reader of standard input: keys on a terminal (cbreak mode while open), else whole lines.

    :meth:`get` returns the next key (or line, without its newline), ``None`` after ``timeout`` seconds,
    and :data:`END_OF_INPUT` once the input ended (then again on every call). ``interactive=False`` reads
    lines even from a terminal (e.g. when what is typed could not be shown).
    """

    def __init__(self, stream: IO[str] | None = None, *, interactive: bool = True) -> None:
        self.stream = stream or sys.stdin
        self.interactive = interactive and _is_terminal(self.stream)
        self._queue: queue.Queue[str] = queue.Queue()
        self._finished = False  # the reader thread is done: the input ended
        self._saved: list | None = None

    def __enter__(self) -> Keys:
        if self.interactive:
            import termios
            import tty

            fd = self.stream.fileno()
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)  # keys arrive one by one, not echoed; Ctrl-C still interrupts
        threading.Thread(target=self._read, name="lastlayer-keys", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved)
            self._saved = None

    def _read(self) -> None:
        try:
            if self.interactive:
                decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
                while chunk := os.read(self.stream.fileno(), 1024):
                    for key in split_keys(decoder.decode(chunk)):
                        self._queue.put(key)
            else:
                for line in self.stream:
                    self._queue.put(line.rstrip("\r\n"))
        except (OSError, ValueError):
            pass
        self._queue.put(END_OF_INPUT)
        self._finished = True

    @property
    def ended(self) -> bool:
        """The input ended (the terminal closed): there will be no more keys."""
        return self._finished and self._queue.empty()

    def get(self, timeout: float | None = None) -> str | None:
        """The next key or line; ``None`` after ``timeout`` seconds; :data:`END_OF_INPUT` at Ctrl-D and once the input ended."""
        try:
            return self._queue.get(timeout=0 if self._finished else timeout)
        except queue.Empty:
            return END_OF_INPUT if self._finished else None


class Screen:
    """What the terminal shows: messages scroll up, the bottom line is the status line or the open prompt.

    Every write takes one lock, so the status thread and the teaching loop never garble each other's
    lines. Off a terminal, :meth:`status` and prompts draw nothing and messages are plain lines.
    """

    def __init__(self, out: IO[str] | None = None, *, interactive: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.interactive = _is_terminal(self.out) if interactive is None else interactive
        self._lock = threading.RLock()
        self._status = ""
        self._prompt: tuple[str, str, int] | None = None  # label, text, cursor

    def _width(self) -> int:
        return max(20, shutil.get_terminal_size((80, 24)).columns - 1)

    def _bottom(self) -> str:
        if self._prompt is None:
            return "\r\x1b[K" + _fit(self._status, self._width())
        label, text, cursor = self._prompt
        room = self._width() - _cells(label)
        start = max(0, cursor - room + 1)  # keep the cursor in view on a narrow terminal
        shown = text[start:start + room]
        back = _cells(shown[cursor - start:])
        return "\r\x1b[K" + label + shown + (f"\x1b[{back}D" if back else "")

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def say(self, text: str) -> None:
        """A message line (above the bottom line on a terminal)."""
        with self._lock:
            self._write(("\r\x1b[K" + text + "\n" + self._bottom()) if self.interactive else text + "\n")

    def status(self, text: str) -> None:
        """The status line's new text (shown while no prompt is open)."""
        with self._lock:
            self._status = text
            if self.interactive and self._prompt is None:
                self._write(self._bottom())

    def prompt(self, label: str, text: str, cursor: int) -> None:
        with self._lock:
            self._prompt = (label, text, cursor)
            if self.interactive:
                self._write(self._bottom())

    def close_prompt(self, echo: str | None = None) -> None:
        """Back to the status line; ``echo``: a line to leave in place of the prompt (what was answered)."""
        with self._lock:
            self._prompt = None
            if self.interactive:
                self._write("\r\x1b[K" + (echo + "\n" if echo is not None else "") + self._bottom())

    def end(self) -> None:
        """Clear the bottom line, so that the shell's prompt starts on a clean line."""
        with self._lock:
            self._status, self._prompt = "", None
            if self.interactive:
                self._write("\r\x1b[K")

    @contextlib.contextmanager
    def warnings_shown(self) -> Iterator[None]:
        """Python warnings (a skipped frame...) as message lines, not written across the status line."""
        import warnings

        saved = warnings.showwarning
        warnings.showwarning = lambda message, *rest, **more: self.say(f"warning: {message}")
        try:
            yield
        finally:
            warnings.showwarning = saved


def ask(keys: Keys, screen: Screen, label: str, initial: str = "") -> str | None:
    """One line typed at a prompt on the bottom line (``None``: cancelled with Esc, Ctrl-D on an empty line, or the input ended).

    The answer is left on the screen after the prompt, so what was typed stays visible.
    """
    text, cursor = initial, len(initial)
    while True:
        screen.prompt(label, text, cursor)
        key = keys.get()
        if key == ENTER:
            screen.close_prompt(label + text)
            return text
        if key == ESCAPE or (key == END_OF_INPUT and (not text or keys.ended)):
            screen.close_prompt(label + text + "  (cancelled)")
            return None
        if key in BACKSPACES:
            text, cursor = (text[:cursor - 1] + text[cursor:], cursor - 1) if cursor else (text, cursor)
        elif key in (_DELETE, END_OF_INPUT):  # Delete, or Ctrl-D on a line with text: the character under the cursor
            text = text[:cursor] + text[cursor + 1:]
        elif key == "\x15":  # Ctrl-U: clear what is before the cursor
            text, cursor = text[cursor:], 0
        elif key == "\x17":  # Ctrl-W: the word before the cursor
            start = len(text[:cursor].rstrip().rsplit(" ", 1)[0]) if " " in text[:cursor].rstrip() else 0
            text, cursor = text[:start] + text[cursor:], start
        elif key in _MOVES:
            cursor = min(len(text), max(0, cursor + _MOVES[key]))
        elif key in _HOME:
            cursor = 0
        elif key in _END:
            cursor = len(text)
        elif len(key) == 1 and unicodedata.category(key) not in ("Cc", "Cf"):
            text, cursor = text[:cursor] + key + text[cursor:], cursor + 1


def confirm(keys: Keys, screen: Screen, question: str) -> bool:
    """A yes/no question answered with one key: ``y`` is yes, any other key no."""
    screen.prompt(question + " (y/n) ", "", 0)
    key = keys.get()
    answer = key in ("y", "Y")
    screen.close_prompt(f"{question} (y/n) {'yes' if answer else 'no'}")
    return answer


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _cells(text: str) -> int:
    """Terminal cells ``text`` takes (East Asian wide characters take two)."""
    return sum(2 if unicodedata.east_asian_width(char) in ("W", "F") else 1 for char in text)


def _fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells, so that the bottom line never wraps (a wrapped line cannot be redrawn in place)."""
    while _cells(text) > width:
        text = text[:-1]
    return text
