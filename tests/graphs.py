"""Tiny models built in the tests with the library's own graph-editing helpers."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.edit import add_operator, add_tensor, new_model, quantization, set_io


def dequantize_model(input_dtype: type, scale: float, zero_point: int, shape=(1, 8, 8, 3)) -> schema.ModelT:
    """input (quantized) -> DEQUANTIZE -> float output: shows what the runtime fed the model."""
    model = new_model("test: dequantize")
    x = add_tensor(model, "input", shape, input_dtype, quant=quantization(scale, zero_point))
    y = add_tensor(model, "output", shape, np.float32)
    add_operator(model, schema.BuiltinOperator.DEQUANTIZE, [x], [y])
    set_io(model, [x], [y])
    return model


def float_identity_model(shape=(1, 8, 8, 3)) -> schema.ModelT:
    """float input -> RESHAPE (to the same shape) -> float output."""
    model = new_model("test: float identity")
    x = add_tensor(model, "input", shape, np.float32)
    new_shape = add_tensor(model, "shape", [len(shape)], np.int32, data=np.array(shape, dtype=np.int32))
    y = add_tensor(model, "output", shape, np.float32)
    add_operator(model, schema.BuiltinOperator.RESHAPE, [x, new_shape], [y])
    set_io(model, [x], [y])
    return model
