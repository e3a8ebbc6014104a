"""``lastlayer classify``: rank the classes of images with a model."""

from __future__ import annotations

import argparse
import sys

from lastlayer.cli import common

HELP = "rank the classes of images with a model"
EXAMPLE = "lastlayer classify --model mobilenet_v2_1.0_224_quant.tflite cat.jpg --top-k 3"
FLAGS = {"model": "--model", "labels": "--labels", "normalization": common.NORMALIZATION_FLAGS,
         "unknown_threshold": "--unknown-threshold", "images": "IMAGE"}


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("classify", help=HELP, description="Classify images and print the top classes with their scores. "
                                 "A model that stores an unknown rule answers 'unknown' for a picture of none of its classes.",
                                 epilog=f"example: {EXAMPLE}")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, BMP, GIF, ...) or folders (every image under them, sorted)")
    parser.add_argument("--model", "-m", default=common.DEFAULT_CLASSIFIER,
                        help=f"model path or known name (default: {common.DEFAULT_CLASSIFIER})")
    parser.add_argument("--labels", "-l", help="label file (default: the labels stored in the model, if any)")
    parser.add_argument("--top-k", "-k", type=common.positive_int, default=5, help="how many classes to show (default: 5)")
    parser.add_argument("--threshold", "-t", type=common.finite_float, default=0.0,
                        help="hide classes scoring below this; zero scores are always hidden (default: 0.0)")
    parser.add_argument("--threads", type=common.positive_int, default=None, help="CPU threads (default: all cores)")
    common.add_unknown_options(parser)
    common.add_normalization_options(parser)
    common.add_output_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from lastlayer.jobs.classify import ImageScores, classify_files

    result: ImageScores = classify_files(args.model, args.images, labels=args.labels, top_k=args.top_k,
                                         threshold=args.threshold, num_threads=args.threads,
                                         input_mean=args.input_mean, input_std=args.input_std, unknown=not args.no_unknown,
                                         unknown_threshold=args.unknown_threshold)
    common.render(args, result)
    for bad in result.unreadable:  # every readable image was reported above; each unreadable one gets its error line
        print(f"lastlayer: error: {bad['error']}", file=sys.stderr)
    return 1 if result.unreadable else 0
