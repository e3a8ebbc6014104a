"""``lastlayer train``: embed a class-per-folder dataset, train a softmax head, write extractor + head."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lastlayer.errors import TrainingError
from lastlayer.files.datasets import MIN_IMAGES_TO_HOLD_OUT, stratified_split, too_small_to_hold_out
from lastlayer.jobs import base as skeleton
from lastlayer.jobs.base import Log, ModelJobResult, PathLike
from lastlayer.jobs.unknown import derive_rule
from lastlayer.learn.base import SoftmaxLearner
from lastlayer.learn.registry import Solver, get_solver
from lastlayer.model.export import extractor_model, original_output_type, output_type_of, write_head
from lastlayer.model.file import ModelKind
from lastlayer.model.normalization import Values, input_normalization
from lastlayer.model.zoo import DEFAULT_EXTRACTOR, open_model
from lastlayer.report.intervals import count
from lastlayer.report.metrics import classification_report, misclassified
from lastlayer.runtime import Interpreter


@dataclass
class TrainOptions(skeleton.DataOptions):
    """Settings of ``lastlayer train`` (the backprop head)."""

    solver: str = "tuned"  # a name of lastlayer.learn.registry: "tuned" (L2 by cross-validation, L-BFGS) or "sgd" (PyCoral's way)
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
    input_mean: Values | str | None = None  # None: decided from the model (see lastlayer.model.normalization)
    input_std: Values | str | None = None
    output_type: str | None = None  # None: the base model's (see lastlayer.model.export.original_output_type)
    unknown: bool = True  # store an unknown rule derived from the photos (see lastlayer.jobs.unknown.derive_rule)

    def iterations(self, n_train: int) -> int:
        """Iterations to run: ``epochs`` passes over ``n_train`` images, else ``num_iter`` (default 500)."""
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * n_train / min(self.batch_size, max(1, n_train))))
        return 500 if self.num_iter is None else self.num_iter


def _settings(options: TrainOptions, num_classes: int, n_train: int) -> dict[str, Any]:
    """What the job offers a learner (each takes those its ``__init__`` names; see :mod:`lastlayer.learn.registry`)."""
    return {"num_classes": num_classes, "seed": options.seed, "class_weight": options.class_weight,
            "learning_rate": options.learning_rate, "num_iter": options.iterations(n_train), "batch_size": options.batch_size,
            "momentum": options.momentum, "reg": options.reg, "early_stopping": options.early_stopping,
            "print_every": options.print_every}


def _fitted_layer(solver: Solver, options: TrainOptions, num_classes: int, X: np.ndarray, y: np.ndarray, train_rows: np.ndarray,
                  val_rows: np.ndarray, say: Log) -> SoftmaxLearner:
    """A new learner of ``solver``, fitted on ``train_rows`` (``val_rows`` for its early stopping or logit range)."""
    layer = solver.make(**_settings(options, num_classes, len(train_rows)))
    return layer.fit(X[train_rows], y[train_rows], X[val_rows], y[val_rows], log=say)


def train(data: PathLike, output: PathLike, extractor: PathLike = DEFAULT_EXTRACTOR, options: TrainOptions | None = None,
          log: Log | None = None) -> ModelJobResult:
    """Train a softmax head on ``data`` after ``extractor`` (an extractor, or a classifier that is cut) into ``output``."""
    options = options or TrainOptions()
    say = log or skeleton.stderr_log
    timer = skeleton.Timer()
    skeleton.check_output_dir(output)  # refused now, not after every image was embedded
    solver = get_solver(options.solver)
    base = open_model(extractor)
    extractor_file = extractor_model(base)
    if base.kind is ModelKind.CLASSIFIER:
        say(f"{base.name} is a classifier: training on its embedding (the input of its class layer)")
    head_type = output_type_of(base)
    output_type = options.output_type or original_output_type(base)
    normalization = input_normalization(base, options.input_mean, options.input_std)
    interpreter = Interpreter(extractor_file, normalization=normalization)
    dataset = skeleton.announced_dataset(data, say)
    embedded = skeleton.embed(interpreter, dataset, options, timer, say)
    train_rows, val_rows = stratified_split(embedded.y, options.val_ratio, options.seed)
    kept_whole = too_small_to_hold_out(embedded.y, dataset.classes, options.val_ratio)
    if kept_whole:
        say(f"no photos held out for validation from {', '.join(repr(n) for n in kept_whole[:5])}"
            f"{' and more' if len(kept_whole) > 5 else ''} (fewer than {MIN_IMAGES_TO_HOLD_OUT} photos each)")
    X, y = embedded.X, embedded.y
    if len(set(y[train_rows].tolist())) < 2:
        raise TrainingError(f"{data} needs at least 2 classes with images to train a softmax head", subject="data")
    with timer.step("train_s"):
        layer = _fitted_layer(solver, options, len(dataset.classes), X, y, train_rows, val_rows, say)
        val_accuracy = layer.score(X[val_rows], y[val_rows]) if len(val_rows) else None
        val_scores = layer.saved_scores(X[val_rows], head_type) if len(val_rows) else None
        train_accuracy = layer.score(X[train_rows], y[train_rows])
        refit = solver.refit_on_all_photos and len(val_rows) > 0
        if refit:  # the held-out photos measured the head; the saved head learns from every photo
            layer = _fitted_layer(solver, options, len(dataset.classes), X, y, np.arange(len(y)), np.array([], dtype=int), say)
        fit = layer.fit_report()
    learned_from = np.arange(len(y)) if refit else train_rows  # the photos the saved head (and its rule) learned from
    rule = derive_rule(X[learned_from], y[learned_from], len(dataset.classes), enabled=options.unknown)
    if rule.rule is not None and len(val_rows):  # measured by a rule that did not see the validation photos
        measured = rule if not refit else derive_rule(X[train_rows], y[train_rows], len(dataset.classes))
        if measured.rule is not None:
            rule = replace(rule, held_out=measured.tested(X[val_rows], np.argmax(val_scores, axis=1)).held_out)
    with timer.step("serialize_s"):
        exported = layer.export(dataset.classes)
        exported = rule.rule.attach(exported) if rule.rule is not None else exported
        model_bytes = write_head(base, exported, output_type=output_type, normalization=normalization)
    report: dict[str, Any] = {
        "method": "backprop",
        "extractor": base.name,
        **skeleton.data_report(data, embedded),
        "classes": dataset.classes,
        "train_images": int(len(train_rows)),
        "val_images": int(len(val_rows)),
        "not_held_out": kept_whole,
        "solver": options.solver,
        "iterations": fit.iterations,
        "stopped_early": fit.stopped_early,
        "reg": fit.reg,
        "cv_accuracy": fit.cv_accuracy,
        "refit_on_all_photos": refit,
        "output_type": output_type,
        "head_type": head_type,
        "normalization": normalization.to_dict(),
        "settings": skeleton.settings(options),
        "train_accuracy": train_accuracy,
        "val_accuracy": val_accuracy,
        "unknown_rule": rule.to_dict(),
    }
    if len(val_rows):
        report["val"] = classification_report(y[val_rows], val_scores, dataset.classes)
        report["val"]["misclassified"] = misclassified([embedded.dataset.paths[i] for i in val_rows], y[val_rows], val_scores,
                                                       dataset.classes, labels=dataset.classes)
    report["times"] = timer.rounded()
    headline = f"train accuracy {report['train_accuracy']:.3f} on {len(train_rows)} images (the photos it learned from)"
    if val_accuracy is not None:
        headline += f", validation {count(report['val']['top1_right'], report['val']['samples']).describe()}"
        if refit:
            headline += " (the saved head was then refit on every photo)"
    elif report["cv_accuracy"] is not None:
        headline += f", cross-validated accuracy {report['cv_accuracy']:.3f} (no photos held out to count it on)"
    else:
        headline += "; no validation accuracy (no photos held out)"
    headline += rule.headline()
    written = skeleton.write_model_outputs(output, model_bytes, dataset.classes, report, report.get("val"),
                                  f"{base.path.name} + softmax head: validation split")
    return ModelJobResult(written, report, headline)
