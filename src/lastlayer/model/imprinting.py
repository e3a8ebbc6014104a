"""Coral's imprinting model structure: build it on any extractor, validate it, read and write its classes.

``[extractor] -> L2_NORMALIZATION -> (QUANTIZE) -> CONV_2D 1x1 -> MUL (scale s) -> RESHAPE -> SOFTMAX (-> output conversion)``

The head is uint8 inside (Coral's layout). For a model whose output must be float32 or int8, one
DEQUANTIZE or QUANTIZE may follow the SOFTMAX; such models are recognised here (and so can be
resumed), but only those ending in the SOFTMAX are accepted by PyCoral itself.

Models built here are accepted by PyCoral's ``ImprintingEngine`` and models PyCoral wrote are
accepted here: the same validation rules and messages, the same tensor edits and constants, and the
same ``"<class_id> <norm>\\n"`` lines in the model description.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.model.edit import add_operator, add_tensor, quantization
from lastlayer.model.heads import Embedding, check_extractor
from lastlayer.model.metadata import read_metadata, write_metadata
from lastlayer.model.names import operator_name
from lastlayer.model.surgery import cut
from lastlayer.model.tensors import constant_values
from lastlayer.quantization import SOFTMAX_QUANTIZATION, dequantize, quantize

B = schema.BuiltinOperator
STATE_METADATA_NAME = "lastlayer_imprinting"
COSINE_SCALE, COSINE_ZERO = 1.0 / 128.0, 128  # uint8 encoding of [-1, 1]


@dataclass(frozen=True)
class ImprintingGraph:
    """Where the parts of a validated imprinting model are (subgraph 0 indices)."""

    l2norm_op: int
    conv_op: int
    mul_op: int
    reshape_op: int
    softmax_op: int
    embedding_tensor: int  # the L2Norm output
    embedding_dim: int
    kernel_scale: float
    kernel_zero_point: int
    scale_factor: float
    output_op: int | None = None  # a DEQUANTIZE / QUANTIZE after the SOFTMAX (float32 or int8 output)


_OUTPUT_CONVERSIONS = ("DEQUANTIZE", "QUANTIZE")


def _output_conversion(graph: schema.SubGraphT, names: list[str]) -> int | None:
    """The index of a DEQUANTIZE / QUANTIZE that converts the SOFTMAX output as the last operator, else ``None``."""
    if len(names) < 6 or names[-1] not in _OUTPUT_CONVERSIONS or names[-2] != "SOFTMAX":
        return None
    last, softmax = graph.operators[-1], graph.operators[-2]
    if not last.inputs or not softmax.outputs or int(last.inputs[0]) != int(softmax.outputs[0]):
        return None
    return len(names) - 1


def find_structure(model: schema.ModelT) -> ImprintingGraph | None:
    """Where the imprinting parts are, or ``None`` when ``model`` does not have Coral's imprinting structure."""
    found = _inspect(model)
    return found if isinstance(found, ImprintingGraph) else None


def validate(model: schema.ModelT, source: str = "the model") -> ImprintingGraph:
    """Check the imprinting structure with PyCoral's rules, in its order and with its messages.

    Stricter than PyCoral where it crashed or misbehaved: several L2Norm ops are an error, and the
    Conv must consume the L2Norm (or its QUANTIZE) output.
    """
    found = _inspect(model)
    if isinstance(found, str):
        raise ModelError(f"{source}: {found}", subject="model")
    return found


def _inspect(model: schema.ModelT) -> ImprintingGraph | str:
    if not model.subgraphs:
        return "Unsupported model architecture. Input model must have an L2Norm layer."
    graph = model.subgraphs[0]
    names = [operator_name(model.operatorCodes[op.opcodeIndex]) for op in graph.operators or []]
    l2_ops = [i for i, name in enumerate(names) if name == "L2_NORMALIZATION"]
    if not l2_ops:
        return "Unsupported model architecture. Input model must have an L2Norm layer."
    if len(l2_ops) > 1:
        return f"Unsupported model architecture. Input model must have exactly one L2Norm layer (it has {len(l2_ops)})."
    l2 = l2_ops[0]
    tail = _output_conversion(graph, names)
    core = names if tail is None else names[:tail]
    if len(core) < 4 or core[-4:] != ["CONV_2D", "MUL", "RESHAPE", "SOFTMAX"]:
        return "The last 4 operators must be Conv2d, Mul, Reshape, Softmax"
    conv = len(core) - 4
    gap = conv - l2
    follow = "Unsupported model architecture. L2Norm operator must be followed with the last Conv2d operator."
    if not (gap == 1 or (gap == 2 and names[l2 + 1] == "QUANTIZE")):
        return follow
    ops = graph.operators
    if len(ops[conv].inputs) < 3 or not ops[l2].outputs or not ops[conv + 3].outputs or len(ops[conv + 1].inputs) < 2:
        return follow
    l2_out = int(ops[l2].outputs[0])
    if int(ops[conv].inputs[0]) != (l2_out if gap == 1 else int(ops[l2 + 1].outputs[0])):
        return follow
    shape = [int(d) for d in graph.tensors[l2_out].shape]
    if len(shape) != 4 or shape[:3] != [1, 1, 1]:
        return "Embedding extractor's output tensor should be [1, 1, 1, x]"
    kernel = graph.tensors[ops[conv].inputs[1]]
    bias = graph.tensors[ops[conv].inputs[2]]
    if bias.quantization is None or bias.quantization.zeroPoint is None or not len(bias.quantization.zeroPoint) \
            or not 0 <= int(bias.quantization.zeroPoint[0]) <= 255:
        return "bias_zero_point is out of [0, 255] range!"
    softmax_out = int(ops[conv + 3].outputs[0])
    out_shape = [int(d) for d in graph.tensors[softmax_out].shape]
    if len(out_shape) != 2 or out_shape[0] != 1:
        return "Logit output tensor should be [1, x]"
    final_out = softmax_out if tail is None else int(ops[tail].outputs[0]) if ops[tail].outputs else -1
    if [int(t) for t in graph.outputs] != [final_out]:
        return "Graph must have output from Softmax"
    if kernel.type != schema.TensorType.UINT8 or kernel.quantization is None or kernel.quantization.scale is None \
            or not len(kernel.quantization.scale):
        return "the Conv2d kernel must be a quantized uint8 tensor"
    scale_factor = _scale_factor(model, ops[conv + 1])
    if scale_factor is None:
        return "the imprinting MUL has no constant scale factor"
    return ImprintingGraph(
        l2norm_op=l2, conv_op=conv, mul_op=conv + 1, reshape_op=conv + 2, softmax_op=conv + 3,
        embedding_tensor=l2_out, embedding_dim=shape[3],
        kernel_scale=float(kernel.quantization.scale[0]), kernel_zero_point=int(kernel.quantization.zeroPoint[0]),
        scale_factor=scale_factor, output_op=tail,
    )


def _scale_factor(model: schema.ModelT, mul: schema.OperatorT) -> float | None:
    """PyCoral reads s as the first element of the MUL's constant input, dequantized."""
    graph = model.subgraphs[0]
    tensor = graph.tensors[mul.inputs[1]]
    values = constant_values(model, tensor)
    if values is None or not values.size:
        return None
    values = values.reshape(-1)
    q = tensor.quantization
    if q is not None and q.scale is not None and len(q.scale):
        return float(dequantize(values[:1], q.scale[0], q.zeroPoint[0])[0])
    return float(values[0])


def class_rows(model: schema.ModelT, info: ImprintingGraph) -> np.ndarray:
    """The Conv kernel rows, dequantized: ``[C, D]`` float32."""
    graph = model.subgraphs[0]
    kernel = graph.tensors[graph.operators[info.conv_op].inputs[1]]
    values = constant_values(model, kernel)
    if values is None or values.size % info.embedding_dim:
        count = 0 if values is None else values.size
        raise ModelError(f"the imprinting kernel holds {count} values, not a multiple of the embedding size {info.embedding_dim}")
    rows = values.reshape(-1, info.embedding_dim)
    return dequantize(rows, info.kernel_scale, info.kernel_zero_point)


def format_description(norms: dict[int, float]) -> str:
    """PyCoral's metadata text: ``"%d %f\\n"`` per trainable class, ascending ids."""
    return "".join(f"{class_id} {norm:f}\n" for class_id, norm in sorted(norms.items()))


def parse_description(text: str) -> dict[int, float]:
    """Parse PyCoral's metadata; any malformed pair discards everything (as PyCoral does)."""
    tokens = [t for t in text.replace("\n", " ").split(" ") if t]
    norms: dict[int, float] = {}
    for i in range(0, len(tokens) - 1, 2):
        try:
            norms[int(tokens[i])] = float(tokens[i + 1])
        except ValueError:
            return {}
    return norms


def read_state(model: schema.ModelT) -> dict | None:
    """lastlayer's own imprinting state (full-precision norms, shot counts), if the model has it."""
    stored = read_metadata(model, STATE_METADATA_NAME)
    if stored is None:
        return None
    try:
        return json.loads(stored.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def write_state(model: schema.ModelT, state: dict) -> None:
    """Store lastlayer's imprinting state as a metadata entry (replacing an old one)."""
    write_metadata(model, STATE_METADATA_NAME, json.dumps(state, sort_keys=True).encode("utf-8"))


def write_classes(model: schema.ModelT, info: ImprintingGraph, units: np.ndarray, norms: dict[int, float]) -> None:
    """Apply PyCoral's serialisation edits for ``C`` unit rows, in place.

    Kernel rows quantized with the model's kernel parameters; zero int32 biases; Conv/Mul/Reshape/
    Softmax shapes set to C; Conv output (1/128, 128); Mul and Reshape outputs (s/128, 128); the
    description replaced by the norms of the trainable classes.
    """
    graph = model.subgraphs[0]
    ops = graph.operators
    count, dim = units.shape
    conv = ops[info.conv_op]
    kernel, bias = graph.tensors[conv.inputs[1]], graph.tensors[conv.inputs[2]]
    conv_out = graph.tensors[conv.outputs[0]]
    model.buffers[kernel.buffer].data = quantize(units, info.kernel_scale, info.kernel_zero_point, np.uint8).reshape(-1)
    kernel.shape = [count, 1, 1, dim]
    model.buffers[bias.buffer].data = np.zeros(count * 4, dtype=np.uint8)
    bias.shape = [count]
    conv_out.shape = [1, 1, 1, count]
    conv_out.quantization = _minmax_quant(-1.0, 1.0, COSINE_SCALE, COSINE_ZERO)
    s = info.scale_factor
    mul_out = graph.tensors[ops[info.mul_op].outputs[0]]
    mul_out.shape = [1, 1, 1, count]
    mul_out.quantization = _minmax_quant(-s, s, s / 128.0, 128)
    reshape = ops[info.reshape_op]
    reshape_out = graph.tensors[reshape.outputs[0]]
    reshape_out.shape = [1, count]
    reshape_out.quantization = _minmax_quant(-s, s, s / 128.0, 128)
    if len(reshape.inputs) > 1 and reshape.inputs[1] >= 0:
        shape_tensor = graph.tensors[reshape.inputs[1]]
        model.buffers[shape_tensor.buffer].data = np.frombuffer(np.array([1, count], dtype=np.int32).tobytes(), dtype=np.uint8)
    if isinstance(reshape.builtinOptions, schema.ReshapeOptionsT) and reshape.builtinOptions.newShape is not None \
            and len(reshape.builtinOptions.newShape):
        reshape.builtinOptions.newShape = [1, count]
    graph.tensors[ops[info.softmax_op].outputs[0]].shape = [1, count]
    graph.outputs = [int(ops[info.softmax_op].outputs[0])]
    if info.output_op is not None:
        converted = int(ops[info.output_op].outputs[0])
        graph.tensors[converted].shape = [1, count]
        graph.outputs = [converted]
    model.description = format_description(norms)
    model.signatureDefs = None


def _minmax_quant(low: float, high: float, scale: float, zero_point: int) -> schema.QuantizationParametersT:
    params = quantization(scale, zero_point)
    params.min, params.max = [float(low)], [float(high)]
    return params


def extractor_part(model: schema.ModelT, info: ImprintingGraph) -> schema.ModelT:
    """A copy of the model cut at the L2Norm output: the head is really removed (PyCoral kept it)."""
    return cut(copy.deepcopy(model), info.embedding_tensor, "the imprinting model")


def build(extractor: schema.ModelT, scale: float, source: str = "the extractor") -> schema.ModelT:
    """Append Coral's imprinting head (one placeholder class) to an embedding extractor, in place.

    Works for uint8, int8 and float32 extractors: the L2 norm runs in the extractor's type, and a
    QUANTIZE to uint8 (1/128, 128) follows for int8 and float, as Coral's structure allows.
    """
    if not scale > 0:
        raise ModelError(f"the scale factor must be positive, got {scale}")
    emb: Embedding = check_extractor(extractor, source)
    dim, dtype = emb.dim, emb.dtype
    x = emb.tensor
    if len(emb.shape) != 4:
        flat = add_tensor(extractor, "Imprinting/Embedding/Reshape", [1, 1, 1, dim], dtype,
                          quant=None if emb.scale is None else quantization(emb.scale, emb.zero_point))
        shape = add_tensor(extractor, "Imprinting/Embedding/Shape", [4], np.int32, data=np.array([1, 1, 1, dim], np.int32))
        options = schema.ReshapeOptionsT()
        options.newShape = [1, 1, 1, dim]
        add_operator(extractor, B.RESHAPE, [x, shape], [flat], options_type=schema.BuiltinOptions.ReshapeOptions, options=options)
        x = flat
    l2_quant = {np.dtype(np.uint8): quantization(COSINE_SCALE, COSINE_ZERO), np.dtype(np.int8): quantization(COSINE_SCALE, 0)}
    l2_out = add_tensor(extractor, "Imprinting/L2Norm/Output", [1, 1, 1, dim], dtype, quant=l2_quant.get(dtype))
    add_operator(extractor, B.L2_NORMALIZATION, [x], [l2_out], options_type=schema.BuiltinOptions.L2NormOptions,
                 options=schema.L2NormOptionsT(), version=2 if dtype == np.dtype(np.int8) else 1)
    if dtype != np.dtype(np.uint8):
        quantized = add_tensor(extractor, "Imprinting/Quantize/Output", [1, 1, 1, dim], np.uint8,
                               quant=quantization(COSINE_SCALE, COSINE_ZERO))
        add_operator(extractor, B.QUANTIZE, [l2_out], [quantized], version=2 if dtype == np.dtype(np.int8) else 1)
        l2_out = quantized
    kernel = add_tensor(extractor, "Imprinting/FC/Weights", [1, 1, 1, dim], np.uint8,
                        quant=quantization(COSINE_SCALE, COSINE_ZERO), data=np.full(dim, COSINE_ZERO, np.uint8))
    bias = add_tensor(extractor, "Imprinting/FC/Bias", [1], np.int32, quant=quantization(COSINE_SCALE * COSINE_SCALE, 0),
                      data=np.zeros(1, np.int32))
    conv_out = add_tensor(extractor, "Imprinting/FC/Output", [1, 1, 1, 1], np.uint8, quant=quantization(COSINE_SCALE, COSINE_ZERO))
    conv = schema.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH = schema.Padding.SAME, 1, 1
    add_operator(extractor, B.CONV_2D, [l2_out, kernel, bias], [conv_out], options_type=schema.BuiltinOptions.Conv2DOptions, options=conv)
    factor = add_tensor(extractor, "Imprinting/Scale", [1], np.uint8, quant=quantization(scale / 255.0, 0), data=np.array([255], np.uint8))
    mul_out = add_tensor(extractor, "Imprinting/Mul/Output", [1, 1, 1, 1], np.uint8, quant=quantization(scale / 128.0, 128))
    add_operator(extractor, B.MUL, [conv_out, factor], [mul_out], options_type=schema.BuiltinOptions.MulOptions, options=schema.MulOptionsT())
    new_shape = add_tensor(extractor, "Imprinting/Reshape/Shape", [2], np.int32, data=np.array([1, 1], np.int32))
    reshape_out = add_tensor(extractor, "Imprinting/Reshape/Output", [1, 1], np.uint8, quant=quantization(scale / 128.0, 128))
    options = schema.ReshapeOptionsT()
    options.newShape = [1, 1]
    add_operator(extractor, B.RESHAPE, [mul_out, new_shape], [reshape_out], options_type=schema.BuiltinOptions.ReshapeOptions, options=options)
    probs = add_tensor(extractor, "Imprinting/Softmax/Output", [1, 1], np.uint8, quant=quantization(*SOFTMAX_QUANTIZATION[np.dtype(np.uint8)]))
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    add_operator(extractor, B.SOFTMAX, [reshape_out], [probs], options_type=schema.BuiltinOptions.SoftmaxOptions, options=softmax)
    extractor.subgraphs[0].outputs = [probs]
    extractor.signatureDefs = None
    return extractor


def set_scale_factor(model: schema.ModelT, info: ImprintingGraph, scale: float) -> ImprintingGraph:
    """Rewrite the MUL's constant so that it dequantizes to ``scale``, in place; return ``info`` saying so."""
    graph = model.subgraphs[0]
    factor = graph.tensors[graph.operators[info.mul_op].inputs[1]]
    factor.type = schema.TensorType.UINT8
    factor.shape = [1]
    factor.quantization = quantization(scale / 255.0, 0)
    model.buffers[factor.buffer].data = np.array([255], dtype=np.uint8)
    return replace(info, scale_factor=float(scale))


def drop_output_conversion(model: schema.ModelT, info: ImprintingGraph) -> ImprintingGraph:
    """Remove the DEQUANTIZE / QUANTIZE after the SOFTMAX, in place (the SOFTMAX, uint8, is the output again);
    return ``info`` saying so."""
    if info.output_op is None:
        return info
    graph = model.subgraphs[0]
    del graph.operators[info.output_op]
    graph.outputs = [int(graph.operators[info.softmax_op].outputs[0])]
    return replace(info, output_op=None)
