"""Load a ``.tflite`` file into LiteRT's flatbuffers object tree (``ModelT``) and pack it back.

Two checks guard every load: the ``TFL3`` file identifier, then LiteRT's own flatbuffer verifier
(run by constructing an interpreter without delegates), so that a truncated or garbage file is a
clear :class:`~lastlayer.errors.ModelError` and never reaches code that could crash on it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import flatbuffers
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.files import atomic_write_bytes

TFLITE_FILE_IDENTIFIER = b"TFL3"
ModelSource = Union[str, "os.PathLike[str]", bytes, bytearray]


def read_model_bytes(path: Union[str, os.PathLike[str]]) -> bytes:
    """Read a model file and check that it is a valid TensorFlow Lite flatbuffer."""
    model_path = Path(path)
    if not model_path.exists():
        raise ModelError(f"model file {model_path} does not exist; check the path or pass --model with an existing .tflite file")
    if model_path.is_dir():
        raise ModelError(f"model path {model_path} is a folder; pass the .tflite file inside it")
    try:
        data = model_path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model file {model_path}: {exc.strerror or exc}") from None
    verify_model_bytes(data, str(model_path))
    return data


def verify_model_bytes(data: bytes, source: str = "<bytes>") -> None:
    """Raise :class:`ModelError` unless ``data`` is a complete, verifiable TFLite flatbuffer."""
    hint = "re-download or re-export the model (it must be a TensorFlow Lite .tflite file)"
    if len(data) < 8 or data[4:8] != TFLITE_FILE_IDENTIFIER:
        raise ModelError(f"{source} is not a TensorFlow Lite model (no 'TFL3' identifier); {hint}")
    # Imported here: the interpreter module is heavy and only the verifier is wanted.
    from ai_edge_litert import interpreter as litert

    try:
        litert.Interpreter(
            model_content=bytes(data),
            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    except ValueError:
        raise ModelError(f"{source} is truncated or corrupt (the TFLite verifier rejected it); {hint}") from None


def load_model(source: ModelSource) -> schema.ModelT:
    """Return the model as a mutable ``ModelT`` object tree, from a path or from bytes."""
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), "<model bytes>"
        verify_model_bytes(data, name)
    else:
        data, name = read_model_bytes(source), str(source)
    try:
        return schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # the pure-Python reader raises assorted errors on odd input
        raise ModelError(f"{name} could not be parsed as a TFLite model ({exc}); re-export the model") from None


def model_to_bytes(model: schema.ModelT) -> bytes:
    """Pack a ``ModelT`` into ``.tflite`` bytes (with the ``TFL3`` identifier)."""
    builder = flatbuffers.Builder(1024 * 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    return bytes(builder.Output())


def save_model(model: Union[schema.ModelT, bytes], path: Union[str, os.PathLike[str]]) -> Path:
    """Write a model (object tree or bytes) to ``path`` atomically and return the path."""
    data = model if isinstance(model, (bytes, bytearray)) else model_to_bytes(model)
    return atomic_write_bytes(path, bytes(data))
