"""``lastlayer train``: a softmax head on class folders (last-layer backprop)."""

from __future__ import annotations

import argparse

from lastlayer.cli import common
from lastlayer.learn.registry import SOLVERS, solver_names

HELP = "train a softmax head on class folders (last-layer backprop)"
EXAMPLE = "lastlayer train photos/ -o out/ --balanced"
FLAGS = {"model": "--extractor", "data": "DATA_DIR", "output": "--output", "ratio": "--val-ratio",
         "normalization": common.NORMALIZATION_FLAGS, "output_type": "--output-type"}


def register(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "train", help=HELP,
        description="Embed DATA_DIR/<class>/<images> with an extractor (a classifier is cut at its embedding), train a "
        "softmax layer, and write OUT_DIR/model.tflite (extractor + head), labels.txt, report.json and confusion.png. "
        "The default solver chooses the L2 strength by cross-validation and fits with L-BFGS (as accurate as "
        "scikit-learn's LogisticRegressionCV); after measuring on the held-out photos it refits on every photo. "
        "--solver sgd trains with mini-batch SGD instead (PyCoral's way; the SGD options apply to it).",
        epilog=f"example: {EXAMPLE}")
    common.add_dataset_options(parser)
    parser.add_argument("--extractor", "-e", default=common.DEFAULT_EXTRACTOR,
                        help=f"embedding extractor or classifier (default: {common.DEFAULT_EXTRACTOR})")
    parser.add_argument("--output", "-o", required=True, metavar="OUT_DIR", help="output folder (created if missing)")
    parser.add_argument("--solver", choices=solver_names(), default=solver_names()[0],
                        help="; ".join(f"{solver.name}: {solver.summary}" for solver in SOLVERS.values()))
    sgd = parser.add_argument_group("with --solver sgd")
    length = sgd.add_mutually_exclusive_group()
    length.add_argument("--num-iter", type=common.non_negative_int, default=None, help="SGD iterations (default: 500)")
    length.add_argument("--epochs", type=common.positive_float, default=None, help="passes over the training set (instead of --num-iter)")
    sgd.add_argument("--lr", type=common.positive_float, default=None, help="learning rate (default: 0.01)")
    sgd.add_argument("--batch-size", type=common.positive_int, default=None, help="mini-batch size (default: 100)")
    sgd.add_argument("--momentum", type=common.momentum_value, default=None, help="SGD momentum; 0 is PyCoral's plain SGD (default: 0.9)")
    sgd.add_argument("--reg", type=common.non_negative_float, default=None, help="L2 regularisation (default: 0)")
    sgd.add_argument("--early-stopping", action="store_true", help="stop when validation loss stops improving")
    sgd.add_argument("--print-every", type=common.non_negative_int, default=None, help="log loss/accuracy every N iterations (0: never)")
    parser.add_argument("--val-ratio", type=common.held_out_ratio, default=0.2,
                        help="share of each class held out for validation (default: 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, initialisation and batches (default: 0)")
    parser.add_argument("--balanced", action="store_true", help="weight classes inversely to their size")
    common.add_normalization_options(parser)
    common.add_output_type_option(parser)
    common.add_no_unknown_option(parser)
    return parser


SGD_OPTIONS = {"num_iter": "--num-iter", "epochs": "--epochs", "lr": "--lr", "batch_size": "--batch-size", "momentum": "--momentum",
               "reg": "--reg", "print_every": "--print-every"}


def run(args: argparse.Namespace) -> int:
    from lastlayer.jobs.train import TrainOptions, train

    given = [flag for name, flag in SGD_OPTIONS.items() if getattr(args, name) is not None]
    given += ["--early-stopping"] if args.early_stopping else []
    if args.solver != "sgd" and given:
        raise common.UsageError(f"{', '.join(given)} apply to --solver sgd; add --solver sgd or leave them out")
    sgd = {key: value for key, value in (("num_iter", args.num_iter), ("epochs", args.epochs), ("learning_rate", args.lr),
                                         ("batch_size", args.batch_size), ("momentum", args.momentum), ("reg", args.reg),
                                         ("print_every", args.print_every)) if value is not None}
    options = TrainOptions(
        solver=args.solver, **sgd, val_ratio=args.val_ratio, seed=args.seed,
        class_weight="balanced" if args.balanced else None, early_stopping=args.early_stopping,
        use_cache=not args.no_cache, strict=args.strict, progress=common.show_progress(args),
        input_mean=args.input_mean, input_std=args.input_std, output_type=args.output_type,
        unknown=not args.no_unknown,
    )
    result = train(args.data_dir, args.output, args.extractor, options, log=common.job_log(args))
    if args.json:
        common.print_json({**result.summary(), "train_accuracy": result.report["train_accuracy"],
                           "val_accuracy": result.report["val_accuracy"], "iterations": result.report["iterations"]})
        return 0
    print(result.to_text())
    return 0
