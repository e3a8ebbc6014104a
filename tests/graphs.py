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


def float_extractor(size: int = 16, features: int = 12, seed: int = 0) -> schema.ModelT:
    """A small float32 embedding extractor: image -> 1x1 CONV_2D (ReLU) -> global AVERAGE_POOL -> [1,1,1,F]."""
    rng = np.random.default_rng(seed)
    model = new_model("test: float extractor")
    x = add_tensor(model, "image", [1, size, size, 3], np.float32)
    w = add_tensor(model, "conv/weights", [features, 1, 1, 3], np.float32, data=rng.normal(size=(features, 1, 1, 3)))
    b = add_tensor(model, "conv/bias", [features], np.float32, data=rng.normal(size=features) * 0.1)
    h = add_tensor(model, "conv/out", [1, size, size, features], np.float32)
    conv = schema.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH = schema.Padding.SAME, 1, 1
    conv.fusedActivationFunction = schema.ActivationFunctionType.RELU
    add_operator(model, schema.BuiltinOperator.CONV_2D, [x, w, b], [h],
                 options_type=schema.BuiltinOptions.Conv2DOptions, options=conv)
    e = add_tensor(model, "embedding", [1, 1, 1, features], np.float32)
    pool = schema.Pool2DOptionsT()
    pool.padding, pool.strideW, pool.strideH, pool.filterWidth, pool.filterHeight = schema.Padding.VALID, 1, 1, size, size
    add_operator(model, schema.BuiltinOperator.AVERAGE_POOL_2D, [h], [e],
                 options_type=schema.BuiltinOptions.Pool2DOptions, options=pool)
    set_io(model, [x], [e])
    return model


def make_cosine_classifier(model: schema.ModelT) -> schema.ModelT:
    """Turn a classifier's class layer into a cosine classifier (equal row norms, zero bias), in place."""
    from lastlayer.model.surgery import find_embedding
    from lastlayer.quantization import quantization_params, quantize

    point = find_embedding(model)
    graph = model.subgraphs[0]
    op = graph.operators[point.class_layer]
    weights, bias = graph.tensors[op.inputs[1]], graph.tensors[op.inputs[2]]
    q = weights.quantization
    raw = np.frombuffer(bytes(model.buffers[weights.buffer].data), dtype=np.uint8).reshape(weights.shape[0], -1)
    rows = (raw.astype(np.float32) - q.zeroPoint[0]) * q.scale[0]
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    scale, zero = quantization_params(min(0.0, rows.min()), max(0.0, rows.max()))
    model.buffers[weights.buffer].data = quantize(rows, scale, zero).reshape(-1)
    q.scale, q.zeroPoint = [scale], [zero]
    model.buffers[bias.buffer].data = np.zeros(4 * weights.shape[0], dtype=np.uint8)
    bias.quantization.scale = [float(graph.tensors[op.inputs[0]].quantization.scale[0] * scale)]
    return model


def quantized_chain(steps, shape=(1, 8, 8, 3), dtype=np.uint8, shape_signature=None) -> schema.ModelT:
    """A chain of operators on 8-bit tensors, for the Edge TPU checker.

    ``steps`` is a list of ``(op_code, out_shape, options_type, options, constants)`` where
    ``constants`` are extra constant inputs as numpy arrays (int32 for axes, paddings, strides...).
    """
    model = new_model("test: chain")
    x = add_tensor(model, "input", shape, dtype, quant=quantization(1 / 128, 128 if dtype == np.uint8 else 0))
    if shape_signature is not None:
        model.subgraphs[0].tensors[x].shapeSignature = list(shape_signature)
    first = x
    for number, (code, out_shape, options_type, options, constants) in enumerate(steps):
        inputs = [x]
        for k, value in enumerate(constants or []):
            value = np.asarray(value)
            inputs.append(add_tensor(model, f"const{number}_{k}", list(value.shape) or [1], value.dtype, data=value))
        y = add_tensor(model, f"out{number}", out_shape, dtype, quant=quantization(1 / 128, 128 if dtype == np.uint8 else 0))
        add_operator(model, code, inputs, [y], options_type=options_type, options=options)
        x = y
    set_io(model, [first], [x])
    return model
