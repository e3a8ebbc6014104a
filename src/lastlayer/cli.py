"""The ``lastlayer`` command: thin argument parsing over the library, one verb per job.

Exit codes: 0 success, 1 failure (a one-line ``lastlayer: error: ...`` on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from lastlayer import __version__
from lastlayer.errors import LastLayerError

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Arguments that argparse accepts but that do not fit together (exit code 2)."""

EXAMPLES = """\
commands (each with an example):
  classify   rank the classes of images with a model
             lastlayer classify --model mobilenet_v2_1.0_224_quant.tflite cat.jpg --top-k 3
  train      train a softmax head on a folder of class folders (last-layer backprop)
             lastlayer train photos/ --extractor mobilenet_v1_1.0_224_quant_embedding_extractor.tflite -o out/
  imprint    add classes from a few images each (weight imprinting), or extend a saved model
             lastlayer imprint parts/ --model mobilenet_v1_1.0_224_quant_embedding_extractor.tflite -o out/ --shots 5
             lastlayer imprint --resume out/model.tflite new_parts/ -o out2/
  evaluate   accuracy, per-class precision/recall, confusion matrix and latency on labelled images
             lastlayer evaluate out/model.tflite test_photos/ --report-dir out/eval --compare other.tflite
  demo       the end-to-end tour on rendered "parts and defects" (what 'make demo' runs)
             lastlayer demo --output lastlayer-demo
  inspect    show a model's operators, tensors and quantization
             lastlayer inspect model.tflite --json
  cut        cut a classifier into an embedding extractor
             lastlayer cut mobilenet_v2_1.0_224_quant.tflite -o extractor.tflite
  join       join a base graph and a head graph into one model
             lastlayer join base_edgetpu.tflite head.tflite -o joined.tflite
  check      check a model against the Edge TPU requirements
             lastlayer check model.tflite --runtime 13

Models are found by path, in $LASTLAYER_MODELS, in the cache, or downloaded (pinned SHA-256).
Run 'lastlayer COMMAND --help' for a command's options.
"""


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _run_classify(args: argparse.Namespace) -> int:
    from lastlayer.classify import get_classes_from_scores, label_of
    from lastlayer.model.io import load_model
    from lastlayer.model.labels import embedded_labels, read_label_file
    from lastlayer.runtime import Interpreter
    from lastlayer.zoo import resolve_model

    model_path = resolve_model(args.model)
    interpreter = Interpreter(model_path, num_threads=args.threads)
    if args.labels:
        labels = read_label_file(resolve_model(args.labels))
    else:
        labels = embedded_labels(load_model(interpreter.model_bytes), interpreter.model_bytes)
    results = []
    for image in args.images:
        scores = interpreter.run_file(image)
        # A score of exactly 0 carries no information; never list those.
        classes = [c for c in get_classes_from_scores(scores, args.top_k, args.threshold) if c.score > 0]
        results.append(
            {
                "image": str(image),
                "classes": [{"id": c.id, "label": label_of(labels, c.id), "score": round(c.score, 6)} for c in classes],
            }
        )
    if args.json:
        _print_json({"model": str(model_path), "results": results})
        return 0
    for result in results:
        print(result["image"])
        if not result["classes"]:
            print(f"  (no class scored >= {args.threshold})")
        for c in result["classes"]:
            print(f"  {c['score']:.5f}  {c['id']:>4}  {c['label']}")
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    from lastlayer.model.view import inspect_model
    from lastlayer.zoo import resolve_model

    view = inspect_model(resolve_model(args.model))
    if args.json:
        _print_json(view.to_dict())
    else:
        print(view.to_text())
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from lastlayer.jobs import TrainOptions, train_backprop

    options = TrainOptions(
        num_iter=args.num_iter, epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
        momentum=args.momentum, reg=args.reg, val_ratio=args.val_ratio, seed=args.seed,
        class_weight="balanced" if args.balanced else None, early_stopping=args.early_stopping,
        print_every=args.print_every, use_cache=not args.no_cache, strict=args.strict, progress=not args.json,
    )
    result = train_backprop(args.data_dir, args.output, args.extractor, options, log=_job_log(args))
    val = result.report["val_accuracy"]
    headline = f"train accuracy {result.report['train_accuracy']:.3f}" + (f", validation accuracy {val:.3f}" if val is not None else "")
    return _print_job_result(args, result, headline, train_accuracy=result.report["train_accuracy"], val_accuracy=val)


def _job_log(args: argparse.Namespace) -> Callable[[str], None] | None:
    """Progress lines go to stderr, and nowhere with --json (stdout then holds only the JSON)."""
    return (lambda line: None) if args.json else None


def _print_job_result(args: argparse.Namespace, result: Any, headline: str, **fields: Any) -> int:
    """The summary of a job that wrote model.tflite, labels.txt and report.json."""
    if args.json:
        _print_json({"model": str(result.model_path), "labels": str(result.labels_path), "report": str(result.report_path),
                     **fields, "times": result.report["times"]})
        return 0
    print(headline)
    print(f"wrote {result.model_path}, {result.labels_path}, {result.report_path}")
    return 0


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """DATA_DIR and the options every job over a dataset shares."""
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder with one sub-folder of images per class (or a path,label CSV)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")


def _add_train(commands: argparse._SubParsersAction) -> None:
    from lastlayer.zoo import DEFAULT_EXTRACTOR

    parser = commands.add_parser(
        "train",
        help="train a softmax head on class folders (last-layer backprop)",
        description="Embed DATA_DIR/<class>/<images> with an extractor, train a softmax layer with mini-batch SGD, "
        "and write OUT_DIR/model.tflite (extractor + head), labels.txt and report.json.",
        epilog="example: lastlayer train photos/ -o out/ --epochs 30 --seed 1",
    )
    _add_dataset_arguments(parser)
    parser.add_argument("--extractor", "-e", default=DEFAULT_EXTRACTOR, help=f"embedding extractor (default: {DEFAULT_EXTRACTOR})")
    parser.add_argument("--output", "-o", required=True, metavar="OUT_DIR", help="output folder (created if missing)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--num-iter", type=int, default=None, help="SGD iterations (default: 500)")
    length.add_argument("--epochs", type=float, default=None, help="passes over the training set (instead of --num-iter)")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate (default: 0.01)")
    parser.add_argument("--batch-size", type=int, default=100, help="mini-batch size (default: 100)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum; 0 is PyCoral's plain SGD (default: 0.9)")
    parser.add_argument("--reg", type=float, default=0.0, help="L2 regularisation (default: 0)")
    parser.add_argument("--val-ratio", type=float, default=0.2, help="share of each class held out for validation (default: 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, initialisation and batches (default: 0)")
    parser.add_argument("--balanced", action="store_true", help="weight classes inversely to their size")
    parser.add_argument("--early-stopping", action="store_true", help="stop when validation loss stops improving")
    parser.add_argument("--print-every", type=int, default=100, help="log loss/accuracy every N iterations (0: never)")
    parser.set_defaults(handler=_run_train)


def _run_imprint(args: argparse.Namespace) -> int:
    from lastlayer.jobs import ImprintOptions, imprint

    if args.output is None and args.resume is None:
        raise UsageError("imprint needs -o OUT_DIR (or --resume MODEL, which defaults to the model's folder)")
    options = ImprintOptions(
        test_ratio=args.test_ratio, shots=args.shots, finetune=args.finetune, finetune_steps=args.finetune_steps,
        keep_classes=args.keep_classes, scale=args.scale, seed=args.seed, use_cache=not args.no_cache,
        strict=args.strict, progress=not args.json,
    )
    output = args.output or str(Path(args.resume).parent)
    result = imprint(args.data_dir, output, args.model, options, resume=args.resume, log=_job_log(args))
    classes, accuracy = len(result.labels_path.read_text().splitlines()), result.report["test_accuracy"]
    headline = f"{classes} classes" + (f", test accuracy {accuracy:.3f}" if accuracy is not None else "")
    return _print_job_result(args, result, headline, classes=classes, test_accuracy=accuracy)


def _add_imprint(commands: argparse._SubParsersAction) -> None:
    from lastlayer.zoo import DEFAULT_EXTRACTOR

    parser = commands.add_parser(
        "imprint",
        help="add classes from a few images each (weight imprinting)",
        description="Imprint DATA_DIR/<class>/<images> into a model (Coral's imprinting structure, built on any "
        "extractor or classifier), evaluate on a held-out split, and write OUT_DIR/model.tflite, labels.txt, report.json. "
        "With --resume, add classes or shots to a model imprinted before, without its original images.",
        epilog="examples:\n  lastlayer imprint parts/ -o out/ --shots 5 --finetune\n"
        "  lastlayer imprint --resume out/model.tflite more_parts/ -o out2/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_dataset_arguments(parser)
    parser.add_argument("--model", "-m", default=DEFAULT_EXTRACTOR, help=f"extractor, classifier or imprinting model (default: {DEFAULT_EXTRACTOR})")
    parser.add_argument("--resume", metavar="MODEL", help="a model written by 'lastlayer imprint' (or PyCoral) to extend")
    parser.add_argument("--output", "-o", metavar="OUT_DIR", help="output folder (created if missing)")
    parser.add_argument("--keep-classes", action="store_true", help="keep the base model's own classes")
    parser.add_argument("--test-ratio", type=float, default=0.25, help="share of each class held out for the report (default: 0.25)")
    parser.add_argument("--shots", type=int, default=None, help="use at most N training images per class")
    parser.add_argument("--finetune", action="store_true", help="refine the imprinted rows with gradient steps (keeps the structure)")
    parser.add_argument("--finetune-steps", type=int, default=300, help="fine-tuning steps (default: 300)")
    parser.add_argument("--scale", type=float, default=None, help="scale factor s of s*cos for a new model (default: 48, measured)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split and the shots (default: 0)")
    parser.set_defaults(handler=_run_imprint)


def _run_cut(args: argparse.Namespace) -> int:
    from lastlayer.model.io import load_model, model_to_bytes, save_model
    from lastlayer.model.surgery import cut_at_embedding
    from lastlayer.model.view import view_of
    from lastlayer.zoo import resolve_model

    path = resolve_model(args.model)
    data = path.read_bytes()
    model = load_model(data)
    before = view_of(model)
    model, point = cut_at_embedding(model, args.tensor, str(path))
    packed = model_to_bytes(model)
    after = view_of(model)
    output = after.main.tensors[after.main.outputs[0]]
    save_model(packed, args.output)
    removed = [op.name for op in before.main.operators[len(after.main.operators):]] if point else []
    summary = {
        "model": str(path), "output": str(args.output), "embedding_tensor": output.name, "embedding_shape": output.shape,
        "embedding_size": output.shape[-1], "operators_before": len(before.main.operators), "operators_after": len(after.main.operators),
        "bytes_before": len(data), "bytes_after": len(packed),
        "class_layer": point.class_layer_name if point else None, "removed_tail": removed,
    }
    if args.json:
        _print_json(summary)
        return 0
    print(f"cut {path.name} at {output.name} ({'x'.join(map(str, output.shape))}, embedding size {output.shape[-1]})")
    print(f"kept {summary['operators_after']} of {summary['operators_before']} operators"
          + (f"; removed {' -> '.join(removed)}" if removed else "") + f"; {len(data):,} -> {len(packed):,} bytes")
    print(f"wrote {args.output}")
    return 0


def _run_join(args: argparse.Namespace) -> int:
    from lastlayer.model.io import load_model, save_model
    from lastlayer.model.join import join
    from lastlayer.model.view import view_of
    from lastlayer.zoo import resolve_model

    mapping = {}
    for item in args.map or []:
        if "=" not in item:
            raise UsageError(f"--map takes BASE_OUTPUT=HEAD_INPUT, got {item!r}")
        base_name, head_name = item.split("=", 1)
        mapping[base_name] = head_name
    base_path, head_path = resolve_model(args.base), resolve_model(args.head)
    joined = join(load_model(base_path), load_model(head_path), mapping or None)
    save_model(joined, args.output)
    ops = [op.name for op in view_of(joined).main.operators]
    if args.json:
        _print_json({"base": str(base_path), "head": str(head_path), "output": str(args.output), "operators": ops})
        return 0
    print(f"joined {base_path.name} + {head_path.name}: {' -> '.join(ops) if len(ops) < 12 else f'{len(ops)} operators'}")
    print(f"wrote {args.output}")
    return 0


def _run_check(args: argparse.Namespace) -> int:
    from lastlayer.edgetpu import check_model
    from lastlayer.zoo import resolve_model

    report = check_model(resolve_model(args.model), runtime=args.runtime)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.to_text())
    return 0


def _add_surgery(commands: argparse._SubParsersAction) -> None:
    from lastlayer.edgetpu import LATEST_RUNTIME

    cut = commands.add_parser(
        "cut", help="cut a classifier into an embedding extractor",
        description="Keep the part of MODEL that computes the embedding (the input of its last FULLY_CONNECTED or 1x1 "
        "CONV_2D class layer, or --tensor NAME) and drop everything else, weights included.",
        epilog="example: lastlayer cut mobilenet_v2_1.0_224_quant.tflite -o mobilenet_v2_extractor.tflite")
    cut.add_argument("model", metavar="MODEL", help="classifier path or known name")
    cut.add_argument("--output", "-o", required=True, metavar="EXTRACTOR", help="the extractor .tflite to write")
    cut.add_argument("--tensor", help="cut at this tensor instead of the detected embedding (see 'lastlayer inspect')")
    cut.add_argument("--json", action="store_true", help="print machine-readable JSON")
    cut.set_defaults(handler=_run_cut)

    join = commands.add_parser(
        "join", help="join a base graph and a head graph into one model",
        description="Connect HEAD's inputs to BASE's outputs (by tensor name, or --map) and write one model; BASE may be an "
        "Edge TPU compiled graph (one edgetpu-custom-op).",
        epilog="example: lastlayer join mobilenet_quant_v1_224_feature_layers_edgetpu.tflite "
        "mobilenet_quant_v1_224_head_layers.tflite -o joined.tflite")
    join.add_argument("base", metavar="BASE")
    join.add_argument("head", metavar="HEAD")
    join.add_argument("--output", "-o", required=True, metavar="OUT")
    join.add_argument("--map", action="append", metavar="BASE_OUTPUT=HEAD_INPUT", help="connect these tensors (repeatable)")
    join.add_argument("--json", action="store_true", help="print machine-readable JSON")
    join.set_defaults(handler=_run_join)

    check = commands.add_parser(
        "check", help="check a model against the Edge TPU requirements",
        description="Static Edge TPU compatibility report: 8-bit tensors, static shapes, at most 3 non-1 innermost "
        "dimensions, supported operators and their limits, and where the compiler would partition the graph.",
        epilog="example: lastlayer check mobilenet_v2_1.0_224_quant.tflite --runtime 13 --json")
    check.add_argument("model", metavar="MODEL")
    check.add_argument("--runtime", type=int, default=LATEST_RUNTIME, help=f"Edge TPU runtime version (default: {LATEST_RUNTIME})")
    check.add_argument("--json", action="store_true", help="print machine-readable JSON")
    check.set_defaults(handler=_run_check)


def _run_evaluate(args: argparse.Namespace) -> int:
    from lastlayer.jobs import EvaluateOptions, evaluate
    from lastlayer.report import text_table

    options = EvaluateOptions(labels=args.labels, report_dir=args.report_dir, compare=args.compare, strict=args.strict,
                              progress=not args.json)
    report = evaluate(args.model, args.data_dir, options)
    if args.json:
        _print_json(report)
        return 0
    print(f"{report['model']} on {report['evaluated']} images of {args.data_dir}")
    print(text_table(report))
    print(f"mean latency {report['mean_latency_ms']} ms per image; {len(report['misclassified'])} misclassified")
    if "compare" in report:
        other = report["compare"]
        print(f"compare {other['model']}: top-1 {other['top1_accuracy']:.3f}, top-5 {other['top5_accuracy']:.3f}, "
              f"latency {other['mean_latency_ms']} ms; agreement {report['agreement']:.3f} ({len(report['disagreements'])} disagreements)")
    if args.report_dir:
        print(f"wrote {report['report_json']}" + (f" and {report['confusion_png']}" if report.get("confusion_png") else ""))
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from lastlayer.demo import run_demo

    summary = run_demo(args.output, extractor=args.extractor, test_per_class=args.test_per_class, seed=args.seed,
                       log=(lambda line: None) if args.json else print)
    if args.json:
        _print_json(summary)
    return 0


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate", help="accuracy, per-class metrics, confusion matrix and latency on labelled images",
        description="Run MODEL on DATA_DIR/<class>/<images> (class folders named after the model's labels) and report "
        "top-1/top-5 accuracy, per-class precision/recall, the confusion matrix, misclassified files and mean latency.",
        epilog="example: lastlayer evaluate out/model.tflite photos/ --report-dir out/eval --compare out/float.tflite")
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder with one sub-folder per class (or a path,label CSV)")
    parser.add_argument("--labels", "-l", help="label file (default: the labels stored in the model)")
    parser.add_argument("--report-dir", help="write report.json and confusion.png here")
    parser.add_argument("--compare", metavar="OTHER", help="evaluate a second model on the same images, side by side")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parser.set_defaults(handler=_run_evaluate)

    from lastlayer.demo import DEFAULT_OUTPUT
    from lastlayer.zoo import DEFAULT_EXTRACTOR

    demo = commands.add_parser(
        "demo", help="the end-to-end tour on rendered parts and defects",
        description="Render a small photo-free dataset of machine parts and defects, imprint it from 5 shots per class, "
        "add a class incrementally, train a backprop head on the same data, and compare.",
        epilog=f"example: lastlayer demo --output {DEFAULT_OUTPUT}")
    demo.add_argument("--output", "-o", default=DEFAULT_OUTPUT, help=f"output folder (default: {DEFAULT_OUTPUT})")
    demo.add_argument("--extractor", "-e", default=DEFAULT_EXTRACTOR, help=f"embedding extractor (default: {DEFAULT_EXTRACTOR})")
    demo.add_argument("--test-per-class", type=int, default=20, help="held-out renders per class (default: 20; fewer is faster)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the renders (default: 0)")
    demo.add_argument("--json", action="store_true", help="print a machine-readable summary")
    demo.set_defaults(handler=_run_demo)


def _add_classify(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "classify",
        help="rank the classes of images with a model",
        description="Classify images and print the top classes with their scores.",
        epilog="example: lastlayer classify --model mobilenet_v2_1.0_224_quant.tflite cat.jpg parrot.jpg --top-k 3",
    )
    from lastlayer.zoo import DEFAULT_CLASSIFIER

    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, BMP, GIF, ...)")
    parser.add_argument("--model", "-m", default=DEFAULT_CLASSIFIER, help=f"model path or known name (default: {DEFAULT_CLASSIFIER})")
    parser.add_argument("--labels", "-l", help="label file (default: the labels stored in the model, if any)")
    parser.add_argument("--top-k", "-k", type=int, default=5, help="how many classes to show (default: 5)")
    parser.add_argument("--threshold", "-t", type=float, default=0.0, help="hide classes scoring below this; zero scores are always hidden (default: 0.0)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(handler=_run_classify)


def _add_inspect(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "inspect",
        help="show a model's operators, tensors and quantization",
        description="Show a model's graph: operators, tensors (shape, type, quantization), buffers, metadata.",
        epilog="example: lastlayer inspect mobilenet_v1_1.0_224_quant_embedding_extractor.tflite --json",
    )
    parser.add_argument("model", metavar="MODEL", help="model path or known name")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(handler=_run_inspect)


def _show_warning(message: Warning | str, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"lastlayer: warning: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastlayer",
        description="Teach a TensorFlow Lite image classifier new classes on the device.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lastlayer {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in (_add_classify, _add_train, _add_imprint, _add_evaluate, _add_inspect, _add_surgery):
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lastlayer`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            warnings.simplefilter("always")
            return handler(args)
    except UsageError as exc:
        parser.error(str(exc))
    except LastLayerError as exc:
        print(f"lastlayer: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lastlayer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
