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


# --- the input-normalisation / layout / output-type corpus ----------------------------------------

_B = schema.BuiltinOperator


def _conv_options(activation: int = schema.ActivationFunctionType.RELU) -> schema.Conv2DOptionsT:
    conv = schema.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH = schema.Padding.SAME, 1, 1
    conv.fusedActivationFunction = activation
    return conv


def _global_pool(size: int) -> schema.Pool2DOptionsT:
    pool = schema.Pool2DOptionsT()
    pool.padding, pool.strideW, pool.strideH, pool.filterWidth, pool.filterHeight = schema.Padding.VALID, 1, 1, size, size
    return pool


def with_input_normalization(model: schema.ModelT, mean, std) -> schema.ModelT:
    """Give ``model`` TFLite metadata whose input has ``NormalizationOptions(mean, std)`` (as Model Maker writes), in place."""
    from lastlayer.model.tflite_metadata import write_input_normalization

    write_input_normalization(model, np.atleast_1d(mean), np.atleast_1d(std), name="test model")
    return model


def layout_extractor(size: int = 8, channels: int = 3, channels_first: bool = False, features: int = 6, seed: int = 0,
                     rescale: tuple[float, float] | None = None) -> schema.ModelT:
    """A float extractor taking ``[1, S, S, C]`` or ``[1, C, S, S]`` (then a TRANSPOSE to channels-last first).

    ``rescale=(a, b)`` puts Keras-style built-in preprocessing ``x * a + b`` (a MUL and an ADD) in front,
    as in models that expect 0..255 pixels. Then a 1x1 CONV_2D (ReLU) and a global AVERAGE_POOL: ``[1, 1, 1, F]``.
    """
    rng = np.random.default_rng(seed)
    model = new_model("test: layout extractor")
    shape = [1, channels, size, size] if channels_first else [1, size, size, channels]
    x = first = add_tensor(model, "image", shape, np.float32)
    if channels_first:
        perm = add_tensor(model, "perm", [4], np.int32, data=np.array([0, 2, 3, 1], np.int32))
        y = add_tensor(model, "nhwc", [1, size, size, channels], np.float32)
        add_operator(model, _B.TRANSPOSE, [x, perm], [y], options_type=schema.BuiltinOptions.TransposeOptions,
                     options=schema.TransposeOptionsT())
        x = y
    if rescale is not None:
        a = add_tensor(model, "rescale/a", [1], np.float32, data=np.array([rescale[0]], np.float32))
        b = add_tensor(model, "rescale/b", [1], np.float32, data=np.array([rescale[1]], np.float32))
        scaled = add_tensor(model, "rescale/mul", [1, size, size, channels], np.float32)
        shifted = add_tensor(model, "rescale/add", [1, size, size, channels], np.float32)
        add_operator(model, _B.MUL, [x, a], [scaled], options_type=schema.BuiltinOptions.MulOptions, options=schema.MulOptionsT())
        add_operator(model, _B.ADD, [scaled, b], [shifted], options_type=schema.BuiltinOptions.AddOptions, options=schema.AddOptionsT())
        x = shifted
    w = add_tensor(model, "conv/weights", [features, 1, 1, channels], np.float32, data=rng.normal(size=(features, 1, 1, channels)))
    bias = add_tensor(model, "conv/bias", [features], np.float32, data=rng.normal(size=features) * 0.5)
    h = add_tensor(model, "conv/out", [1, size, size, features], np.float32)
    add_operator(model, _B.CONV_2D, [x, w, bias], [h], options_type=schema.BuiltinOptions.Conv2DOptions, options=_conv_options())
    e = add_tensor(model, "embedding", [1, 1, 1, features], np.float32)
    add_operator(model, _B.AVERAGE_POOL_2D, [h], [e], options_type=schema.BuiltinOptions.Pool2DOptions, options=_global_pool(size))
    set_io(model, [first], [e])
    return model


def quantized_input(model: schema.ModelT, dtype: type, scale: float, zero_point: int) -> schema.ModelT:
    """Replace a float model's input by a quantized one followed by a DEQUANTIZE, in place (uint8 / int8 input)."""
    graph = model.subgraphs[0]
    old = int(graph.inputs[0])
    x = add_tensor(model, "image/quantized", graph.tensors[old].shape, dtype, quant=quantization(scale, zero_point))
    add_operator(model, _B.DEQUANTIZE, [x], [old], version=2 if np.dtype(dtype) == np.int8 else 1)
    graph.operators.insert(0, graph.operators.pop())  # execution order: the DEQUANTIZE first
    graph.inputs = [x]
    return model


def int8_extractor(size: int = 8, features: int = 6, io: str = "float32", input_range=(0.0, 255.0), seed: int = 0) -> schema.ModelT:
    """A full-integer (int8) extractor: (QUANTIZE) -> int8 1x1 CONV_2D (ReLU) -> global AVERAGE_POOL -> ``[1, 1, 1, F]`` int8.

    ``io`` is the input type: ``float32`` (a QUANTIZE at the input, as TF2 converters write for float
    I/O), ``uint8`` (a QUANTIZE uint8 -> int8, as in TF2 models with uint8 I/O) or ``int8``.
    ``input_range`` is the float range the input quantization was calibrated on.
    """
    from lastlayer.quantization import quantize, range_quantization

    rng = np.random.default_rng(seed)
    model = new_model("test: int8 extractor")
    s_in, z_in = range_quantization(*input_range, np.int8)
    q_in = add_tensor(model, "image/int8", [1, size, size, 3], np.int8, quant=quantization(s_in, z_in))
    if io == "int8":
        first = q_in
    else:
        if io == "float32":
            first = add_tensor(model, "image", [1, size, size, 3], np.float32)
        else:
            first = add_tensor(model, "image", [1, size, size, 3], np.uint8, quant=quantization(s_in, z_in + 128))
        add_operator(model, _B.QUANTIZE, [first], [q_in], version=2)
    weights = rng.normal(size=(features, 1, 1, 3)).astype(np.float32)
    s_w = float(np.abs(weights).max() / 127)
    w = add_tensor(model, "conv/weights", weights.shape, np.int8, quant=quantization(s_w, 0), data=quantize(weights, s_w, 0, np.int8))
    bias = (rng.normal(size=features) * 0.1 * max(abs(input_range[0]), abs(input_range[1]))).astype(np.float32)
    b = add_tensor(model, "conv/bias", [features], np.int32, quant=quantization(s_in * s_w, 0),
                   data=quantize(bias, s_in * s_w, 0, np.int32))
    bound = float(np.abs(weights).sum(axis=(1, 2, 3)).max() * max(abs(input_range[0]), abs(input_range[1])))
    s_h, z_h = range_quantization(0.0, bound / 2, np.int8)
    h = add_tensor(model, "conv/out", [1, size, size, features], np.int8, quant=quantization(s_h, z_h))
    add_operator(model, _B.CONV_2D, [q_in, w, b], [h], options_type=schema.BuiltinOptions.Conv2DOptions, options=_conv_options(), version=3)
    e = add_tensor(model, "embedding", [1, 1, 1, features], np.int8, quant=quantization(s_h, z_h))
    add_operator(model, _B.AVERAGE_POOL_2D, [h], [e], options_type=schema.BuiltinOptions.Pool2DOptions, options=_global_pool(size),
                 version=2)
    set_io(model, [first], [e])
    return model


def int8_classifier(classes: int = 3, io: str = "float32", seed: int = 0, **extractor) -> schema.ModelT:
    """:func:`int8_extractor` + an int8 FULLY_CONNECTED + SOFTMAX, with the output in the input's type.

    ``io="float32"``: a DEQUANTIZE at the output (full-integer with float I/O); ``"uint8"``: a QUANTIZE
    int8 -> uint8 (TF2 models with uint8 I/O); ``"int8"``: int8 all through.
    """
    from lastlayer.model.heads import append_dense_softmax_head

    model = int8_extractor(io=io, seed=seed, **extractor)
    dim = model.subgraphs[0].tensors[model.subgraphs[0].outputs[0]].shape[-1]
    rng = np.random.default_rng(seed + 1)
    append_dense_softmax_head(model, rng.normal(size=(classes, dim)), rng.normal(size=classes) * 0.1, (-8.0, 8.0))
    graph = model.subgraphs[0]
    probs = int(graph.outputs[0])
    if io == "float32":
        out = add_tensor(model, "scores", [1, classes], np.float32)
        add_operator(model, _B.DEQUANTIZE, [probs], [out], version=2)
        graph.outputs = [out]
    elif io == "uint8":
        out = add_tensor(model, "scores", [1, classes], np.uint8, quant=quantization(1 / 256, 0))
        add_operator(model, _B.QUANTIZE, [probs], [out], version=2)
        graph.outputs = [out]
    return model


def dynamic_batch(model: schema.ModelT) -> schema.ModelT:
    """Mark the batch dimension of every input and output as dynamic (shape signature -1), as Keras conversions do."""
    graph = model.subgraphs[0]
    for index in list(graph.inputs) + list(graph.outputs):
        tensor = graph.tensors[index]
        tensor.shapeSignature = [-1] + [int(d) for d in tensor.shape[1:]]
    return model


def float_input(model: schema.ModelT) -> schema.ModelT:
    """Give a quantized-input model a float input followed by a QUANTIZE to its old input, in place (float I/O)."""
    graph = model.subgraphs[0]
    old = int(graph.inputs[0])
    x = add_tensor(model, "image/float", graph.tensors[old].shape, np.float32)
    add_operator(model, _B.QUANTIZE, [x], [old], version=2 if graph.tensors[old].type == schema.TensorType.INT8 else 1)
    graph.operators.insert(0, graph.operators.pop())
    graph.inputs = [x]
    model.metadata = [m for m in model.metadata or [] if m.name not in (b"TFLITE_METADATA", "TFLITE_METADATA")]
    return model


def float_weights(model: schema.ModelT) -> schema.ModelT:
    """A quantized model turned into a float32 one with the same (dequantized) weights, in place.

    Every uint8/int8/int32 tensor with quantization becomes float32: constants are dequantized,
    activations lose their quantization. Gives real float networks (e.g. MobileNet) for the tests.
    """
    from lastlayer.model.tensors import constant_values

    graph = model.subgraphs[0]
    for tensor in graph.tensors:
        q = tensor.quantization
        if q is None or q.scale is None or not len(q.scale) or tensor.type not in (
                schema.TensorType.UINT8, schema.TensorType.INT8, schema.TensorType.INT32):
            continue
        values = constant_values(model, tensor)
        if values is not None:
            scale = np.asarray(q.scale, np.float32)
            zero = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], np.float32)
            if len(scale) > 1:
                shape = [1] * values.ndim
                shape[int(q.quantizedDimension)] = len(scale)
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            real = ((values.astype(np.float32) - zero) * scale).astype(np.float32)
            model.buffers[tensor.buffer].data = np.frombuffer(real.tobytes(), dtype=np.uint8)
        tensor.type, tensor.quantization = schema.TensorType.FLOAT32, None
    for code in model.operatorCodes:
        code.version = 1
    model.metadata = [m for m in model.metadata or [] if m.name not in (b"TFLITE_METADATA", "TFLITE_METADATA")]
    return model


def colour_dataset(folder, classes=("red", "green", "blue"), per_class: int = 6, size: int = 24, seed: int = 0):
    """Class folders of small PNG photos-to-be: smooth gradients tinted by class, with a random bright square."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    tints = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200), "grey": (120, 120, 120)}
    ramp = np.linspace(0.3, 1.0, size, dtype=np.float32)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        tint = np.array(tints.get(name, rng.integers(0, 256, 3)), dtype=np.float32)
        for i in range(per_class):
            image = ramp[:, None, None] * tint * rng.uniform(0.6, 1.0)
            y, x = rng.integers(0, size // 2, 2)
            image[y:y + size // 3, x:x + size // 3] = rng.uniform(150, 255, 3)
            Image.fromarray(np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)).save(folder / name / f"{i}.png")
    return folder
