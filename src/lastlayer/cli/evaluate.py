"""``lastlayer evaluate``: accuracy, per-class metrics, confusion matrix and latency on labelled images."""

from __future__ import annotations

import argparse

from lastlayer.cli import common

HELP = "accuracy, per-class metrics, confusion matrix and latency on labelled images"
EXAMPLE = "lastlayer evaluate out/model.tflite test_photos/ --report-dir out/eval --unknown other_photos/"
FLAGS = {"model": "MODEL", "labels": "--labels", "data": "DATA_DIR", "output": "--report-dir",
         "normalization": common.NORMALIZATION_FLAGS, "unknown_data": "--unknown", "unknown_threshold": "--unknown-threshold"}


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "evaluate", help=HELP,
        description="Run MODEL on DATA_DIR/<class>/<images> (class folders named after the model's labels) and report "
        "top-1/top-5 accuracy, per-class precision/recall, the confusion matrix, misclassified files and mean latency. "
        "A model with an unknown rule also gets its known-class accuracy (photos accepted and right) and, with --unknown, "
        "how many photos of none of its classes it rejected, with the threshold curve (unknown.png).",
        epilog=f"example: {EXAMPLE}")
    parser.add_argument("model", metavar="MODEL", help="the classifier to evaluate (path or known name)")
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder with one sub-folder per class (or a path,label CSV)")
    parser.add_argument("--labels", "-l", help="label file (default: the labels stored in the model)")
    parser.add_argument("--report-dir", help="write report.json and confusion.png here")
    parser.add_argument("--compare", metavar="OTHER", help="evaluate a second model on the same images, side by side")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    parser.add_argument("--unknown", metavar="OTHER_DIR", dest="unknown_data",
                        help="a folder of photos of none of the model's classes (any layout): how many does its unknown rule reject?")
    common.add_unknown_options(parser)
    common.add_normalization_options(parser)  # for MODEL; a --compare model is fed as decided from that model
    common.add_output_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from lastlayer.jobs.evaluate import EvaluateOptions, evaluate

    if args.no_unknown and args.unknown_data:
        raise common.UsageError("--unknown needs the unknown rule; leave out --no-unknown")
    options = EvaluateOptions(labels=args.labels, report_dir=args.report_dir, compare=args.compare, strict=args.strict,
                              progress=common.show_progress(args), input_mean=args.input_mean, input_std=args.input_std,
                              unknown_data=args.unknown_data, unknown=not args.no_unknown, unknown_threshold=args.unknown_threshold)
    return common.render(args, evaluate(args.model, args.data_dir, options))
