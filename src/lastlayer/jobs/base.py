"""The skeleton every job shares: announce the dataset, embed it (cached), time the steps, write outputs.

A job returns a result dataclass with ``to_dict`` (for ``--json``) and ``to_text`` (for the
terminal). It reports progress through ``log``, which defaults to :func:`stderr_log` (one line on
stderr); the CLI passes its own (quiet with ``--quiet``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Union

from lastlayer.embeddings.cache import EmbeddedDataset, dataset_digests, embed_dataset
from lastlayer.embeddings.database import CacheDatabase
from lastlayer.files.datasets import Dataset, load_dataset
from lastlayer.files.outputs import OutputSet, check_output_dir  # noqa: F401  (the jobs check their output with it first)
from lastlayer.model.labels import format_labels
from lastlayer.report.plot import save_confusion_png
from lastlayer.runtime import Interpreter

PathLike = Union[str, "os.PathLike[str]"]
Log = Callable[[str], None]


def stderr_log(line: str) -> None:
    """The default ``log``: one line on stderr."""
    print(line, file=sys.stderr)


@dataclass
class DataOptions:
    """What every job over a dataset shares."""

    use_cache: bool = True
    strict: bool = False
    progress: bool = True


class Timer:
    """Named wall-clock times of a job's steps, in seconds."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = time.perf_counter() - start

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.times.items()}


def announced_dataset(source: PathLike, log: Log) -> Dataset:
    """Load a dataset and log one line with its classes and counts."""
    dataset = load_dataset(source)
    counts = dataset.counts()
    classes = "class" if len(counts) == 1 else "classes"
    log(f"{len(dataset)} images in {len(counts)} {classes}: " + ", ".join(f"{k} ({v})" for k, v in counts.items()))
    return dataset


def content_digests(dataset: Dataset, options: DataOptions) -> list[str]:
    """The SHA-256 of each image of ``dataset`` (through the cache's stat shortcut unless ``options.use_cache`` is off)."""
    with CacheDatabase() if options.use_cache else nullcontext() as database:
        return dataset_digests(dataset, database)


def embed(interpreter: Interpreter, dataset: Dataset, options: DataOptions, timer: Timer, log: Log) -> EmbeddedDataset:
    """Embed ``dataset`` (cache first), timed as ``embed_s``."""
    with timer.step("embed_s"):
        embedded = embed_dataset(interpreter, dataset, use_cache=options.use_cache, strict=options.strict, progress=options.progress)
    if embedded.cached:
        log(f"{embedded.cached} embeddings from the cache")
    return embedded


def settings(options: DataOptions) -> dict[str, Any]:
    """A job's options as the report records them (JSON-ready; display-only ones left out)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(options).items() if k != "progress"}


def data_report(source: PathLike, embedded: EmbeddedDataset) -> dict[str, Any]:
    """The report fields every job over a dataset shares: where, how many, what was skipped or cached."""
    return {"data": str(source), "images": len(embedded.dataset) + len(embedded.unreadable), "unreadable": embedded.unreadable,
            "notes": embedded.dataset.notes, "embeddings_from_cache": embedded.cached}


@dataclass
class WrittenModel:
    """The files a learning job wrote."""

    model_path: Path
    labels_path: Path
    report_path: Path
    confusion_png: Path | None = None


def write_model_outputs(out_dir: PathLike, model_bytes: bytes, labels: list[str], report: dict[str, Any],
                        evaluation: dict[str, Any] | None, title: str) -> WrittenModel:
    """Write ``model.tflite``, ``labels.txt``, ``report.json`` (and ``confusion.png``) into ``out_dir``, all at once.

    The folder is created only now, after every input was checked and the model was built. The four
    files are staged and committed together (:class:`lastlayer.files.outputs.OutputSet`): after any
    interruption the folder holds the complete earlier set or the complete new one. A
    ``confusion.png`` of an earlier run is removed when this run has none.
    """
    out = Path(out_dir)
    with OutputSet(out) as staged:
        model_path = staged.add_bytes("model.tflite", model_bytes)
        labels_path = staged.add_text("labels.txt", format_labels(labels))
        png = None
        if evaluation and evaluation.get("samples"):
            png = save_confusion_png(evaluation, staged.staging_path("confusion.png"), title)
        if png is None:
            staged.remove("confusion.png")
        report["confusion_png"] = str(out / "confusion.png") if png else None
        report_path = staged.add_text("report.json", json.dumps(report, indent=2) + "\n")
        staged.commit()
    return WrittenModel(model_path, labels_path, report_path, out / "confusion.png" if png else None)


@dataclass
class ModelJobResult:
    """What a learning job (train, imprint) wrote and measured.

    ``report`` is exactly what ``report.json`` holds; ``headline`` the one-line summary.
    """

    written: WrittenModel
    report: dict[str, Any] = field(default_factory=dict)
    headline: str = ""

    @property
    def model_path(self) -> Path:
        return self.written.model_path

    @property
    def labels_path(self) -> Path:
        return self.written.labels_path

    @property
    def report_path(self) -> Path:
        return self.written.report_path

    def summary(self) -> dict[str, Any]:
        """The short machine-readable summary (what ``--json`` prints)."""
        return {"model": str(self.model_path), "labels": str(self.labels_path), "report": str(self.report_path),
                "headline": self.headline, "times": self.report.get("times", {})}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "details": self.report}

    def to_text(self) -> str:
        return f"{self.headline}\nwrote {self.model_path}, {self.labels_path}, {self.report_path}"
