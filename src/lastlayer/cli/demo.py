"""``lastlayer demo``: the end-to-end tour on rendered parts and defects (what ``make demo`` runs)."""

from __future__ import annotations

import argparse

from lastlayer.cli import common

HELP = "the end-to-end tour on rendered parts and defects"
DEFAULT_OUTPUT = "lastlayer-demo"
EXAMPLE = f"lastlayer demo --output {DEFAULT_OUTPUT}"
FLAGS = {"model": "--extractor", "output": "--output"}


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "demo", help=HELP, epilog=f"example: {EXAMPLE}",
        description="Render a small photo-free dataset of machine parts and defects, imprint it from 5 shots per class, "
        "add a class incrementally, train a backprop head on the same data, and compare.")
    parser.add_argument("--output", "-o", default=DEFAULT_OUTPUT, help=f"output folder (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--extractor", "-e", default=common.DEFAULT_EXTRACTOR, help=f"embedding extractor (default: {common.DEFAULT_EXTRACTOR})")
    parser.add_argument("--test-per-class", type=common.positive_int, default=20,
                        help="held-out renders per class (default: 20; fewer is faster)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the renders (default: 0)")
    common.add_output_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from lastlayer.demo import run_demo

    summary = run_demo(args.output, extractor=args.extractor, test_per_class=args.test_per_class, seed=args.seed,
                       log=(lambda line: None) if args.json or args.quiet else print)
    if args.json:
        common.print_json(summary)
    return 0
