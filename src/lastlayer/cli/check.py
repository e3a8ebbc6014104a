"""``lastlayer check``: does a model map fully onto the Edge TPU? Exit 1 when it does not."""

from __future__ import annotations

import argparse

from lastlayer.cli import common
from lastlayer.model.edgetpu_versions import LATEST_RUNTIME, OLDEST_RUNTIME

HELP = "check a model against the Edge TPU requirements (exit 1 if it does not map fully)"
EXAMPLE = "lastlayer check model.tflite --runtime 13"
FLAGS = {"model": "MODEL"}


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "check", help=HELP, epilog=f"example: {EXAMPLE} --json",
        description="Static Edge TPU compatibility report: 8-bit tensors, static shapes, at most 3 non-1 innermost "
        "dimensions, supported operators and their limits, and where the compiler would partition the graph. "
        "Exit status 0 when the whole model maps to the Edge TPU, 1 when it does not.")
    parser.add_argument("model", metavar="MODEL", help="model path or known name")
    parser.add_argument("--runtime", type=_runtime, default=LATEST_RUNTIME, help=f"Edge TPU runtime version, {OLDEST_RUNTIME} to {LATEST_RUNTIME} "
                        f"(default: {LATEST_RUNTIME})")
    common.add_output_options(parser)
    return parser


def _runtime(text: str) -> int:
    value = common.positive_int(text)
    if not OLDEST_RUNTIME <= value <= LATEST_RUNTIME:
        raise argparse.ArgumentTypeError(f"must be a runtime version from {OLDEST_RUNTIME} to {LATEST_RUNTIME}, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from lastlayer.model.edgetpu import check_model
    from lastlayer.model.zoo import open_model

    model = open_model(args.model)
    report = check_model(model.tree, runtime=args.runtime, name=model.name)
    common.render(args, report)
    return 0 if report.fully_supported else 1
