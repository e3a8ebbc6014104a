"""The end-to-end jobs behind the CLI: folder of photos in, model + labels + report out."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from lastlayer.data import load_dataset, stratified_split
from lastlayer.embeddings import embed_dataset
from lastlayer.errors import DatasetError, ModelError
from lastlayer.files import atomic_write_bytes, atomic_write_text, ensure_output_dir
from lastlayer.learn.softmax import SoftmaxRegression
from lastlayer.model.heads import check_extractor
from lastlayer.model.io import load_model
from lastlayer.model.labels import format_labels
from lastlayer.report import classification_report, misclassified, save_confusion_png
from lastlayer.runtime import Interpreter, extract_embeddings
from lastlayer.zoo import DEFAULT_EXTRACTOR, resolve_model

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class TrainOptions:
    """Settings of ``lastlayer train`` (the backprop head)."""

    num_iter: int | None = None
    epochs: float | None = None
    learning_rate: float = 0.01
    batch_size: int = 100
    momentum: float = 0.9
    reg: float = 0.0
    val_ratio: float = 0.2
    seed: int = 0
    class_weight: str | None = None
    early_stopping: bool = False
    print_every: int = 100
    use_cache: bool = True
    strict: bool = False
    progress: bool = True

    def iterations(self, n_train: int) -> int:
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * n_train / self.batch_size))
        return 500 if self.num_iter is None else self.num_iter


@dataclass
class JobResult:
    """What a job wrote and measured."""

    model_path: Path
    labels_path: Path
    report_path: Path
    report: dict[str, Any] = field(default_factory=dict)


def write_report(out_dir: Path, report: dict[str, Any], evaluation: dict[str, Any] | None, title: str) -> Path:
    """Write ``report.json`` and, for an evaluation with images, ``confusion.png``; return the JSON path."""
    if evaluation and evaluation.get("samples"):
        png = save_confusion_png(evaluation, out_dir / "confusion.png", title)
        report["confusion_png"] = str(png) if png else None
    return atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")


def write_outputs(out_dir: Path, model_bytes: bytes, classes: list[str], report: dict[str, Any], evaluation_key: str) -> JobResult:
    """Write ``model.tflite``, ``labels.txt``, ``report.json`` (and ``confusion.png``) atomically into ``out_dir``."""
    model_path = atomic_write_bytes(out_dir / "model.tflite", model_bytes)
    labels_path = atomic_write_text(out_dir / "labels.txt", format_labels(classes))
    report_path = write_report(out_dir, report, report.get(evaluation_key), f"{report['method']}: {evaluation_key} split")
    return JobResult(model_path, labels_path, report_path, report)


def _announced_dataset(data_dir: PathLike, say: Callable[[str], None]) -> Any:
    dataset = load_dataset(data_dir)
    say(f"{len(dataset)} images in {len(dataset.classes)} classes: " + ", ".join(f"{k} ({v})" for k, v in dataset.counts().items()))
    return dataset


def _timed_embeddings(interpreter: Interpreter, dataset: Any, options: Any, times: dict[str, float], say: Callable[[str], None]) -> Any:
    start = time.perf_counter()
    embedded = embed_dataset(interpreter, dataset, use_cache=options.use_cache, strict=options.strict, progress=options.progress)
    times["embed_s"] = time.perf_counter() - start
    if embedded.cached:
        say(f"{embedded.cached} embeddings from the cache")
    return embedded


def train_backprop(
    data_dir: PathLike,
    out_dir: PathLike,
    extractor: PathLike = DEFAULT_EXTRACTOR,
    options: TrainOptions | None = None,
    log: Callable[[str], None] | None = None,
) -> JobResult:
    """Embed a class-per-folder dataset, train a softmax head, write extractor + head as one model."""
    options = options or TrainOptions()
    say = log or (lambda line: print(line, file=sys.stderr))
    times: dict[str, float] = {}
    out = ensure_output_dir(out_dir)
    extractor_path = resolve_model(extractor)
    check_extractor(load_model(extractor_path), str(extractor_path))
    interpreter = Interpreter(extractor_path)
    dataset = _announced_dataset(data_dir, say)
    embedded = _timed_embeddings(interpreter, dataset, options, times, say)
    train, val = stratified_split(embedded.y, options.val_ratio, options.seed)

    start = time.perf_counter()
    layer = SoftmaxRegression(
        learning_rate=options.learning_rate, num_iter=options.iterations(len(train)), batch_size=options.batch_size,
        momentum=options.momentum, reg=options.reg, class_weight=options.class_weight,
        early_stopping=options.early_stopping, seed=options.seed, num_classes=len(dataset.classes),
        feature_dim=embedded.X.shape[1],
    )
    layer.fit(embedded.X[train], embedded.y[train], embedded.X[val], embedded.y[val], print_every=options.print_every, log=say)
    times["train_s"] = time.perf_counter() - start

    start = time.perf_counter()
    model_bytes = layer.serialize_model(extractor_path, labels=dataset.classes)
    times["serialize_s"] = time.perf_counter() - start
    report = {
        "method": "backprop",
        "extractor": str(extractor_path),
        "data": str(data_dir),
        "classes": dataset.classes,
        "images": len(dataset),
        "unreadable": embedded.unreadable,
        "notes": dataset.notes,
        "embeddings_from_cache": embedded.cached,
        "train_images": int(len(train)),
        "val_images": int(len(val)),
        "iterations": layer.iterations_,
        "settings": {k: v for k, v in vars(options).items() if k not in ("progress",)},
        "train_accuracy": layer.get_accuracy(embedded.X[train], embedded.y[train]),
        "val_accuracy": layer.get_accuracy(embedded.X[val], embedded.y[val]) if len(val) else None,
        "times": {k: round(v, 3) for k, v in times.items()},
    }
    if len(val):
        scores = layer.run_inference(embedded.X[val])
        report["val"] = classification_report(embedded.y[val], scores, dataset.classes)
        report["val"]["misclassified"] = misclassified([embedded.dataset.paths[i] for i in val], embedded.y[val], scores,
                                                       dataset.classes, labels=dataset.classes)
    return write_outputs(out, model_bytes, dataset.classes, report, "val")


@dataclass
class ImprintOptions:
    """Settings of ``lastlayer imprint``."""

    test_ratio: float = 0.25
    shots: int | None = None
    finetune: bool = False
    finetune_steps: int = 300
    keep_classes: bool = False
    scale: float | None = None
    seed: int = 0
    use_cache: bool = True
    strict: bool = False
    progress: bool = True


def _imprinting_engine(model: PathLike, options: ImprintOptions, resume: PathLike | None):
    """Open a saved imprinting model (resume), a Coral-structured model, or build one on an extractor."""
    from lastlayer.learn.imprinting import DEFAULT_SCALE, ImprintingEngine
    from lastlayer.model import imprinting as structure

    if resume is not None:
        return ImprintingEngine(resolve_model(resume), keep_classes=True), str(resume)
    path = resolve_model(model)
    try:
        structure.validate(load_model(path), str(path))
    except ModelError:  # not Coral-structured: build the structure on the extractor / classifier
        engine = ImprintingEngine.from_extractor(path, options.scale or DEFAULT_SCALE, keep_classes=options.keep_classes)
        return engine, str(path)
    return ImprintingEngine(path, keep_classes=options.keep_classes), str(path)


def imprint(
    data_dir: PathLike,
    out_dir: PathLike,
    model: PathLike = DEFAULT_EXTRACTOR,
    options: ImprintOptions | None = None,
    resume: PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> JobResult:
    """Imprint the classes of a class-per-folder dataset; with ``resume``, extend a saved model."""
    import numpy as np

    from lastlayer.data import take_shots
    from lastlayer.errors import TrainingError

    options = options or ImprintOptions()
    say = log or (lambda line: print(line, file=sys.stderr))
    times: dict[str, float] = {}
    out = ensure_output_dir(out_dir)
    engine, base = _imprinting_engine(model, options, resume)
    dataset = _announced_dataset(data_dir, say)

    # Dataset class -> model class id: existing trainable classes by name, new ones appended.
    existing = {name: i for i, name in enumerate(engine.labels)}
    ids, next_id = [], engine.num_classes
    for name in dataset.classes:
        if name not in existing:
            ids.append(next_id)
            next_id += 1
        elif engine.is_trainable(existing[name]):
            ids.append(existing[name])
        else:
            raise TrainingError(f"class {name!r} is a base class of {base} and cannot be retrained; rename the folder to add a new class")

    embedded = _timed_embeddings(Interpreter(engine.serialize_extractor_model()), dataset, options, times, say)
    train, test = stratified_split(embedded.y, options.test_ratio, options.seed)
    if options.shots:
        train = take_shots(train, embedded.y, options.shots, options.seed)

    start = time.perf_counter()
    for local in np.argsort(ids):  # ascending model ids, so each new class gets exactly the next id
        rows = train[embedded.y[train] == local]
        engine.train(embedded.X[rows], ids[local])
        engine.set_label(ids[local], dataset.classes[local])
    if options.finetune:
        losses = engine.finetune(options.finetune_steps)
        say(f"fine-tuned {options.finetune_steps} steps: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    times["imprint_s"] = time.perf_counter() - start
    start = time.perf_counter()
    model_bytes = engine.serialize_model()
    times["serialize_s"] = time.perf_counter() - start

    report: dict[str, Any] = {
        "method": "imprinting" + (" + finetune" if options.finetune else ""),
        "base_model": base,
        "data": str(data_dir),
        "classes": engine.labels if len(engine.labels) <= 50 else f"{len(engine.labels)} classes (see labels.txt)",
        "new_or_extended_classes": {dataset.classes[i]: ids[i] for i in range(len(ids))},
        "scale_factor": engine.scale_factor,
        "images": len(dataset),
        "unreadable": embedded.unreadable,
        "notes": dataset.notes,
        "embeddings_from_cache": embedded.cached,
        "train_images": int(len(train)),
        "test_images": int(len(test)),
        "shots": {engine.labels[i]: engine.shots(i) for i in ids},
        "settings": {k: v for k, v in vars(options).items() if k != "progress"},
        "times": {k: round(v, 3) for k, v in times.items()},
    }
    report["test_accuracy"] = None
    if len(test):
        scores = engine.run_inference(embedded.X[test])
        report["test"] = classification_report(embedded.y[test], scores, dataset.classes, ids)
        report["test"]["misclassified"] = misclassified([embedded.dataset.paths[i] for i in test], embedded.y[test], scores,
                                                        dataset.classes, ids, engine.labels)
        report["test_accuracy"] = report["test"]["top1_accuracy"]
    return write_outputs(out, model_bytes, engine.labels, report, "test")


@dataclass
class EvaluateOptions:
    """Settings of ``lastlayer evaluate``."""

    labels: PathLike | None = None
    report_dir: PathLike | None = None
    compare: PathLike | None = None
    strict: bool = False
    progress: bool = True


@dataclass
class _Scored:
    name: str
    labels: list[str]
    class_ids: list[int]
    scores: Any
    latencies: list[float]


def _model_labels(interpreter: Interpreter, labels_path: PathLike | None) -> list[str] | None:
    from lastlayer.model.labels import embedded_labels, read_label_file

    table = read_label_file(resolve_model(labels_path)) if labels_path else embedded_labels(load_model(interpreter.model_bytes), interpreter.model_bytes)
    if not table:
        return None
    return [table.get(i, str(i)) for i in range(interpreter.output_size)]


def _class_ids(classes: list[str], labels: list[str] | None, size: int, model: str) -> list[int]:
    """The model's class id of each dataset class, matched by label name (or by order without labels)."""
    if labels is None:
        if len(classes) > size:
            raise DatasetError(f"the data has {len(classes)} classes but {model} has {size} outputs and no labels; pass --labels")
        return list(range(len(classes)))
    by_name: dict[str, int] = {}
    for index, name in enumerate(labels):
        by_name.setdefault(name, index)
    missing = [c for c in classes if c not in by_name]
    if missing:
        raise DatasetError(f"class folder(s) {', '.join(missing)} are not classes of {model}; name the folders after its labels "
                           "(see labels.txt) or pass --labels")
    return [by_name[c] for c in classes]


def _score(model: PathLike, dataset: Any, labels_path: PathLike | None, options: EvaluateOptions, report: Callable) -> _Scored:
    path = resolve_model(model)
    interpreter = Interpreter(path)
    labels = _model_labels(interpreter, labels_path)
    ids = _class_ids(dataset.classes, labels, interpreter.output_size, str(path))
    latencies: list[float] = []
    scores = extract_embeddings(interpreter, dataset.paths, progress=options.progress, on_error=report, latencies=latencies,
                                description=f"evaluating {path.name}")
    return _Scored(str(path), labels or [str(i) for i in range(interpreter.output_size)], ids, scores, latencies)


def evaluate(model: PathLike, data_dir: PathLike, options: EvaluateOptions | None = None) -> dict[str, Any]:
    """Evaluate a classifier on a class-per-folder dataset; optionally against a second model."""
    import warnings

    import numpy as np

    from lastlayer.data import DatasetWarning
    from lastlayer.errors import ImageError

    options = options or EvaluateOptions()
    dataset = load_dataset(data_dir)
    unreadable: list[str] = []

    def report_bad(path: Any, error: ImageError) -> None:
        if options.strict:
            raise error
        if str(path) not in unreadable:
            unreadable.append(str(path))
            warnings.warn(f"skipped unreadable image: {error}", DatasetWarning, stacklevel=2)

    runs = [_score(model, dataset, options.labels, options, report_bad)]
    if options.compare:
        runs.append(_score(options.compare, dataset, None, options, report_bad))
    keep = np.ones(len(dataset), dtype=bool)
    for run in runs:
        keep &= ~np.isnan(run.scores).any(axis=1)
    paths = [p for p, k in zip(dataset.paths, keep) if k]
    y = dataset.labels[keep]
    results = []
    for run in runs:
        scores = run.scores[keep]
        section = classification_report(y, scores, dataset.classes, run.class_ids)
        section["model"] = run.name
        section["mean_latency_ms"] = round(1000 * float(np.mean(run.latencies)), 3) if run.latencies else None
        section["misclassified"] = misclassified(paths, y, scores, dataset.classes, run.class_ids, run.labels)
        results.append(section)
    report: dict[str, Any] = {"data": str(data_dir), "images": len(dataset), "evaluated": int(keep.sum()),
                              "unreadable": unreadable, "notes": dataset.notes, **results[0]}
    if len(runs) == 2:
        first = [runs[0].labels[int(i)] for i in np.argmax(runs[0].scores[keep], axis=1)]
        second = [runs[1].labels[int(i)] for i in np.argmax(runs[1].scores[keep], axis=1)]
        differ = [{"file": str(p), "model": a, "compare": b} for p, a, b in zip(paths, first, second) if a != b]
        report["compare"] = results[1]
        report["agreement"] = 1 - len(differ) / max(1, len(paths))
        report["disagreements"] = differ
        if runs[0].scores.shape == runs[1].scores.shape:
            report["max_score_difference"] = float(np.abs(runs[0].scores[keep] - runs[1].scores[keep]).max())
    if options.report_dir:
        folder = ensure_output_dir(options.report_dir)
        report["report_json"] = str(write_report(folder, report, results[0], f"{Path(runs[0].name).name} on {Path(data_dir).name}"))
    return report
