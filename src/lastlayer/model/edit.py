"""Graph-editing primitives on the ``ModelT`` object tree, shared by every writer of models.

Heads appended by the learners, the cut and join commands and the small graphs in the tests all
go through these few functions, so opcodes are deduplicated, buffers are laid out the same way and
no code builds flatbuffer offsets by hand.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.names import builtin_code, custom_code

_NUMPY_TO_TENSOR_TYPE = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.int32): schema.TensorType.INT32,
    np.dtype(np.uint8): schema.TensorType.UINT8,
    np.dtype(np.int8): schema.TensorType.INT8,
    np.dtype(np.int16): schema.TensorType.INT16,
    np.dtype(np.int64): schema.TensorType.INT64,
}
TENSOR_TYPE_TO_NUMPY = {v: k for k, v in _NUMPY_TO_TENSOR_TYPE.items()}


def tensor_type(dtype: np.dtype | type) -> int:
    """The schema ``TensorType`` for a NumPy dtype."""
    return _NUMPY_TO_TENSOR_TYPE[np.dtype(dtype)]


def new_model(description: str = "lastlayer") -> schema.ModelT:
    """An empty version-3 model with one empty subgraph and the mandatory empty buffer 0."""
    model = schema.ModelT()
    model.version = 3
    model.description = description
    model.buffers = [schema.BufferT()]
    model.operatorCodes = []
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.inputs, subgraph.outputs = [], [], [], []
    subgraph.name = "main"
    model.subgraphs = [subgraph]
    return model


def quantization(
    scale: float | Sequence[float], zero_point: int | Sequence[int], axis: int = 0
) -> schema.QuantizationParametersT:
    """Quantization parameters; sequences give per-axis quantization along ``axis``."""
    params = schema.QuantizationParametersT()
    params.scale = [float(s) for s in np.atleast_1d(scale)]
    params.zeroPoint = [int(z) for z in np.atleast_1d(zero_point)]
    params.quantizedDimension = int(axis)
    return params


def add_buffer(model: schema.ModelT, data: np.ndarray | bytes | None = None) -> int:
    """Append a buffer (empty for activations) and return its index."""
    buffer = schema.BufferT()
    if data is not None:
        raw = data if isinstance(data, (bytes, bytearray)) else np.ascontiguousarray(data).tobytes()
        buffer.data = np.frombuffer(bytes(raw), dtype=np.uint8)
    model.buffers = list(model.buffers or [])
    model.buffers.append(buffer)
    return len(model.buffers) - 1


def add_tensor(
    model: schema.ModelT,
    name: str,
    shape: Sequence[int],
    dtype: np.dtype | type,
    *,
    quant: schema.QuantizationParametersT | None = None,
    data: np.ndarray | None = None,
    subgraph: int = 0,
) -> int:
    """Append a tensor (a constant when ``data`` is given) to a subgraph; return its index."""
    tensor = schema.TensorT()
    tensor.name = name
    tensor.shape = [int(d) for d in shape]
    tensor.type = tensor_type(dtype)
    tensor.quantization = quant
    if data is not None:
        array = np.asarray(data, dtype=dtype)
        if array.size != int(np.prod(shape)):
            raise ValueError(f"tensor {name}: {array.size} values do not fill shape {list(shape)}")
        tensor.buffer = add_buffer(model, array)
    else:
        tensor.buffer = add_buffer(model)
    graph = model.subgraphs[subgraph]
    graph.tensors = list(graph.tensors or [])
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def opcode_index(model: schema.ModelT, code: int, *, custom: str | None = None, version: int = 1) -> int:
    """Index of the operator code ``code`` (reused when present, else appended)."""
    codes = model.operatorCodes = list(model.operatorCodes or [])
    for index, existing in enumerate(codes):
        if builtin_code(existing) == code and (custom is None or custom_code(existing) == custom):
            existing.version = max(int(existing.version), version)
            return index
    entry = schema.OperatorCodeT()
    entry.builtinCode = code
    entry.deprecatedBuiltinCode = min(code, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    entry.version = version
    if custom is not None:
        entry.customCode = custom
    codes.append(entry)
    return len(codes) - 1


def add_operator(
    model: schema.ModelT,
    code: int,
    inputs: Sequence[int],
    outputs: Sequence[int],
    *,
    options_type: int = 0,
    options: object = None,
    version: int = 1,
    subgraph: int = 0,
) -> int:
    """Append an operator to a subgraph's execution order; return its index."""
    op = schema.OperatorT()
    op.opcodeIndex = opcode_index(model, code, version=version)
    op.inputs = [int(i) for i in inputs]
    op.outputs = [int(i) for i in outputs]
    op.builtinOptionsType = options_type
    op.builtinOptions = options
    graph = model.subgraphs[subgraph]
    graph.operators = list(graph.operators or [])
    graph.operators.append(op)
    return len(graph.operators) - 1


def set_io(model: schema.ModelT, inputs: Sequence[int], outputs: Sequence[int], subgraph: int = 0) -> None:
    """Set a subgraph's input and output tensor lists."""
    graph = model.subgraphs[subgraph]
    graph.inputs = [int(i) for i in inputs]
    graph.outputs = [int(i) for i in outputs]


def remap_operator(op: schema.OperatorT, opcode_index: int, tensor_map: dict[int, int]) -> schema.OperatorT:
    """Point ``op`` at a new operator code and renumbered tensors (``-1``, an absent optional input, stays), in place."""
    op.opcodeIndex = opcode_index
    op.inputs = [tensor_map[t] if t >= 0 else -1 for t in op.inputs]
    op.outputs = [tensor_map[t] for t in op.outputs]
    if op.intermediates is not None:
        op.intermediates = [tensor_map[t] for t in op.intermediates]
    return op
