"""The ``.tflite`` file as a plain object tree: load and save, a readable view, editing helpers.

Nothing in this package knows about learning; heads are written through :mod:`lastlayer.model.edit`.
"""

from lastlayer.model.io import load_model, model_to_bytes, read_model_bytes, save_model
from lastlayer.model.view import GraphView, inspect_model

__all__ = ["GraphView", "inspect_model", "load_model", "model_to_bytes", "read_model_bytes", "save_model"]
