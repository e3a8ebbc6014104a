"""The ``lastlayer`` command: one module per verb, each parsing its arguments and rendering a library result.

Exit codes: 0 success, 1 failure (a one-line ``lastlayer: error: ...`` on stderr: every kind of library
error, e.g. a teaching state busy, full or gone; the web app answers the same kinds with the HTTP statuses
of :data:`lastlayer.serve.protocol.STATUS_BY_KIND`), 2 usage error.
Verb modules import only argparse at module level, so ``lastlayer --help`` loads no LiteRT, NumPy
or Pillow.

A new verb is one module ``lastlayer/cli/VERB.py`` plus its name in :data:`VERBS`. The module defines
``HELP`` and ``EXAMPLE`` (the listing of ``lastlayer`` without arguments), ``FLAGS`` (an error's
``subject`` -> the flag to name after its message), ``register(commands)`` (adds and returns its
argparse parser) and ``run(args)`` (returns the exit code); it parses and renders only, the work being
a library call (usually a job of :mod:`lastlayer.jobs`, printed by :func:`lastlayer.cli.common.render`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import unicodedata
import warnings
from types import ModuleType
from typing import Any, Sequence

from lastlayer import __version__
from lastlayer.cli.common import UsageError
from lastlayer.errors import LastLayerError

VERBS = ("classify", "train", "imprint", "evaluate", "watch", "teach", "demo", "inspect", "cut", "join", "check")


def _verb(name: str) -> ModuleType:
    return importlib.import_module(f"lastlayer.cli.{name}")


def _examples() -> str:
    lines = ["commands (each with an example):"]
    for name in VERBS:
        verb = _verb(name)
        lines.append(f"  {name:<10} {verb.HELP}")
        lines.append(f"             {verb.EXAMPLE}")
    lines += ["", "Models are found by path, in $LASTLAYER_MODELS, in the cache, or downloaded (pinned SHA-256).",
              "Run 'lastlayer COMMAND --help' for a command's options."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lastlayer", description="Teach a TensorFlow Lite image classifier new classes on the device.",
                                     epilog=_examples(), formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="lastlayer [--version] COMMAND ...")
    parser.add_argument("--version", action="version", version=f"lastlayer {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND", help=argparse.SUPPRESS, prog="lastlayer")
    for name in VERBS:
        verb = _verb(name)
        sub = verb.register(commands)
        sub.set_defaults(verb=verb, parser=sub)
    return parser


def _printable(text: str) -> str:
    """``text`` with control characters (a newline or terminal escape in a file name) shown as escapes."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def error_line(exc: LastLayerError, verb: ModuleType | None) -> str:
    """The one line printed for a failure: the message, plus the running command's flag for the input it is about."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    flag = getattr(verb, "FLAGS", {}).get(exc.subject) if exc.subject else None
    return f"lastlayer: error: {_printable(message)}" + (f" ({flag})" if flag else "")


def _show_warning(message: Warning | str, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    """One line per warning; written around an active progress bar, never glued onto it."""
    text = f"lastlayer: warning: {message}"
    if "tqdm" in sys.modules:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        sys.stderr.write(text + "\n")


_received: list[int] = []


def _terminate(signum: int, frame: Any) -> None:
    _received.append(signum)
    raise KeyboardInterrupt  # SIGTERM / SIGHUP clean up exactly like Ctrl-C


def _install_handlers() -> dict[int, Any]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt (main thread only); returns the handlers replaced."""
    replaced: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return replaced
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) in (signal.SIG_DFL, None):
            replaced[signum] = signal.signal(signum, _terminate)
    return replaced


def _interrupted() -> int:
    """Exit code after an interruption: 128 + the signal (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""
    signum = _received[-1] if _received else int(signal.SIGINT)
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = str(signum)
    sys.stderr.write(f"lastlayer: interrupted ({name})\n")
    _interruptions.append(signum)
    return 128 + signum


_interruptions: list[int] = []


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lastlayer`` command; returns the exit code."""
    _received.clear()
    replaced = _install_handlers()
    try:
        return _run(argv)
    except KeyboardInterrupt:
        return _interrupted()
    finally:
        for signum, handler in replaced.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _run(argv: Sequence[str] | None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        verb = getattr(args, "verb", None)
        if verb is None:
            parser.print_help()
            return 0
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                warnings.simplefilter("always")
                return verb.run(args)
        except UsageError as exc:
            args.parser.error(str(exc))
        except LastLayerError as exc:
            print(error_line(exc, verb), file=sys.stderr)
            return 1
        except (KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as exc:  # a bug of ours: still one line, and the traceback on request
            if os.environ.get("LASTLAYER_DEBUG"):
                raise
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            print(f"lastlayer: error: internal error ({type(exc).__name__}{': ' + detail if detail else ''}); "
                  "please report it, with the output of the same command run with LASTLAYER_DEBUG=1", file=sys.stderr)
            return 1
    except BrokenPipeError:
        return 1
    return 0


def entry_point() -> None:
    """The console script: no traceback, even for Ctrl-C during the imports."""
    try:
        code = main()
    except KeyboardInterrupt:
        code = _interrupted()
    if _interruptions:
        # Outputs are already cleaned up. A worker thread may wait for a lock the interruption left
        # held in the main thread; the interpreter's exit would join it forever, so leave at once.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)
