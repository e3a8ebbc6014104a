"""``lastlayer imprint``: imprint the classes of a dataset into a model, or extend a model imprinted before."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lastlayer.errors import ModelError, TrainingError
from lastlayer.files.datasets import MIN_IMAGES_TO_HOLD_OUT, stratified_split, take_shots, too_small_to_hold_out
from lastlayer.jobs import base as skeleton
from lastlayer.jobs.base import Log, ModelJobResult, PathLike
from lastlayer.jobs.keep import (
    appends_classes,
    check_options,
    kept_headline,
    kept_leave_one_out,
    kept_report,
    open_kept_head,
    with_unknown_rule,
)
from lastlayer.jobs.unknown import RuleOutcome, derive_rule, previous_rule
from lastlayer.layer import DenseLayer
from lastlayer.learn.imprinting import COSINE_QUANTIZATION, DEFAULT_SCALE, ImprintingHead, leave_one_out
from lastlayer.model.export import (
    cosine_class_rows,
    extractor_model,
    original_output_type,
    read_imprinting_layer,
    write_head,
)
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.keep import write_appended_classes
from lastlayer.model.normalization import Values, input_normalization
from lastlayer.model.unknown import rule_input_model
from lastlayer.model.zoo import DEFAULT_EXTRACTOR, open_model
from lastlayer.report.intervals import count
from lastlayer.report.metrics import classification_report, misclassified
from lastlayer.runtime import Interpreter


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
    labels: str | None = None  # label file of the base classifier's own classes (with keep_classes)
    unknown: bool = True  # store an unknown rule derived from the shots (see lastlayer.jobs.unknown.derive_rule)


def resumed_layer(base: ModelFile) -> DenseLayer:
    """The classes of a model to resume, or why it cannot be resumed by imprinting."""
    if base.kind is not ModelKind.IMPRINTING:
        what = "a classifier (for example one written by 'lastlayer train')" if base.kind is ModelKind.CLASSIFIER else f"a {base.kind.value}"
        raise ModelError(f"{base.name} is {what}, not an imprinted model, so it cannot take new classes by imprinting; "
                         "imprint on its extractor (or on the classifier itself) to start a new imprinted model", subject="resume")
    return read_imprinting_layer(base)


def open_head(base: ModelFile, options: ImprintOptions, resumed: DenseLayer | None) -> ImprintingHead:
    """The head to imprint into: the classes of a resumed model, or a new head on ``base``."""
    if resumed is not None:
        return ImprintingHead.from_layer(resumed)
    if base.kind is ModelKind.IMPRINTING:
        if options.keep_classes:
            return ImprintingHead.from_layer(read_imprinting_layer(base))
        return ImprintingHead(scale=base.analysis.imprinting.scale_factor)
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


# Content digests of imprinted photos kept in the model (hex prefix of SHA-256: 64 bits, ample to spot repeats).
DIGEST_CHARS = 16


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _known_digests(state: dict[str, Any] | None) -> dict[str, str]:
    """Digest -> class id of the photos a resumed model was imprinted from (empty for models without them)."""
    stored = (state or {}).get("digests", {})
    return {digest: class_id for class_id, digests in stored.items() for digest in digests}


def _merged(known: dict[str, str], new: dict[str, list[str]]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for digest, class_id in known.items():
        merged.setdefault(class_id, []).append(digest)
    for class_id, digests in new.items():
        merged.setdefault(class_id, []).extend(digests)
    return merged


def _leave_one_out(X: np.ndarray, y: np.ndarray, classes: list[str], scale: float) -> dict[str, Any]:
    """Leave-one-out accuracy of imprinting over this run's photos, for classes with at least 2 of them."""
    counts = np.bincount(y, minlength=len(classes)) if len(y) else np.zeros(len(classes), dtype=int)
    usable = np.flatnonzero(counts >= 2)
    if len(usable) < 2:
        return {"accuracy": None, "photos": 0, "note": "leave-one-out needs 2 classes with 2 photos each"}
    keep = np.isin(y, usable)
    local = np.searchsorted(usable, y[keep])
    predicted = leave_one_out(X[keep], local, len(usable), scale)
    right = count(int(np.sum(predicted == local)), int(keep.sum()))
    return {"accuracy": right.value, "photos": right.total, "right": right.hits, "interval": right.to_dict()["interval"],
            "classes": [classes[i] for i in usable], "note": None}


def _unknown_rule(base: ModelFile, options: ImprintOptions, classes_before: int, X: np.ndarray, ids: np.ndarray,
                  num_classes: int) -> RuleOutcome:
    """The rule for the head's classes from this run's shots, continuing the one ``base`` stores for the classes it kept."""
    previous, note = previous_rule(base, classes_before, X.shape[1]) if classes_before and options.unknown else (None, None)
    outcome = derive_rule(X, ids, num_classes, previous=previous, source=base.name, enabled=options.unknown)
    return replace(outcome, note=note) if outcome.rule is not None and note else outcome


def _accuracy_clause(report: dict[str, Any], classes: list[str], tested: np.ndarray, shots: int | None) -> str:
    """How well the head did, on how many photos and with the 95 % interval: on held-out photos, else leave-one-out."""
    if report["test_accuracy"] is not None:
        test = report["test"]
        where = "photos not used as shots" if shots else "held-out photos"
        return (f"test {count(test['top1_right'], test['samples']).describe()} on {where} of "
                f"{_names(sorted({classes[c] for c in tested}))}")
    loo = report["leave_one_out"]
    if loo["accuracy"] is not None:
        return f"leave-one-out {count(loo['right'], loo['photos']).describe()} (no photos held out)"
    return f"accuracy not available: {loo['note']}"


def imprint(data: PathLike, output: PathLike, model: PathLike = DEFAULT_EXTRACTOR, options: ImprintOptions | None = None,
            resume: PathLike | None = None, log: Log | None = None) -> ModelJobResult:
    """Imprint ``data``'s classes into ``model`` (extractor, classifier or imprinting model), or into ``resume``."""
    options = options or ImprintOptions()
    say = log or skeleton.stderr_log
    timer = skeleton.Timer()
    skeleton.check_output_dir(output)  # refused now, not after every image was embedded
    base = open_model(resume if resume is not None else model)
    appending = appends_classes(base, options.keep_classes, resume is not None)
    resumed, kept_layer = None, None
    if appending:
        check_options(options.finetune, options.scale)
        head, kept_layer = open_kept_head(base, options.labels)
    else:
        if options.labels is not None:
            raise ModelError("--labels names the classes of a classifier kept with --keep-classes; leave it out here",
                             subject="labels")
        resumed = resumed_layer(base) if resume is not None else None
        head = open_head(base, options, resumed)
    structure = base.analysis.imprinting
    kernel_quantization = (structure.kernel_scale, structure.kernel_zero_point) if structure else COSINE_QUANTIZATION
    dataset = skeleton.announced_dataset(data, say)
    ids = _model_class_ids(head, dataset.classes, base.name)
    normalization = input_normalization(base, options.input_mean, options.input_std)
    output_type = options.output_type or original_output_type(base)
    train_rows, test_rows = stratified_split(dataset.labels, options.test_ratio, options.seed)
    kept_whole = too_small_to_hold_out(dataset.labels, dataset.classes, options.test_ratio)
    if options.shots:  # the photos not used as shots are the test set
        shots = take_shots(train_rows, dataset.labels, options.shots, options.seed)
        train_rows, test_rows = shots, np.union1d(test_rows, np.setdiff1d(train_rows, shots))
        kept_whole = [name for c, name in enumerate(dataset.classes) if not np.any(dataset.labels[test_rows] == c)
                      and np.any(dataset.labels == c)]
        if kept_whole:
            say(f"no photos held out from {_names(kept_whole)}: every photo is a shot")
    elif kept_whole:
        say(f"no photos held out from {_names(kept_whole)} (fewer than {MIN_IMAGES_TO_HOLD_OUT} photos each)")
    known = _known_digests(kept_layer.state if kept_layer is not None else resumed.state if resumed is not None else None)
    digests = [d[:DIGEST_CHARS] for d in skeleton.content_digests(dataset, options)]
    repeated = [r for r in train_rows if digests[r] in known]
    if repeated:
        train_rows = np.setdiff1d(train_rows, repeated)
        say(f"skipped {len(repeated)} photo(s) already imprinted in {base.name}")
    test_rows = np.array([r for r in test_rows if digests[r] not in known], dtype=int)  # never test on imprinted photos
    roles = {**{int(r): "train" for r in train_rows}, **{int(r): "test" for r in test_rows}}
    if not len(train_rows):
        raise TrainingError(f"all {len(repeated)} training photos of {data} are already imprinted in {base.name}; "
                            "nothing new to add", subject="data")
    used = np.array(sorted(roles), dtype=int)  # only the photos used are embedded
    embedded = skeleton.embed(Interpreter(extractor_model(base), normalization=normalization), dataset.subset(used), options,
                              timer, say)
    X, y = embedded.X, embedded.y
    row_of = {str(dataset.paths[i]): i for i in used}
    origin = np.array([row_of[str(p)] for p in embedded.dataset.paths], dtype=int)
    train_rows = np.flatnonzero([roles[i] == "train" for i in origin])
    test_rows = np.flatnonzero([roles[i] == "test" for i in origin])
    finetuned = None
    new_digests: dict[str, list[str]] = {}
    classes_before = head.num_classes  # the classes the head continues from the base (its rule's, if it stores one)
    with timer.step("imprint_s"):
        for local in np.argsort(ids):  # ascending model ids, so each new class gets exactly the next id
            rows = train_rows[y[train_rows] == local]
            if not len(rows):
                if ids[local] >= head.num_classes:
                    raise TrainingError(f"every photo of class {dataset.classes[local]!r} is already in {base.name}; "
                                        "nothing new to imprint for it", subject="data")
                continue
            head.add(X[rows], ids[local], dataset.classes[local])
            new_digests[str(ids[local])] = [digests[origin[r]] for r in rows]
        if options.finetune:
            finetuned = head.finetune(options.finetune_steps)
            say(f"fine-tuned: {finetuned.summary()}")
    rule_X = X[train_rows]
    rule_model = rule_input_model(base) if options.unknown else None
    if rule_model is not None:  # the rule reads the L2Norm input; the extractor of an imprinting model ends after it
        with timer.step("embed_rule_s"):
            rule_X = skeleton.embed(Interpreter(rule_model, normalization=normalization), embedded.dataset.subset(train_rows),
                                    options, skeleton.Timer(), say).X
    rule = _unknown_rule(base, options, classes_before, rule_X, np.asarray(ids)[y[train_rows]], head.num_classes)
    with timer.step("serialize_s"):
        layer = head.export()
        layer.state["digests"] = _merged(known, new_digests)  # so a later --resume can skip these photos
        if appending:
            written_on, appended = with_unknown_rule(base, layer, rule.rule)
            model_bytes = write_appended_classes(written_on, appended, output_type=options.output_type, normalization=normalization)
        else:
            layer = rule.rule.attach(layer) if rule.rule is not None else layer
            model_bytes = write_head(base, layer, output_type=output_type, normalization=normalization)
    report: dict[str, Any] = {
        "method": ("imprinting, original classes kept" if appending else "imprinting") + (" + finetune" if options.finetune else ""),
        "base_model": base.name,
        **skeleton.data_report(data, embedded),
        "classes": head.labels if head.num_classes <= 50 else f"{head.num_classes} classes (see labels.txt)",
        "num_classes": head.num_classes,
        "new_or_extended_classes": {dataset.classes[i]: ids[i] for i in range(len(ids))},
        "scale_factor": None if appending else head.scale,
        "keep_classes": kept_report(head, kept_layer) if appending else None,
        "output_type": output_type,
        "normalization": normalization.to_dict(),
        "train_images": int(len(train_rows)),
        "test_images": int(len(test_rows)),
        "skipped_already_imprinted": len(repeated),
        "not_held_out": kept_whole,
        "shots": {head.labels[i]: head.shots(i) for i in ids if i < head.num_classes},
        "finetune_loss": [finetuned.loss_before, finetuned.loss_after] if finetuned else None,
        "finetune": None if finetuned is None else {k: getattr(finetuned, k) for k in (
            "monitored_on", "best_step", "steps_run", "step_reductions", "stopped_early", "held_out", "nothing_to_learn")},
        "settings": skeleton.settings(options),
        "test_accuracy": None,
    }
    if len(test_rows):
        scores = head.predict_proba(X[test_rows]) if appending else head.saved_scores(X[test_rows], kernel_quantization)
        report["test"] = classification_report(y[test_rows], scores, dataset.classes, ids)
        report["test"]["misclassified"] = misclassified([embedded.dataset.paths[i] for i in test_rows], y[test_rows], scores,
                                                        dataset.classes, ids, head.labels)
        report["test_accuracy"] = report["test"]["top1_accuracy"]
        rule = rule.tested(X[test_rows], np.argmax(scores, axis=1))
    report["unknown_rule"] = rule.to_dict()
    report["leave_one_out"] = kept_leave_one_out(head) if appending else \
        _leave_one_out(X[train_rows], y[train_rows], dataset.classes, head.scale)
    report["times"] = timer.rounded()
    for warning in (report["keep_classes"] or {}).get("warnings", []):
        say(f"warning: {warning}")
    headline = f"{head.num_classes} classes, " + _accuracy_clause(report, dataset.classes, y[test_rows], options.shots)
    if appending:
        headline += kept_headline(report["keep_classes"])
    headline += rule.headline()
    written = skeleton.write_model_outputs(output, model_bytes, head.labels, report, report.get("test"),
                                  f"{base.path.name} imprinted: test split")
    return ModelJobResult(written, report, headline)
