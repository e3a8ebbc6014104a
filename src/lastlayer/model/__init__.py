"""The ``.tflite`` file as a plain object tree: where models come from, load and save, a readable view, editing helpers.

Nothing in this package knows about learning; heads are written through :mod:`lastlayer.model.edit`.
``zoo`` (known models, the search path, pinned downloads), ``io`` and ``validate/`` (read and
check before native code sees a model), ``file`` (:class:`~lastlayer.model.file.ModelFile`: a
model opened once), ``edgetpu`` and ``edgetpu_versions`` (the Edge TPU's requirements), and the
surgery, head and metadata modules. The names below are imported on first use (PEP 562), so that
light submodules (``zoo``, ``edgetpu_versions``) load without LiteRT.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_model": "lastlayer.model.io",
    "model_to_bytes": "lastlayer.model.io",
    "read_model_bytes": "lastlayer.model.io",
    "save_model": "lastlayer.model.io",
    "GraphView": "lastlayer.model.view",
    "inspect_model": "lastlayer.model.view",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lastlayer.model' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["GraphView", "inspect_model", "load_model", "model_to_bytes", "read_model_bytes", "save_model"]
