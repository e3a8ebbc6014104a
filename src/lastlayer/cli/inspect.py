"""``lastlayer inspect``: a model's operators, tensors and quantization."""

from __future__ import annotations

import argparse

from lastlayer.cli import common

HELP = "show a model's operators, tensors and quantization"
EXAMPLE = "lastlayer inspect model.tflite --json"
FLAGS = {"model": "MODEL"}


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("inspect", help=HELP, epilog=f"example: {EXAMPLE}",
                                 description="Show a model's graph: operators, tensors (shape, type, quantization), buffers, metadata.")
    parser.add_argument("model", metavar="MODEL", help="model path or known name")
    common.add_output_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from lastlayer.model.view import view_of
    from lastlayer.zoo import open_model

    model = open_model(args.model)
    view = view_of(model.tree)
    if args.json:
        common.print_json({**view.to_dict(), "kind": model.kind.value})
    else:
        print(f"{model.name}: {model.kind.value}" + (", compiled for the Edge TPU" if model.edgetpu else ""))
        print(view.to_text())
    return 0
