"""Load a ``.tflite`` file into LiteRT's flatbuffers object tree (``ModelT``) and pack it back.

Every load goes through four gates, in this order, so that no file can crash the process:

1. the ``TFL3`` file identifier;
2. a pure-Python parse (``ModelT.InitFromPackedBuf``), any failure of which is a clean error;
3. :func:`~lastlayer.model.validate.validate_model`, which refuses what the C++ runtime does not
   survive (indices out of range, missing inputs, bad quantization, wrong buffer sizes...);
4. only then LiteRT's own flatbuffer verifier (constructing an interpreter without delegates).

Each gate raises a one-line :class:`~lastlayer.errors.ModelError` naming the file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Optional, Union

import flatbuffers
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.files.outputs import atomic_write_bytes
from lastlayer.model.validate import validate_model

TFLITE_FILE_IDENTIFIER = b"TFL3"
ModelSource = Union[str, "os.PathLike[str]", bytes, bytearray]
_HINT = "re-download or re-export the model (it must be a TensorFlow Lite .tflite file)"


def read_file(path: Union[str, os.PathLike[str]]) -> tuple[bytes, str]:
    """A model file's bytes and its name, unchecked; a one-line :class:`ModelError` saying why it cannot be read."""
    model_path = Path(path)
    name = str(model_path)
    try:
        if model_path.is_dir():
            raise ModelError(f"model path {name} is a folder; pass the .tflite file inside it")
        return model_path.read_bytes(), name
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            if model_path.is_symlink():
                raise ModelError(f"model file {name} is a broken symbolic link; point it at an existing .tflite file") from None
            raise ModelError(f"model file {name} does not exist; check the path or pass an existing .tflite file") from None
        if exc.errno == errno.ELOOP:
            raise ModelError(f"model path {name} is a symbolic link loop; point it at a real .tflite file") from None
        if exc.errno == errno.EISDIR:
            raise ModelError(f"model path {name} is a folder; pass the .tflite file inside it") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ModelError(f"model file {name} is not readable (permission denied); fix its permissions") from None
        raise ModelError(f"cannot read model file {name}: {exc.strerror or exc}") from None


def _parse(data: bytes, source: str) -> schema.ModelT:
    """Identifier check, then the pure-Python parse and the structural validation."""
    if len(data) < 8 or data[4:8] != TFLITE_FILE_IDENTIFIER:
        raise ModelError(f"{source} is not a TensorFlow Lite model (no 'TFL3' identifier); {_HINT}")
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # the reader raises assorted errors (struct.error, IndexError, RecursionError...)
        detail = type(exc).__name__
        raise ModelError(f"{source} is truncated or corrupt (it cannot be parsed: {detail}); {_HINT}") from None
    validate_model(model, source, file_size=len(data))
    return normalise(model)


def _native_verify(data: bytes, source: str) -> None:
    # Imported here: the interpreter module is heavy and only the verifier is wanted.
    from ai_edge_litert import interpreter as litert

    try:
        litert.Interpreter(
            model_content=bytes(data),
            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    except (ValueError, RuntimeError):
        raise ModelError(f"{source} is truncated or corrupt (the TFLite verifier rejected it); {_HINT}") from None


def read_model_bytes(path: Union[str, os.PathLike[str]]) -> bytes:
    """Read a model file and check that it is a valid TensorFlow Lite flatbuffer."""
    data, name = read_file(path)
    verify_model_bytes(data, name)
    return data


def verify_model_bytes(data: bytes, source: str = "<bytes>") -> None:
    """Raise :class:`ModelError` unless ``data`` is a complete, valid TFLite flatbuffer.

    The bytes are parsed and validated in Python before any native code sees them.
    """
    data = bytes(data)
    _parse(data, source)
    _native_verify(data, source)


def load_model(model: ModelSource, /, *, source: Optional[str] = None) -> schema.ModelT:
    """Return the model as a mutable ``ModelT`` object tree, from a path or from bytes.

    ``source`` names the model in error messages (default: the path, or ``"<model bytes>"``).
    The file is read and parsed once; it is validated before LiteRT's native verifier sees it.
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, name = bytes(model), source or "<model bytes>"
    else:
        data, name = read_file(model)
        name = source or name
    tree = _parse(data, name)
    _native_verify(data, name)
    return tree


def _ints(values: object) -> list[int] | None:
    if values is None:
        return None
    return [int(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]


def normalise(tree: schema.ModelT) -> schema.ModelT:
    """Turn the NumPy index arrays the flatbuffers reader leaves into plain ``list[int]``, in place.

    Every tree :func:`load_model` returns is normalised, so graph code can use ``in``, ``len`` and
    list comparisons on operator inputs, outputs and shapes without casting.
    """
    for graph in tree.subgraphs or []:
        graph.inputs, graph.outputs = _ints(graph.inputs) or [], _ints(graph.outputs) or []
        graph.tensors = list(graph.tensors or [])
        graph.operators = list(graph.operators or [])
        for tensor in graph.tensors:
            tensor.shape = _ints(tensor.shape) or []
            tensor.shapeSignature = _ints(tensor.shapeSignature)
        for op in graph.operators:
            op.inputs, op.outputs = _ints(op.inputs) or [], _ints(op.outputs) or []
            op.intermediates = _ints(op.intermediates)
    tree.operatorCodes = list(tree.operatorCodes or [])
    tree.buffers = list(tree.buffers or [])
    return tree


def model_to_bytes(model: schema.ModelT) -> bytes:
    """Pack a ``ModelT`` into ``.tflite`` bytes (with the ``TFL3`` identifier)."""
    builder = flatbuffers.Builder(1024 * 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    return bytes(builder.Output())


def save_model(model: Union[schema.ModelT, bytes], path: Union[str, os.PathLike[str]]) -> Path:
    """Write a model (object tree or bytes) to ``path`` atomically and return the path."""
    data = model if isinstance(model, (bytes, bytearray)) else model_to_bytes(model)
    return atomic_write_bytes(path, bytes(data))
