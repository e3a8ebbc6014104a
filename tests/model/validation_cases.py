"""Helpers for the validator's tests: real models (shared, seeds, written by lastlayer) edited to break one rule."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.model.io import load_model, model_to_bytes

from conftest import MODELS, ROOT, need

sys.path.insert(0, str(ROOT))
from fuzz.mutate import parse  # noqa: E402
from fuzz.seeds import SEEDS  # noqa: E402

Edit = Callable[[schema.ModelT], None]


def tree(name: str) -> schema.ModelT:
    """A fresh object tree of a shared model or of a fuzz seed (``float:...``, ``written:...``)."""
    if name in SEEDS:
        return parse(SEEDS[name](need(MODELS)))
    return load_model(need(MODELS / name))


def ops(model: schema.ModelT, name: str) -> list[schema.OperatorT]:
    code = getattr(schema.BuiltinOperator, name)
    indices = {i for i, c in enumerate(model.operatorCodes) if max(c.builtinCode, c.deprecatedBuiltinCode) == code}
    return [op for op in model.subgraphs[0].operators if op.opcodeIndex in indices]


def write(model: schema.ModelT, folder: Path, name: str = "edited.tflite") -> Path:
    path = folder / name
    path.write_bytes(model_to_bytes(model))
    return path


def edited(name: str, edit: Edit, folder: Path) -> Path:
    """A file holding model ``name`` after ``edit(tree)``."""
    model = tree(name)
    edit(model)
    return write(model, folder, f"edited_{name.replace(':', '_')}")


def rejects(path: Path, *fragments: str) -> str:
    """The one-line error loading ``path`` gives; it names the file and holds every fragment."""
    with pytest.raises(ModelError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def accepts(model: schema.ModelT, folder: Path, name: str = "accepted.tflite") -> Path:
    """Write ``model`` and check that lastlayer loads it (validator and LiteRT's verifier)."""
    path = write(model, folder, name)
    load_model(path)
    return path
