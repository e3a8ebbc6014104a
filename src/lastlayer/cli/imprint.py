"""``lastlayer imprint``: add classes from a few images each (weight imprinting), or extend a saved model."""

from __future__ import annotations

import argparse
from pathlib import Path

from lastlayer.cli import common

HELP = "add classes from a few images each (weight imprinting)"
EXAMPLE = "lastlayer imprint parts/ -o out/ --shots 5\n             lastlayer imprint --resume out/model.tflite new_parts/ -o out2/"
FLAGS = {"model": "--model", "resume": "--resume", "data": "DATA_DIR", "output": "--output", "ratio": "--test-ratio",
         "shots": "--shots", "keep_classes": "--keep-classes", "normalization": common.NORMALIZATION_FLAGS,
         "output_type": "--output-type", "labels": "--labels", "finetune": "--finetune", "scale": "--scale"}


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "imprint", help=HELP,
        description="Imprint DATA_DIR/<class>/<images> into a model (Coral's imprinting structure, built on any "
        "extractor or classifier), evaluate on a held-out split, and write OUT_DIR/model.tflite, labels.txt, report.json. "
        "With --resume, add classes or shots to a model imprinted before, without its original images. "
        "With --keep-classes and a classifier, its own classes stay as they are and the new ones come after them.",
        epilog="examples:\n  lastlayer imprint parts/ -o out/ --shots 5 --finetune\n"
        "  lastlayer imprint --resume out/model.tflite more_parts/ -o out2/\n"
        "  lastlayer imprint parts/ -o out/ --model mobilenet_v2_1.0_224_quant.tflite --keep-classes --labels imagenet_labels.txt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_dataset_options(parser)
    parser.add_argument("--model", "-m", default=common.DEFAULT_EXTRACTOR,
                        help=f"extractor, classifier or imprinting model (default: {common.DEFAULT_EXTRACTOR})")
    parser.add_argument("--resume", metavar="MODEL", help="a model written by 'lastlayer imprint' (or PyCoral) to extend")
    parser.add_argument("--output", "-o", metavar="OUT_DIR",
                        help="output folder (created if missing)")
    parser.add_argument("--in-place", action="store_true",
                        help="with --resume and no -o: replace the resumed model (and its labels and report) in its folder")
    parser.add_argument("--keep-classes", action="store_true",
                        help="keep the model's own classes (any classifier: its class layer stays bit-exact, new classes follow)")
    parser.add_argument("--labels", "-l", metavar="FILE",
                        help="with --keep-classes: label file of the model's own classes (default: the labels stored in it)")
    parser.add_argument("--test-ratio", type=common.held_out_ratio, default=0.25,
                        help="share of each class held out for the report (default: 0.25)")
    parser.add_argument("--shots", type=common.positive_int, default=None, help="use at most N training images per class")
    parser.add_argument("--finetune", action="store_true", help="refine the imprinted rows with gradient steps (keeps the structure)")
    parser.add_argument("--finetune-steps", type=common.positive_int, default=300, help="fine-tuning steps (default: 300)")
    parser.add_argument("--scale", type=common.positive_float, default=None,
                        help="scale factor s of s*cos for a new model (default: 48, measured)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split and the shots (default: 0)")
    common.add_normalization_options(parser)
    common.add_output_type_option(parser)
    common.add_no_unknown_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from lastlayer.jobs.imprint import ImprintOptions, imprint

    if args.output is None and not (args.resume and args.in_place):
        raise common.UsageError("imprint needs -o OUT_DIR (or, with --resume, --in-place to update the resumed model's folder)")
    if args.in_place and (args.resume is None or args.output is not None):
        raise common.UsageError("--in-place goes with --resume and without -o")
    options = ImprintOptions(
        test_ratio=args.test_ratio, shots=args.shots, finetune=args.finetune, finetune_steps=args.finetune_steps,
        keep_classes=args.keep_classes, scale=args.scale, seed=args.seed, use_cache=not args.no_cache,
        strict=args.strict, progress=common.show_progress(args), input_mean=args.input_mean, input_std=args.input_std,
        output_type=args.output_type, labels=args.labels, unknown=not args.no_unknown,
    )
    output = args.output or str(Path(args.resume).parent)
    result = imprint(args.data_dir, output, args.model, options, resume=args.resume, log=common.job_log(args))
    if args.json:
        common.print_json({**result.summary(), "classes": result.report["num_classes"], "test_accuracy": result.report["test_accuracy"]})
        return 0
    print(result.to_text())
    return 0
