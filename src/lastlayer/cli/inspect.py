"""``lastlayer inspect``: a model's operators, tensors and quantization."""

from __future__ import annotations

import argparse

from lastlayer.cli import common

HELP = "show a model's operators, tensors and quantization"
EXAMPLE = "lastlayer inspect model.tflite --json"
FLAGS = {"model": "MODEL"}


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("inspect", help=HELP, epilog=f"example: {EXAMPLE}",
                                 description="Show a model's input and output types, the input normalisation lastlayer will use and why "
                                 "(option / metadata / input quantization / default), and its graph: operators, tensors "
                                 "(shape, type, quantization), buffers, metadata.")
    parser.add_argument("model", metavar="MODEL", help="model path or known name")
    common.add_output_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from lastlayer.model.view import feeding_of, view_of
    from lastlayer.model.zoo import open_model

    model = open_model(args.model)
    view = view_of(model.tree)
    feeding = feeding_of(model)
    if args.json:
        common.print_json({**view.to_dict(), "kind": model.kind.value, **feeding.to_dict()})
    else:
        print(f"{model.name}: {model.kind.value}" + (", compiled for the Edge TPU" if model.edgetpu else ""))
        print(feeding.to_text())
        print(view.to_text())
    return 0
