"""lastlayer: teach an existing TensorFlow Lite image classifier new classes on the device.

The public API is re-exported here and imported on first use (PEP 562), so ``import lastlayer``
and ``lastlayer --help`` do not load LiteRT, NumPy-heavy modules or Pillow. PyCoral's module
paths live in :mod:`lastlayer.pycoral`. See the README for a tour.
"""

from __future__ import annotations

import importlib
from typing import Any

from lastlayer.errors import (
    DatasetError,
    EdgeTpuError,
    ImageError,
    InferenceError,
    LabelFileError,
    LastLayerError,
    ModelError,
    ModelNotFoundError,
    NotFittedError,
    OutputError,
    TrainingError,
)

__version__ = "0.3.0"

# name -> module that defines it, in the order of the data flow (see the README's layout)
_LAZY = {
    "load_dataset": "lastlayer.files.datasets",
    "load_image": "lastlayer.images.decode",
    "load_resized": "lastlayer.images.decode",
    "open_model": "lastlayer.model.zoo",
    "resolve_model": "lastlayer.model.zoo",
    "ModelFile": "lastlayer.model.file",
    "ModelKind": "lastlayer.model.file",
    "load_model": "lastlayer.model.io",
    "model_to_bytes": "lastlayer.model.io",
    "save_model": "lastlayer.model.io",
    "inspect_model": "lastlayer.model.view",
    "read_label_file": "lastlayer.model.labels",
    "write_label_file": "lastlayer.model.labels",
    "extractor_model": "lastlayer.model.export",
    "read_imprinting_layer": "lastlayer.model.export",
    "write_head": "lastlayer.model.export",
    "read_class_layer": "lastlayer.model.keep",
    "write_appended_classes": "lastlayer.model.keep",
    "AppendedClasses": "lastlayer.layer",
    "DenseLayer": "lastlayer.layer",
    "Interpreter": "lastlayer.runtime.interpreter",
    "extract_embeddings": "lastlayer.runtime.batch",
    "Prediction": "lastlayer.runtime.prediction",
    "rank": "lastlayer.runtime.prediction",
    "ModelPredictor": "lastlayer.runtime.predictor",
    "ImprintingHead": "lastlayer.learn.imprinting",
    "KeepClassesHead": "lastlayer.learn.keep",
    "SoftmaxRegression": "lastlayer.learn.softmax",
    "UnknownRule": "lastlayer.learn.unknown",
    "train": "lastlayer.jobs.train",
    "TrainOptions": "lastlayer.jobs.train",
    "imprint": "lastlayer.jobs.imprint",
    "ImprintOptions": "lastlayer.jobs.imprint",
    "classify_files": "lastlayer.jobs.classify",
    "open_source": "lastlayer.sources.registry",
    "TeachingSession": "lastlayer.teach.session",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lastlayer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "DatasetError",
    "EdgeTpuError",
    "ImageError",
    "InferenceError",
    "LabelFileError",
    "LastLayerError",
    "ModelError",
    "ModelNotFoundError",
    "NotFittedError",
    "OutputError",
    "TrainingError",
    "__version__",
    *sorted(_LAZY),
]
