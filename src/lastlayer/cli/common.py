"""What every verb of the CLI shares: value types checked at parse time, output helpers, error rendering.

Nothing here imports LiteRT, NumPy or Pillow, so ``lastlayer --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Callable

from lastlayer.layer import OUTPUT_TYPES
from lastlayer.model.zoo import DEFAULT_CLASSIFIER, DEFAULT_EXTRACTOR  # noqa: F401  (light module: re-exported for the verbs)


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


def _bounded(kind: Callable[[str], Any], low: float, high: float | None = None, *, low_open: bool = False,
             rule: str) -> Callable[[str], Any]:
    """An argparse type: a finite number of ``kind`` within [low, high) (or (low, ... with ``low_open``)."""

    def parse(text: str) -> Any:
        value = _number(kind, text)
        if value < low or (low_open and value == low) or (high is not None and value >= high):
            raise argparse.ArgumentTypeError(f"{rule}, got {value}")
        return value

    return parse


positive_int = _bounded(int, 1, rule="must be at least 1")
non_negative_int = _bounded(int, 0, rule="must be 0 or more")
positive_float = _bounded(float, 0, low_open=True, rule="must be greater than 0")
non_negative_float = _bounded(float, 0, rule="must be 0 or more")
held_out_ratio = _bounded(float, 0, 1, rule="must be at least 0 and below 1")
momentum_value = _bounded(float, 0, 1, rule="must be at least 0 and below 1")


def finite_float(text: str) -> float:
    return _number(float, text)


def channel_values(text: str) -> tuple[float, ...]:
    """An argparse type: one finite number, or one per channel separated by commas (``123.7,116.3,103.5``)."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a comma-separated list of numbers")
    return tuple(_number(float, part) for part in parts)


NORMALIZATION_FLAGS = "--input-mean / --input-std"


def add_normalization_options(parser: argparse.ArgumentParser) -> None:
    """``--input-mean`` and ``--input-std``: how pixels are normalised for the model (default: decided from the model)."""
    parser.add_argument("--input-mean", type=channel_values, default=None, metavar="MEAN",
                        help="pixel normalisation (p - MEAN) / STD: one value or one per channel, e.g. 123.7,116.3,103.5 "
                        "(default: from the model's metadata, else its input quantization, else 128; see 'lastlayer inspect')")
    parser.add_argument("--input-std", type=channel_values, default=None, metavar="STD",
                        help="see --input-mean (default: from the model, else 128)")


def add_output_type_option(parser: argparse.ArgumentParser) -> None:
    """``--output-type``: the saved model's output type (default: the base model's)."""
    parser.add_argument("--output-type", choices=OUTPUT_TYPES, default=None,
                        help="output type of the saved model (default: the base model's: a classifier's output type, "
                        "an extractor's input type)")


UNKNOWN_FLAGS = "--unknown-threshold / --no-unknown"


def add_unknown_options(parser: argparse.ArgumentParser) -> None:
    """``--unknown-threshold`` and ``--no-unknown`` (exclusive): how a model's unknown rule is applied."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--unknown-threshold", type=finite_float, default=None, metavar="SIMILARITY",
                       help="answer unknown below this similarity to the closest class (-1..1), instead of the threshold the "
                       "model derived from its examples (shown by --json)")
    group.add_argument("--no-unknown", action="store_true",
                       help="never answer unknown: rank the taught classes only, as before the model had a rule")


def add_no_unknown_option(parser: argparse.ArgumentParser) -> None:
    """``--no-unknown`` for a command that writes a model: store no unknown rule in it."""
    parser.add_argument("--no-unknown", action="store_true",
                        help="store no unknown rule in the model (by default one is derived from the photos, each left out "
                        "in turn, so that the model answers 'unknown' for a picture of none of its classes)")


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
    """No progress bars with ``--json`` / ``--quiet`` (the library shows them only on a terminal anyway)."""
    return not (args.json or args.quiet)


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
