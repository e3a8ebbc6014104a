"""lastlayer: teach an existing TensorFlow Lite image classifier new classes on the device.

The public API re-exported here; see the README for a tour.
"""

__version__ = "0.1.0"

from lastlayer.classify import Class, get_classes, get_classes_from_scores, get_scores  # noqa: E402
from lastlayer.errors import (  # noqa: E402
    DatasetError,
    EdgeTpuError,
    ImageError,
    InferenceError,
    LastLayerError,
    ModelError,
    ModelNotFoundError,
    OutputError,
    TrainingError,
)
from lastlayer.images import load_image, load_resized  # noqa: E402
from lastlayer.learn.imprinting import ImprintingEngine  # noqa: E402
from lastlayer.learn.softmax import SoftmaxRegression  # noqa: E402
from lastlayer.model import inspect_model, load_model, model_to_bytes, save_model  # noqa: E402
from lastlayer.model.labels import read_label_file, write_label_file  # noqa: E402
from lastlayer.runtime import Interpreter, extract_embeddings, make_interpreter  # noqa: E402
from lastlayer.zoo import resolve_model  # noqa: E402

__all__ = [
    "Class",
    "DatasetError",
    "EdgeTpuError",
    "ImageError",
    "ImprintingEngine",
    "InferenceError",
    "Interpreter",
    "LastLayerError",
    "ModelError",
    "ModelNotFoundError",
    "OutputError",
    "SoftmaxRegression",
    "TrainingError",
    "__version__",
    "extract_embeddings",
    "get_classes",
    "get_classes_from_scores",
    "get_scores",
    "inspect_model",
    "load_image",
    "load_model",
    "load_resized",
    "make_interpreter",
    "model_to_bytes",
    "read_label_file",
    "resolve_model",
    "save_model",
    "write_label_file",
]
