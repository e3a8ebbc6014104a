"""``lastlayer imprint``: imprint the classes of a dataset into a model, or extend a model imprinted before."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lastlayer.data import stratified_split, take_shots
from lastlayer.errors import ModelError, TrainingError
from lastlayer.jobs import base as skeleton
from lastlayer.jobs.base import Log, ModelJobResult, PathLike
from lastlayer.learn.imprinting import COSINE_QUANTIZATION, DEFAULT_SCALE, ImprintingHead
from lastlayer.model.export import (
    cosine_class_rows,
    extractor_model,
    original_output_type,
    read_imprinting_layer,
    write_head,
)
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.imprinting import find_structure
from lastlayer.model.normalization import Values, input_normalization
from lastlayer.report import classification_report, misclassified
from lastlayer.runtime import Interpreter
from lastlayer.zoo import DEFAULT_EXTRACTOR, open_model


@dataclass
class ImprintOptions(skeleton.DataOptions):
    """Settings of ``lastlayer imprint``."""

    test_ratio: float = 0.25
    shots: int | None = None
    finetune: bool = False
    finetune_steps: int = 300
    keep_classes: bool = False
    scale: float | None = None
    seed: int = 0
    input_mean: Values | str | None = None  # None: decided from the model (see lastlayer.model.normalization)
    input_std: Values | str | None = None
    output_type: str | None = None  # None: the base model's (see lastlayer.model.export.original_output_type)


def open_head(base: ModelFile, options: ImprintOptions, resume: bool) -> ImprintingHead:
    """The head to imprint into: the classes of a saved model (resume), or a new head on ``base``."""
    if resume:
        if base.kind is not ModelKind.IMPRINTING:
            what = "a classifier (for example one written by 'lastlayer train')" if base.kind is ModelKind.CLASSIFIER else f"a {base.kind.value}"
            raise ModelError(f"{base.name} is {what}, not an imprinted model, so it cannot take new classes by imprinting; "
                             "imprint on its extractor (or on the classifier itself) to start a new imprinted model", subject="resume")
        return ImprintingHead.from_layer(read_imprinting_layer(base))
    if base.kind is ModelKind.IMPRINTING:
        if options.keep_classes:
            return ImprintingHead.from_layer(read_imprinting_layer(base))
        return ImprintingHead(scale=find_structure(base.tree).scale_factor)
    head = ImprintingHead(scale=options.scale or DEFAULT_SCALE)
    if options.keep_classes:
        rows, labels = cosine_class_rows(base)
        head.add_base_classes(rows, labels)
    return head


def _model_class_ids(head: ImprintingHead, classes: list[str], base_name: str) -> list[int]:
    """Dataset class -> model class id: existing trainable classes by name, new ones appended in order."""
    existing = {name: i for i, name in enumerate(head.labels)}
    ids, next_id = [], head.num_classes
    for name in classes:
        if name not in existing:
            ids.append(next_id)
            next_id += 1
        elif head.is_trainable(existing[name]):
            ids.append(existing[name])
        else:
            raise TrainingError(f"class {name!r} is a base class of {base_name} and cannot be retrained; "
                                "rename the folder to add a new class", subject="data")
    return ids


def imprint(data: PathLike, output: PathLike, model: PathLike = DEFAULT_EXTRACTOR, options: ImprintOptions | None = None,
            resume: PathLike | None = None, log: Log | None = None) -> ModelJobResult:
    """Imprint ``data``'s classes into ``model`` (extractor, classifier or imprinting model), or into ``resume``."""
    options = options or ImprintOptions()
    say = log or skeleton.stderr_log
    timer = skeleton.Timer()
    base = open_model(resume if resume is not None else model)
    head = open_head(base, options, resume is not None)
    structure = find_structure(base.tree)
    kernel_quantization = (structure.kernel_scale, structure.kernel_zero_point) if structure else COSINE_QUANTIZATION
    dataset = skeleton.announced_dataset(data, say)
    ids = _model_class_ids(head, dataset.classes, base.name)
    normalization = input_normalization(base, options.input_mean, options.input_std)
    output_type = options.output_type or original_output_type(base)
    embedded = skeleton.embed(Interpreter(extractor_model(base), normalization=normalization), dataset, options, timer, say)
    X, y = embedded.X, embedded.y
    train_rows, test_rows = stratified_split(y, options.test_ratio, options.seed, classes=dataset.classes)
    if options.shots:
        train_rows = take_shots(train_rows, y, options.shots, options.seed)
    losses: list[float] = []
    with timer.step("imprint_s"):
        for local in np.argsort(ids):  # ascending model ids, so each new class gets exactly the next id
            head.add(X[train_rows[y[train_rows] == local]], ids[local], dataset.classes[local])
        if options.finetune:
            losses = head.finetune(options.finetune_steps)
            say(f"fine-tuned {options.finetune_steps} steps: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    with timer.step("serialize_s"):
        model_bytes = write_head(base, head.export(), output_type=output_type, normalization=normalization)
    report: dict[str, Any] = {
        "method": "imprinting" + (" + finetune" if options.finetune else ""),
        "base_model": base.name,
        **skeleton.data_report(data, embedded),
        "classes": head.labels if head.num_classes <= 50 else f"{head.num_classes} classes (see labels.txt)",
        "num_classes": head.num_classes,
        "new_or_extended_classes": {dataset.classes[i]: ids[i] for i in range(len(ids))},
        "scale_factor": head.scale,
        "output_type": output_type,
        "normalization": normalization.to_dict(),
        "train_images": int(len(train_rows)),
        "test_images": int(len(test_rows)),
        "shots": {head.labels[i]: head.shots(i) for i in ids},
        "finetune_loss": [losses[0], losses[-1]] if losses else None,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(options).items() if k != "progress"},
        "test_accuracy": None,
    }
    if len(test_rows):
        scores = head.saved_scores(X[test_rows], kernel_quantization)
        report["test"] = classification_report(y[test_rows], scores, dataset.classes, ids)
        report["test"]["misclassified"] = misclassified([embedded.dataset.paths[i] for i in test_rows], y[test_rows], scores,
                                                        dataset.classes, ids, head.labels)
        report["test_accuracy"] = report["test"]["top1_accuracy"]
    report["times"] = timer.rounded()
    headline = f"{head.num_classes} classes"
    if report["test_accuracy"] is not None:
        headline += f", test accuracy {report['test_accuracy']:.3f} on {len(test_rows)} held-out images"
    written = skeleton.write_model_outputs(output, model_bytes, head.labels, report, report.get("test"),
                                  f"{base.path.name} imprinted: test split")
    return ModelJobResult(written, report, headline)
