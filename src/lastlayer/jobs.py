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
from lastlayer.errors import ModelError
from lastlayer.files import atomic_write_bytes, atomic_write_text, ensure_output_dir
from lastlayer.learn.softmax import SoftmaxRegression
from lastlayer.model.heads import check_extractor
from lastlayer.model.io import load_model
from lastlayer.model.labels import format_labels
from lastlayer.report import classification_report
from lastlayer.runtime import Interpreter
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


def write_outputs(out_dir: Path, model_bytes: bytes, classes: list[str], report: dict[str, Any]) -> JobResult:
    """Write ``model.tflite``, ``labels.txt`` and ``report.json`` atomically into ``out_dir``."""
    model_path = atomic_write_bytes(out_dir / "model.tflite", model_bytes)
    labels_path = atomic_write_text(out_dir / "labels.txt", format_labels(classes))
    report_path = atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    return JobResult(model_path, labels_path, report_path, report)


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
    dataset = load_dataset(data_dir)
    say(f"{len(dataset)} images in {len(dataset.classes)} classes: " + ", ".join(f"{k} ({v})" for k, v in dataset.counts().items()))

    start = time.perf_counter()
    embedded = embed_dataset(interpreter, dataset, use_cache=options.use_cache, strict=options.strict, progress=options.progress)
    times["embed_s"] = time.perf_counter() - start
    if embedded.cached:
        say(f"{embedded.cached} embeddings from the cache")
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
        "val": classification_report(embedded.y[val], layer.run_inference(embedded.X[val]), dataset.classes) if len(val) else None,
        "times": {k: round(v, 3) for k, v in times.items()},
    }
    return write_outputs(out, model_bytes, dataset.classes, report)


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
    dataset = load_dataset(data_dir)
    say(f"{len(dataset)} images in {len(dataset.classes)} classes: " + ", ".join(f"{k} ({v})" for k, v in dataset.counts().items()))

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

    start = time.perf_counter()
    extractor = Interpreter(engine.serialize_extractor_model())
    embedded = embed_dataset(extractor, dataset, use_cache=options.use_cache, strict=options.strict, progress=options.progress)
    times["embed_s"] = time.perf_counter() - start
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
    if len(test):
        scores = engine.run_inference(embedded.X[test])
        truth = np.array(ids)[embedded.y[test]]
        report["test_accuracy"] = float(np.mean(scores.argmax(axis=1) == truth))
        report["test"] = classification_report(embedded.y[test], scores[:, ids], dataset.classes)
    else:
        report["test_accuracy"] = None
    return write_outputs(out, model_bytes, engine.labels, report)
