"""The keep-classes part of ``lastlayer imprint``: new classes appended after an ordinary classifier's own.

Used when ``--keep-classes`` names a classifier whose class layer is not a cosine classifier (those,
and Coral's imprinting models, keep their classes as imprinted rows, as before), and when the model to
extend already has classes appended this way.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from lastlayer.errors import ModelError, TrainingError
from lastlayer.layer import AppendedClasses
from lastlayer.learn.keep import KeepClassesHead
from lastlayer.learn.unknown import UnknownRule
from lastlayer.model.export import cosine_class_rows
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.keep import ClassLayer, has_appended_classes, read_class_layer
from lastlayer.model.labels import read_label_file
from lastlayer.model.metadata import read_metadata, remove_metadata
from lastlayer.model.unknown import UNKNOWN_METADATA_NAME, unknown_rule_entry
from lastlayer.report.intervals import count


def appends_classes(base: ModelFile, keep_classes: bool, resume: bool = False) -> bool:
    """Whether imprinting into ``base`` appends classes after its own rather than building imprinted rows.

    True when ``base`` has classes appended so (and they are kept or resumed), or when it is an
    ordinary classifier whose classes are to be kept (a cosine classifier's become imprinted rows).
    """
    if base.kind is not ModelKind.CLASSIFIER or not (keep_classes or resume):
        return False
    if has_appended_classes(base):
        return True
    if not keep_classes:
        return False
    try:
        cosine_class_rows(base)
    except ModelError:
        return True  # an ordinary classifier: its classes are kept as they are
    return False


def open_kept_head(base: ModelFile, labels_path: str | None = None) -> tuple[KeepClassesHead, ClassLayer]:
    """The head over ``base``'s own class layer, with the classes appended before (if any)."""
    layer = read_class_layer(base)
    labels = layer.labels
    if labels_path is not None:
        table = read_label_file(labels_path)
        labels = [table.get(i, str(i)) for i in range(layer.num_classes)]
        if len(table) < layer.num_classes:
            raise ModelError(f"{labels_path} names {len(table)} classes but {base.name} has {layer.num_classes}; "
                             "give the label file of this model", subject="labels")
    return KeepClassesHead.from_class_layer(layer, labels), layer


def with_unknown_rule(base: ModelFile, appended: AppendedClasses, rule: UnknownRule | None) -> tuple[ModelFile, AppendedClasses]:
    """The model to write on and the classes to append, carrying ``rule`` (one of :attr:`AppendedClasses.metadata`).

    The rule is for all classes, the original ones first (those without examples are not judged).
    Without a rule, a rule ``base`` stores (for its fewer classes) is dropped from the copy written on.
    """
    if rule is None:
        if read_metadata(base.tree, UNKNOWN_METADATA_NAME) is None:
            return base, appended
        tree = base.copy_tree()
        remove_metadata(tree, UNKNOWN_METADATA_NAME)
        return ModelFile.from_tree(tree, base.name), appended
    total = len(appended.labels) if appended.labels else rule.num_classes
    if (rule.num_classes, rule.dim) != (total, appended.dim):
        raise TrainingError(f"the unknown rule is for {rule.num_classes} classes of {rule.dim} features but the model will have "
                            f"{total} classes of {appended.dim}; fit the rule on the head's examples")
    entry = unknown_rule_entry(base.tree, rule.to_dict(), base.name)
    return base, replace(appended, metadata={**appended.metadata, UNKNOWN_METADATA_NAME: entry})


def check_options(finetune: bool, scale: float | None) -> None:
    """Refuse the imprinting-only settings, saying why."""
    if finetune:
        raise TrainingError("--finetune refines imprinted (cosine) rows; classes appended after a classifier's own are not "
                            "fine-tuned (measured on 4 classifiers it changed new-class accuracy by -0.08 to +0.04); "
                            "leave it out", subject="finetune")
    if scale is not None:
        raise TrainingError("--scale sets s of an imprinted (cosine) head; classes appended after a classifier's own take "
                            "their scale from its class layer; leave it out", subject="scale")


def kept_report(head: KeepClassesHead, layer: ClassLayer) -> dict[str, Any]:
    """The report section: the original layer, the gate's settings, how the original classes fared on the shots."""
    summaries = head.shot_report()
    return {
        "original_classes": head.base_classes,
        "new_classes": head.num_classes - head.base_classes,
        "class_layer_type": layer.dtype + (" per-axis" if layer.per_axis else ""),
        "logit_range": None if layer.logit_range is None else [round(v, 4) for v in layer.logit_range],
        "joined_logit_range": None if layer.logit_range is None else [round(v, 4) for v in head.logit_window()],
        "thresholds": {c.label: round(float(t), 4) for c, t in zip(head.new_classes_, head.thresholds)},
        "scale": round(head.scale, 4), "steepness": round(head.steepness, 4),
        "shots": [s.to_dict() for s in summaries],
        "shots_kept_by_original": int(sum(s.kept_by_original for s in summaries)),
        "shots_total": int(sum(s.shots for s in summaries)),
        "warnings": [w for w in (s.warning() for s in summaries) if w],
    }


def kept_leave_one_out(head: KeepClassesHead) -> dict[str, Any]:
    """Leave-one-out accuracy over this run's shots (all classes compete), for classes with at least 2."""
    truth, predicted = head.leave_one_out()
    if not len(truth):
        return {"accuracy": None, "photos": 0, "note": "leave-one-out needs a new class with 2 photos"}
    right = count(int(np.sum(truth == predicted)), len(truth))
    return {"accuracy": right.value, "photos": right.total, "right": right.hits, "interval": right.to_dict()["interval"],
            "note": None}


def kept_headline(section: dict[str, Any]) -> str:
    """The clause the headline adds: how the original classes fared on the shots."""
    text = (f"; {section['original_classes']} original + {section['new_classes']} new classes: the original ones still win "
            f"{section['shots_kept_by_original']} of the {section['shots_total']} photos imprinted")
    if section["warnings"]:
        text += f"; {len(section['warnings'])} warning(s) in the report"
    return text
