"""Reading constant tensors: their raw values and their dequantized floats."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.edit import TENSOR_TYPE_TO_NUMPY


def constant_values(model: schema.ModelT, tensor: schema.TensorT) -> np.ndarray | None:
    """A constant tensor's values in its own dtype, in its shape; ``None`` for an activation."""
    buffers = model.buffers or []
    data = buffers[tensor.buffer].data if 0 < tensor.buffer < len(buffers) else None
    if data is None or not len(data):
        return None
    values = np.frombuffer(bytes(np.asarray(data, dtype=np.uint8)), dtype=TENSOR_TYPE_TO_NUMPY.get(tensor.type, np.dtype(np.uint8)))
    shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
    return values.reshape(shape) if shape and int(np.prod(shape)) == values.size else values


def dequantized_values(model: schema.ModelT, tensor: schema.TensorT) -> np.ndarray | None:
    """A constant tensor as float64: ``scale * (q - zero_point)``, per-axis along its quantized dimension."""
    values = constant_values(model, tensor)
    if values is None:
        return None
    values = values.astype(np.float64)
    q = tensor.quantization
    if q is None or q.scale is None or not len(q.scale):
        return values
    scale = np.asarray(q.scale, dtype=np.float64)
    zero = np.asarray(q.zeroPoint if q.zeroPoint is not None else np.zeros(len(scale)), dtype=np.float64)
    if len(scale) > 1:  # per-axis: broadcast along the quantized dimension
        shape = [1] * values.ndim
        shape[int(q.quantizedDimension)] = len(scale)
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return scale * (values - zero)
