"""Append a trained dense + softmax head to an embedding extractor's graph.

``[extractor] -> (RESHAPE to [1, D]) -> FULLY_CONNECTED -> SOFTMAX``. The head follows the
extractor's output type: uint8 (libcoral's layout and quantization formulas), int8 (TF2
full-integer models) or float32. After an Edge TPU extractor the head runs on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.layer import OUTPUT_TYPES
from lastlayer.model.edit import TENSOR_TYPE_TO_NUMPY, add_operator, add_tensor, quantization
from lastlayer.model.names import as_text, operator_name
from lastlayer.quantization import SOFTMAX_QUANTIZATION, quantize, range_quantization

# Opcode versions the int8 kernels need (uint8 and float are version 1).
_INT8_VERSIONS = {
    schema.BuiltinOperator.FULLY_CONNECTED: 4,
    schema.BuiltinOperator.SOFTMAX: 2,
    schema.BuiltinOperator.RESHAPE: 1,
}
_CLASSIFIER_TAILS = {"SOFTMAX", "LOGISTIC", "ARG_MAX"}


@dataclass(frozen=True)
class Embedding:
    """The extractor output a head attaches to."""

    tensor: int
    name: str
    shape: list[int]
    dtype: np.dtype
    scale: float | None
    zero_point: int | None

    @property
    def dim(self) -> int:
        return self.shape[-1]


def _output_embedding(model: schema.ModelT) -> Embedding | str:
    """The extractor output a head would attach to, or why there is none (a message without the file name)."""
    if len(model.subgraphs or []) != 1:
        return f"must have one and only one subgraph (it has {len(model.subgraphs or [])}); use a plain extractor"
    graph = model.subgraphs[0]
    if len(graph.outputs or []) != 1:
        return f"must have one and only one output (it has {len(graph.outputs or [])}); cut it to its embedding first"
    index = int(graph.outputs[0])
    tensor = graph.tensors[index]
    q = tensor.quantization
    quantized = q is not None and q.scale is not None and len(q.scale) > 0
    emb = Embedding(
        tensor=index,
        name=as_text(tensor.name),
        shape=[int(d) for d in tensor.shape],
        dtype=TENSOR_TYPE_TO_NUMPY.get(tensor.type, np.dtype(np.float32)),
        scale=float(q.scale[0]) if quantized else None,
        zero_point=int(q.zeroPoint[0]) if quantized and q.zeroPoint is not None and len(q.zeroPoint) else None,
    )
    producer = next((op for op in graph.operators or [] if emb.tensor in op.outputs), None)
    if producer is not None:
        name = operator_name(model.operatorCodes[producer.opcodeIndex])
        if name in _CLASSIFIER_TAILS:
            return f"ends in {name}: it is a classifier, not an embedding extractor; cut off its last layer first"
    if len(emb.shape) not in (2, 4) or int(np.prod(emb.shape)) != emb.dim:
        return f"output {emb.name} has shape {emb.shape}; an extractor output must be [1, D] or [1, 1, 1, D]"
    if emb.dtype not in (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.float32)):
        return f"output type {emb.dtype} is not supported; use a uint8, int8 or float32 extractor"
    if emb.dtype != np.dtype(np.float32) and (emb.scale is None or emb.zero_point is None):
        return f"output {emb.name} is {emb.dtype} without quantization parameters; re-export the model"
    return emb


def extractor_output(model: schema.ModelT) -> Embedding | None:
    """The embedding output when ``model`` is an extractor a head can be appended to, else ``None``."""
    found = _output_embedding(model)
    return found if isinstance(found, Embedding) else None


def check_extractor(model: schema.ModelT, source: str = "the model") -> Embedding:
    """:func:`extractor_output`, or a :class:`ModelError` saying why ``model`` is not an extractor."""
    found = _output_embedding(model)
    if isinstance(found, str):
        raise ModelError(f"{source} {found}", subject="model")
    return found


def _version(code: int, dtype: np.dtype) -> int:
    return _INT8_VERSIONS.get(code, 1) if dtype == np.dtype(np.int8) else 1


def _quant_or_none(dtype: np.dtype, scale: float | None, zero_point: int | None) -> schema.QuantizationParametersT | None:
    return None if dtype == np.dtype(np.float32) else quantization(scale, zero_point)


def append_dense_softmax_head(
    model: schema.ModelT,
    weights: np.ndarray,
    bias: np.ndarray,
    logit_range: tuple[float, float],
    *,
    source: str = "the extractor",
    prefix: str = "Appended",
) -> Embedding:
    """Append ``softmax(x W^T + b)`` after the extractor output, in place; return the extractor output it follows.

    ``weights`` is ``[C, D]`` float, ``bias`` ``[C]``; ``logit_range`` is the (min, max) of the
    logits seen in training and sets the FC output quantization (widened to contain 0).
    """
    emb = check_extractor(model, source)
    weights = np.asarray(weights, dtype=np.float32)
    bias = np.asarray(bias, dtype=np.float32)
    num_classes, dim = weights.shape
    if dim != emb.dim:
        raise ModelError(f"{source} outputs {emb.dim} features but the trained layer expects {dim}; use the extractor it was trained with")
    dtype = emb.dtype
    graph = model.subgraphs[0]
    x = emb.tensor
    B = schema.BuiltinOperator
    if len(emb.shape) == 4:
        flat = add_tensor(model, f"{prefix}/Reshape/Output", [1, dim], dtype, quant=_quant_or_none(dtype, emb.scale, emb.zero_point))
        new_shape = add_tensor(model, f"{prefix}/Reshape/Shape", [2], np.int32, data=np.array([1, dim], dtype=np.int32))
        options = schema.ReshapeOptionsT()
        options.newShape = [1, dim]
        add_operator(model, B.RESHAPE, [x, new_shape], [flat], options_type=schema.BuiltinOptions.ReshapeOptions,
                     options=options, version=_version(B.RESHAPE, dtype))
        x = flat

    if dtype == np.dtype(np.float32):
        w = add_tensor(model, f"{prefix}/FC/Weights", [num_classes, dim], np.float32, data=weights)
        b = add_tensor(model, f"{prefix}/FC/Bias", [num_classes], np.float32, data=bias)
        logits = add_tensor(model, f"{prefix}/FC/Output", [1, num_classes], np.float32)
        probs = add_tensor(model, f"{prefix}/Softmax/Output", [1, num_classes], np.float32)
    else:
        w_scale, w_zero = range_quantization(weights.min(), weights.max(), dtype)
        b_scale = float(np.float32(emb.scale) * np.float32(w_scale))
        o_scale, o_zero = range_quantization(*logit_range, dtype)
        w = add_tensor(model, f"{prefix}/FC/Weights", [num_classes, dim], dtype, quant=quantization(w_scale, w_zero),
                       data=quantize(weights, w_scale, w_zero, dtype))
        b = add_tensor(model, f"{prefix}/FC/Bias", [num_classes], np.int32, quant=quantization(b_scale, 0),
                       data=quantize(bias, b_scale, 0, np.int32))
        logits = add_tensor(model, f"{prefix}/FC/Output", [1, num_classes], dtype, quant=quantization(o_scale, o_zero))
        probs = add_tensor(model, f"{prefix}/Softmax/Output", [1, num_classes], dtype,
                           quant=quantization(*SOFTMAX_QUANTIZATION[dtype]))
    add_operator(model, B.FULLY_CONNECTED, [x, w, b], [logits], options_type=schema.BuiltinOptions.FullyConnectedOptions,
                 options=schema.FullyConnectedOptionsT(), version=_version(B.FULLY_CONNECTED, dtype))
    softmax_options = schema.SoftmaxOptionsT()
    softmax_options.beta = 1.0
    add_operator(model, B.SOFTMAX, [logits], [probs], options_type=schema.BuiltinOptions.SoftmaxOptions,
                 options=softmax_options, version=_version(B.SOFTMAX, dtype))
    graph.outputs = [probs]
    model.signatureDefs = None  # they named the old output; a stale signature would mislead
    return emb




def convert_output(model: schema.ModelT, output_type: str, *, prefix: str = "Output") -> None:
    """Make the single graph output (class probabilities) ``output_type``, in place, by appending one operator.

    float32 from uint8/int8: a DEQUANTIZE. uint8/int8 from the other 8-bit type or float32: a QUANTIZE
    to the softmax quantization of that type (scale 1/256, zero point 0 for uint8, -128 for int8), so
    int8 -> uint8 is exact. Nothing is added when the output already has that type.
    """
    if output_type not in OUTPUT_TYPES:
        raise ModelError(f"output type {output_type!r} is not one of {', '.join(OUTPUT_TYPES)}", subject="output_type")
    graph = model.subgraphs[0]
    index = int(graph.outputs[0])
    tensor = graph.tensors[index]
    have, want = TENSOR_TYPE_TO_NUMPY.get(tensor.type, np.dtype(np.float32)), np.dtype(output_type)
    if have == want:
        return
    int8 = np.dtype(np.int8) in (have, want)
    B = schema.BuiltinOperator
    if want == np.dtype(np.float32):
        out = add_tensor(model, f"{prefix}/Dequantize", tensor.shape, np.float32)
        add_operator(model, B.DEQUANTIZE, [index], [out], version=2 if int8 else 1)
    else:
        out = add_tensor(model, f"{prefix}/Quantize", tensor.shape, want, quant=quantization(*SOFTMAX_QUANTIZATION[want]))
        add_operator(model, B.QUANTIZE, [index], [out], version=2 if int8 else 1)
    graph.outputs = [out]
    model.signatureDefs = None
