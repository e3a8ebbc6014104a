"""``lastlayer evaluate``: accuracy, per-class metrics, confusion matrix and latency of a classifier."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lastlayer.data import Dataset, DatasetWarning, load_dataset, note_duplicates
from lastlayer.embeddings import dataset_digests
from lastlayer.errors import DatasetError, ImageError
from lastlayer.files import OutputSet
from lastlayer.jobs.base import PathLike
from lastlayer.model.file import ModelFile
from lastlayer.model.labels import read_label_file
from lastlayer.model.normalization import Values
from lastlayer.plot import save_confusion_png
from lastlayer.report import classification_report, misclassified, text_table
from lastlayer.runtime import Interpreter, extract_embeddings
from lastlayer.zoo import open_model, resolve_labels


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


@dataclass
class _Scored:
    name: str
    labels: list[str]
    class_ids: list[int]
    scores: np.ndarray
    latencies: list[float]


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


def _score(model: ModelFile, dataset: Dataset, labels_path: PathLike | None, options: EvaluateOptions, on_error: Any,
           normalization: tuple[Any, Any] = (None, None)) -> _Scored:
    interpreter = Interpreter(model, input_mean=normalization[0], input_std=normalization[1])
    if labels_path:
        table = read_label_file(resolve_labels(labels_path))
        labels = [table.get(i, str(i)) for i in range(interpreter.output_size)]
    else:
        labels = model.label_list(interpreter.output_size)
    ids = model_class_ids(dataset.classes, labels, interpreter.output_size, model.name)
    latencies: list[float] = []
    scores = extract_embeddings(interpreter, dataset.paths, progress=options.progress, on_error=on_error, latencies=latencies,
                                description=f"evaluating {model.path.name}")
    return _Scored(model.name, labels or [str(i) for i in range(interpreter.output_size)], ids, scores, latencies)


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
        if "compare" in report:
            other = report["compare"]
            top5 = "" if other.get("top5_accuracy") is None else f", top-5 {other['top5_accuracy']:.3f}"
            lines.append(f"compare {other['model']}: top-1 {other['top1_accuracy']:.3f}{top5}, "
                         f"latency {other['mean_latency_ms']} ms; agreement {report['agreement']:.3f} "
                         f"({len(report['disagreements'])} disagreements)")
        if report.get("report_json"):
            lines.append(f"wrote {report['report_json']}" + (f" and {report['confusion_png']}" if report.get("confusion_png") else ""))
        return "\n".join(lines)


def _short_name(path: str) -> str:
    """A model's name for a title: its file name, with the folder when the file name alone says little."""
    name = Path(path)
    return f"{name.parent.name}/{name.name}" if name.parent.name and name.name in ("model.tflite", "extractor.tflite") else name.name


def evaluate(model: PathLike, data: PathLike, options: EvaluateOptions | None = None) -> EvaluateResult:
    """Evaluate a classifier on a class-per-folder dataset; optionally against a second model."""
    options = options or EvaluateOptions()
    models = [open_model(model)] + ([open_model(options.compare)] if options.compare else [])
    dataset = load_dataset(data)
    note_duplicates(dataset, dataset_digests(dataset))
    unreadable: list[str] = []

    def report_bad(path: Any, error: ImageError) -> None:
        if options.strict:
            raise error
        if str(path) not in unreadable:
            unreadable.append(str(path))
            warnings.warn(f"skipped unreadable image: {error}", DatasetWarning, stacklevel=2)

    runs = [_score(models[0], dataset, options.labels, options, report_bad, (options.input_mean, options.input_std))]
    if len(models) == 2:
        runs.append(_score(models[1], dataset, None, options, report_bad))
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
    if options.report_dir:
        write_report(options.report_dir, report, sections, [f"{_short_name(run.name)} on {Path(data).name}" for run in runs])
    return EvaluateResult(report, str(data))


def write_report(report_dir: PathLike, report: dict[str, Any], sections: list[dict[str, Any]], titles: list[str]) -> None:
    """Write ``report.json`` and ``confusion.png`` into ``report_dir`` together (both or neither; see ``OutputSet``).

    Sets ``report["confusion_png"]`` and ``report["report_json"]`` to where they were written.
    """
    folder = Path(report_dir)
    with OutputSet(folder) as staged:
        png = save_confusion_png(sections, staged.staging_path("confusion.png"), titles)
        if png is None:
            staged.remove("confusion.png")
        report["confusion_png"] = str(folder / "confusion.png") if png else None
        report["report_json"] = str(folder / "report.json")
        staged.add_text("report.json", json.dumps(report, indent=2) + "\n")
        staged.commit()
