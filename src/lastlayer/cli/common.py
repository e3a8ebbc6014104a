"""What every verb of the CLI shares: value types checked at parse time, output helpers, error rendering.

Nothing here imports LiteRT, NumPy or Pillow, so ``lastlayer --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Callable

from lastlayer.zoo import DEFAULT_CLASSIFIER, DEFAULT_EXTRACTOR  # noqa: F401  (light module: re-exported for the verbs)


class UsageError(Exception):
    """Arguments that argparse accepts but that do not fit together (exit code 2)."""


def _number(kind: Callable[[str], Any], text: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(float, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(float, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def finite_float(text: str) -> float:
    return _number(float, text)


def held_out_ratio(text: str) -> float:
    value = _number(float, text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {value}")
    return value


def momentum_value(text: str) -> float:
    value = _number(float, text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {value}")
    return value


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--quiet``, on every command."""
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout (progress lines go nowhere)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the result (and errors)")


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """DATA_DIR and the options every job over a dataset shares."""
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder with one sub-folder of images per class (or a path,label CSV)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    add_output_options(parser)


def job_log(args: argparse.Namespace) -> Callable[[str], None]:
    """Where a job's progress lines go: stderr, or nowhere with ``--json`` / ``--quiet``."""
    if args.json or args.quiet:
        return lambda line: None
    return lambda line: print(line, file=sys.stderr)


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal, and not with ``--json`` / ``--quiet``."""
    return not (args.json or args.quiet) and sys.stderr.isatty()


def render(args: argparse.Namespace, result: Any) -> int:
    """Print a job result (``to_dict`` as JSON, or ``to_text``); return exit code 0."""
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.to_text())
    return 0


def print_json_line(data: Any) -> None:
    """One JSON object on one line (NDJSON), flushed so that a consumer sees it at once."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()
