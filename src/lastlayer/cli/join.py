"""``lastlayer join``: a base graph and a head graph become one model."""

from __future__ import annotations

import argparse

from lastlayer.cli import common

HELP = "join a base graph and a head graph into one model"
EXAMPLE = "lastlayer join base_edgetpu.tflite head.tflite -o joined.tflite"
FLAGS = {"model": "BASE/HEAD", "output": "--output", "mapping": "--map"}


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "join", help=HELP,
        description="Connect HEAD's inputs to BASE's outputs (by tensor name, or --map) and write one model; BASE may be an "
        "Edge TPU compiled graph (one edgetpu-custom-op).",
        epilog="example: lastlayer join mobilenet_quant_v1_224_feature_layers_edgetpu.tflite "
        "mobilenet_quant_v1_224_head_layers.tflite -o joined.tflite")
    parser.add_argument("base", metavar="BASE", help="the graph that runs first (path or known name)")
    parser.add_argument("head", metavar="HEAD", help="the graph fed by BASE's outputs (path or known name)")
    parser.add_argument("--output", "-o", required=True, metavar="OUT", help="the joined .tflite to write")
    parser.add_argument("--map", action="append", metavar="BASE_OUTPUT=HEAD_INPUT", help="connect these tensors (repeatable)")
    common.add_output_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from lastlayer.jobs.surgery import join_models

    mapping = {}
    for item in args.map or []:
        if "=" not in item:
            raise common.UsageError(f"--map takes BASE_OUTPUT=HEAD_INPUT, got {item!r}")
        base_name, head_name = item.split("=", 1)
        mapping[base_name] = head_name
    return common.render(args, join_models(args.base, args.head, args.output, mapping))
