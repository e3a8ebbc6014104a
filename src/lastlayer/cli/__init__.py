"""The ``lastlayer`` command: one module per verb, each parsing its arguments and rendering a library result.

Exit codes: 0 success, 1 failure (a one-line ``lastlayer: error: ...`` on stderr), 2 usage error.
Verb modules import only argparse at module level, so ``lastlayer --help`` loads no LiteRT, NumPy
or Pillow.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
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
    commands = parser.add_subparsers(metavar="COMMAND", help=argparse.SUPPRESS)
    for name in VERBS:
        verb = _verb(name)
        sub = verb.register(commands)
        sub.set_defaults(verb=verb, parser=sub)
    return parser


def error_line(exc: LastLayerError, verb: ModuleType | None) -> str:
    """The one line printed for a failure: the message, plus the running command's flag for the input it is about."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    flag = getattr(verb, "FLAGS", {}).get(exc.subject) if exc.subject else None
    return f"lastlayer: error: {message}" + (f" ({flag})" if flag else "")


def _show_warning(message: Warning | str, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    sys.stderr.write(f"lastlayer: warning: {message}\n")


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM / SIGHUP clean up exactly like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lastlayer`` command; returns the exit code."""
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) in (signal.SIG_DFL, None):
            signal.signal(getattr(signal, name), _terminate)
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
    except KeyboardInterrupt:
        print("lastlayer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    return 0


def entry_point() -> None:
    """The console script: no traceback, even for Ctrl-C during the imports."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.stderr.write("lastlayer: interrupted\n")
        sys.exit(130)
