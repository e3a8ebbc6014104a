"""Running models: the interpreter (CPU or Edge TPU), its delegate, and batch embedding extraction."""

from lastlayer.runtime.batch import extract_embeddings
from lastlayer.runtime.delegate import edgetpu_library_name, load_edgetpu_delegate
from lastlayer.runtime.interpreter import Interpreter, as_model_file

__all__ = ["Interpreter", "as_model_file", "edgetpu_library_name", "extract_embeddings", "load_edgetpu_delegate"]
