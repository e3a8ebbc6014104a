"""``lastlayer cut``: a classifier becomes an embedding extractor."""

from __future__ import annotations

import argparse

from lastlayer.cli import common

HELP = "cut a classifier into an embedding extractor"
EXAMPLE = "lastlayer cut mobilenet_v2_1.0_224_quant.tflite -o extractor.tflite"
FLAGS = {"model": "MODEL", "tensor": "--tensor", "output": "--output"}


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "cut", help=HELP, epilog=f"example: {EXAMPLE}",
        description="Keep the part of MODEL that computes the embedding (the input of its last FULLY_CONNECTED or 1x1 "
        "CONV_2D class layer, or --tensor NAME) and drop everything else, weights included.")
    parser.add_argument("model", metavar="MODEL", help="classifier path or known name")
    parser.add_argument("--output", "-o", required=True, metavar="EXTRACTOR", help="the extractor .tflite to write")
    parser.add_argument("--tensor", help="cut at this tensor instead of the detected embedding (see 'lastlayer inspect')")
    common.add_output_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from lastlayer.jobs.surgery import cut_model

    return common.render(args, cut_model(args.model, args.output, args.tensor))
