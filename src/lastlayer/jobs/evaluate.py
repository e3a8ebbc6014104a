"""``lastlayer evaluate``: accuracy, per-class metrics, confusion matrix and latency of a classifier.

A model that stores an unknown rule (see :mod:`lastlayer.jobs.unknown`) is also judged as it answers:
known-class accuracy counts the photos accepted *and* right, and with ``unknown_data`` (a folder of
photos of none of its classes) how many of those it rejected, with the threshold curve as a PNG.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lastlayer.embeddings.cache import dataset_digests
from lastlayer.errors import DatasetError, ImageError, ModelError
from lastlayer.files.datasets import Dataset, DatasetWarning, image_files_under, load_dataset, note_duplicates
from lastlayer.files.outputs import OutputSet, check_output_dir
from lastlayer.jobs.base import PathLike
from lastlayer.jobs.unknown import Decision, UnknownCheck, unknown_check
from lastlayer.model.file import ModelFile
from lastlayer.model.labels import read_label_file
from lastlayer.model.normalization import Values
from lastlayer.model.zoo import open_model, resolve_labels
from lastlayer.report.intervals import count
from lastlayer.report.metrics import classification_report, misclassified, rejection_curve, text_table
from lastlayer.report.plot import save_confusion_png, threshold_curve_png
from lastlayer.runtime import Interpreter, extract_embeddings


@dataclass
class EvaluateOptions:
    """Settings of ``lastlayer evaluate``."""

    labels: PathLike | None = None
    report_dir: PathLike | None = None
    compare: PathLike | None = None
    strict: bool = False
    progress: bool = True
    input_mean: Values | str | None = None  # the evaluated model's normalisation (None: decided from it)
    input_std: Values | str | None = None  # a compared model is always fed as decided from that model
    unknown_data: PathLike | None = None  # photos of none of the model's classes: how many does its unknown rule reject?
    unknown: bool = True  # apply the model's unknown rule (when it stores one)
    unknown_threshold: float | None = None  # overrides the rule's stored threshold


@dataclass
class _Scored:
    name: str
    labels: list[str]
    class_ids: list[int]
    scores: np.ndarray
    latencies: list[float]
    decision: Decision | None = None
    interpreter: Interpreter | None = None


def model_class_ids(classes: list[str], labels: list[str] | None, size: int, model: str) -> list[int]:
    """The model's class id of each dataset class, matched by label name (or by order without labels)."""
    if labels is None:
        if len(classes) > size:
            raise DatasetError(f"the data has {len(classes)} classes but {model} has {size} outputs and no labels; "
                               "give a label file", subject="labels")
        return list(range(len(classes)))
    by_name: dict[str, int] = {}
    for index, name in enumerate(labels):
        by_name.setdefault(name, index)
    missing = [c for c in classes if c not in by_name]
    if missing:
        raise DatasetError(f"class folder(s) {', '.join(missing)} are not classes of {model}; name the folders after its labels "
                           "(see labels.txt) or give a label file", subject="labels")
    return [by_name[c] for c in classes]


def _prepare(model: ModelFile, dataset: Dataset, labels_path: PathLike | None, normalization: tuple[Any, Any] = (None, None),
             check: UnknownCheck | None = None) -> _Scored:
    """The model's interpreter, labels and the class id of each dataset class (a class it lacks is refused here, before
    any image is run)."""
    interpreter = Interpreter(model, input_mean=normalization[0], input_std=normalization[1],
                              extra_outputs=check.extra_outputs if check else ())
    size = check.classes if check else interpreter.output_size
    if labels_path:
        table = read_label_file(resolve_labels(labels_path))
        labels = [table.get(i, str(i)) for i in range(size)]
    else:
        labels = model.label_list(size)
    ids = model_class_ids(dataset.classes, labels, size, model.name)
    return _Scored(model.name, labels or [str(i) for i in range(size)], ids, np.empty((0, size)), [], None, interpreter)


def _score(run: _Scored, model: ModelFile, dataset: Dataset, options: EvaluateOptions, on_error: Any,
           check: UnknownCheck | None = None) -> _Scored:
    """``run`` with every image of ``dataset`` scored (its latencies measured, the unknown rule decided)."""
    outputs = extract_embeddings(run.interpreter, dataset.paths, progress=options.progress, on_error=on_error, latencies=run.latencies,
                                 description=f"evaluating {model.path.name}")
    decision = check.decide(outputs) if check else None
    run.scores, run.decision = (decision.scores if decision else outputs), decision
    return run


@dataclass
class EvaluateResult:
    """An evaluation: the report (what ``report.json`` holds) and where it was written."""

    report: dict[str, Any] = field(default_factory=dict)
    data: str = ""

    def to_dict(self) -> dict[str, Any]:
        return self.report

    def to_text(self) -> str:
        report = self.report
        lines = [f"{report['model']} on {report['evaluated']} images of {self.data}", text_table(report),
                 f"mean latency {report['mean_latency_ms']} ms per image; {len(report['misclassified'])} misclassified"]
        if report.get("unknown"):
            lines.extend(unknown_text(report["unknown"]))
        if "compare" in report:
            other = report["compare"]
            top5 = "" if other.get("top5_accuracy") is None else f", top-5 {other['top5_accuracy']:.3f}"
            lines.append(f"compare {other['model']}: top-1 {other['top1_accuracy']:.3f}{top5}, "
                         f"latency {other['mean_latency_ms']} ms; agreement {report['agreement']:.3f} "
                         f"({len(report['disagreements'])} disagreements)")
        if report.get("report_json"):
            pictures = [path for path in (report.get("confusion_png"), (report.get("unknown") or {}).get("curve_png")) if path]
            lines.append(f"wrote {report['report_json']}" + "".join(f" and {path}" for path in pictures))
        return "\n".join(lines)


def _short_name(path: str) -> str:
    """A model's name for a title: its file name, with the folder when the file name alone says little."""
    name = Path(path)
    return f"{name.parent.name}/{name.name}" if name.parent.name and name.name in ("model.tflite", "extractor.tflite") else name.name


def evaluate(model: PathLike, data: PathLike, options: EvaluateOptions | None = None) -> EvaluateResult:
    """Evaluate a classifier on a class-per-folder dataset; optionally against a second model."""
    options = options or EvaluateOptions()
    if options.report_dir:
        check_output_dir(options.report_dir)
    models = [open_model(model)] + ([open_model(options.compare)] if options.compare else [])
    check = unknown_check(models[0], enabled=options.unknown, threshold=options.unknown_threshold)
    if options.unknown_data is not None and check is None:
        why = "its unknown rule is turned off" if not options.unknown else "it carries no unknown rule"
        raise ModelError(f"{models[0].name} cannot reject the photos of {options.unknown_data}: {why}; evaluate a model written "
                         "with an unknown rule, with the rule on", subject="unknown_data")
    dataset = load_dataset(data)
    note_duplicates(dataset, dataset_digests(dataset))
    others = unknown_photos(options.unknown_data) if options.unknown_data is not None else []
    unreadable: list[str] = []

    def report_bad(path: Any, error: ImageError) -> None:
        if options.strict:
            raise error
        if str(path) not in unreadable:
            unreadable.append(str(path))
            warnings.warn(f"skipped unreadable image: {error}", DatasetWarning, stacklevel=2)

    prepared = [_prepare(models[0], dataset, options.labels, (options.input_mean, options.input_std), check)]
    if len(models) == 2:
        prepared.append(_prepare(models[1], dataset, None))
    runs = [_score(run, model, dataset, options, report_bad, check if index == 0 else None)
            for index, (run, model) in enumerate(zip(prepared, models))]
    keep = np.ones(len(dataset), dtype=bool)
    for run in runs:
        keep &= ~np.isnan(run.scores).any(axis=1)
    paths = [p for p, k in zip(dataset.paths, keep) if k]
    y = dataset.labels[keep]
    sections = []
    for run in runs:
        scores = run.scores[keep]
        section = classification_report(y, scores, dataset.classes, run.class_ids)
        section["model"] = run.name
        section["mean_latency_ms"] = round(1000 * float(np.mean(run.latencies)), 3) if run.latencies else None
        section["misclassified"] = misclassified(paths, y, scores, dataset.classes, run.class_ids, run.labels)
        sections.append(section)
    report: dict[str, Any] = {"data": str(data), "images": len(dataset), "evaluated": int(keep.sum()),
                              "unreadable": unreadable, "notes": dataset.notes, **sections[0]}
    if len(runs) == 2:
        first = [runs[0].labels[int(i)] for i in np.argmax(runs[0].scores[keep], axis=1)]
        second = [runs[1].labels[int(i)] for i in np.argmax(runs[1].scores[keep], axis=1)]
        differ = [{"file": str(p), "model": a, "compare": b} for p, a, b in zip(paths, first, second) if a != b]
        report["compare"] = sections[1]
        report["agreement"] = 1 - len(differ) / max(1, len(paths))
        report["disagreements"] = differ
        if runs[0].scores.shape == runs[1].scores.shape:
            report["max_score_difference"] = float(np.abs(runs[0].scores[keep] - runs[1].scores[keep]).max())
    if check is not None:
        other = _run_others(runs[0], check, others, options, report_bad) if options.unknown_data is not None else None
        report["unknown"] = unknown_section(check, runs[0], keep, y, paths, dataset.classes, other, options.unknown_data)
    if options.report_dir:
        write_report(options.report_dir, report, sections, [f"{_short_name(run.name)} on {Path(data).name}" for run in runs])
    return EvaluateResult(report, str(data))


def unknown_photos(folder: PathLike) -> list[Path]:
    """The image files under ``folder`` (any depth, hidden ones left out), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"the folder of unknown photos {root} does not exist or is not a folder; give a folder of images",
                           subject="unknown_data")
    found = image_files_under(root)
    if not found:
        raise DatasetError(f"the folder of unknown photos {root} holds no images (.jpg, .png, ...); give a folder of images",
                           subject="unknown_data")
    return found


def _run_others(run: _Scored, check: UnknownCheck, paths: list[Path], options: EvaluateOptions, on_error: Any) -> tuple[list[Path], Decision]:
    """The readable photos of the unknown folder and the rule's decision on each."""
    outputs = extract_embeddings(run.interpreter, paths, progress=options.progress, on_error=on_error,
                                 description=f"unknown photos of {Path(str(options.unknown_data)).name}")
    readable = ~np.isnan(outputs).any(axis=1)
    if not readable.any():
        raise DatasetError(f"no photo of {options.unknown_data} could be read; replace the unreadable files", subject="unknown_data")
    return [p for p, ok in zip(paths, readable) if ok], check.decide(outputs[readable])


def unknown_section(check: UnknownCheck, run: _Scored, keep: np.ndarray, y: np.ndarray, paths: list[Path], classes: list[str],
                    other: tuple[list[Path], Decision] | None, other_data: PathLike | None) -> dict[str, Any]:
    """The report's ``unknown`` part: known-class accuracy with the rule, rejected known photos, the other photos, the curve."""
    decision = run.decision
    unknown, similarity = decision.unknown[keep], decision.similarity[keep]
    predicted = np.argmax(decision.scores[keep], axis=1)
    right = predicted == np.asarray(run.class_ids)[y]
    accepted_right = int(np.sum(right & ~unknown))
    section: dict[str, Any] = {**check.to_dict(), "known": {
        "images": int(len(y)), "answered_unknown": int(unknown.sum()),
        "accuracy": count(accepted_right, len(y)).to_dict(), "accuracy_without_rule": round(float(np.mean(right)), 6),
        "answered_unknown_files": [{"file": str(p), "true": classes[t], "similarity": round(float(s), 6)}
                                   for p, t, s, u in zip(paths, y, similarity, unknown) if u]}}
    if other is not None:
        other_paths, other_decision = other
        section["other"] = {"data": str(other_data), "images": len(other_paths),
                            "rejected": count(int(other_decision.unknown.sum()), len(other_paths)).to_dict()}
    section["curve"] = rejection_curve(similarity, right, other[1].similarity if other is not None else None)
    return section


def unknown_text(section: dict[str, Any]) -> list[str]:
    """The unknown part of the text report."""
    known = section["known"]
    accuracy = known["accuracy"]
    source = "stored in the model" if section["source"] == "model" else "given"
    lines = [f"unknown rule: similarity threshold {section['threshold']:.3f} ({source}); known-class accuracy "
             f"{accuracy['value']:.3f} (accepted and {_count_text(accuracy, 'right')}; {known['accuracy_without_rule']:.3f} without "
             f"the rule); {known['answered_unknown']} of {known['images']} known photos answered unknown"]
    if section.get("other"):
        other = section["other"]
        lines.append(f"{other['data']}: {_count_text(other['rejected'], 'rejected as unknown')}")
    return lines


def _count_text(data: dict[str, Any], what: str) -> str:
    return count(data["count"], data["of"], data["confidence"]).describe(what)



def write_report(report_dir: PathLike, report: dict[str, Any], sections: list[dict[str, Any]], titles: list[str]) -> None:
    """Write ``report.json``, ``confusion.png`` and (with an unknown rule) ``unknown.png`` into ``report_dir`` together
    (all or none; see ``OutputSet``).

    Sets ``report["confusion_png"]``, ``report["unknown"]["curve_png"]`` and ``report["report_json"]`` to where they were written.
    """
    folder = Path(report_dir)
    with OutputSet(folder) as staged:
        png = save_confusion_png(sections, staged.staging_path("confusion.png"), titles)
        if png is None:
            staged.remove("confusion.png")
        report["confusion_png"] = str(folder / "confusion.png") if png else None
        unknown = report.get("unknown")
        if unknown:
            other = Path(unknown["other"]["data"]) if unknown.get("other") else None
            title = f"unknown threshold: {titles[0]}" + (f" vs {other.parent.name}/{other.name}" if other else "")
            staged.add_bytes("unknown.png", threshold_curve_png(unknown["curve"], unknown["threshold"], title))
            unknown["curve_png"] = str(folder / "unknown.png")
        else:
            staged.remove("unknown.png")  # a curve from an earlier run would describe another rule
        report["report_json"] = str(folder / "report.json")
        staged.add_text("report.json", json.dumps(report, indent=2) + "\n")
        staged.commit()
