"""A classifier with new classes appended after its own: read its class layer, write it with more classes.

``[embedding] -> class layer -> ... -> logits [1, C] ------------------------------.
             `-> FULLY_CONNECTED (new rows) -> logits [1, K] (-> RESHAPE) -> CONCATENATION -> SOFTMAX -> ...``

The original class layer (FULLY_CONNECTED or 1x1 CONV_2D), its rows, biases and quantization, the
softmax and everything after it stay as they are; the new classes' layer reads the same embedding
and its logits join the original ones, with the original logits' quantization, just before the
softmax. So the original classes compute bit for bit what they did, in uint8, int8 or float32, with
per-tensor or per-axis weights, while the new rows get a quantization of their own (a uint8 layer
with per-tensor weights would otherwise confine them to the original weights' range). The labels
(original ones first), the learner's state and any further metadata entries are stored in the
model; writing again replaces the appended layer, so a resumed model never stacks two of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.layer import AppendedClasses
from lastlayer.model.edit import TENSOR_TYPE_TO_NUMPY, add_operator, add_tensor, quantization
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.heads import OUTPUT_TYPES, convert_output
from lastlayer.model.io import model_to_bytes
from lastlayer.model.labels import set_embedded_labels
from lastlayer.model.metadata import read_metadata, write_metadata
from lastlayer.model.names import as_text, operator_name
from lastlayer.model.normalization import Normalization, input_normalization
from lastlayer.model.surgery import class_layer_parameters, extract_segment, locate_embedding
from lastlayer.model.tflite_metadata import write_input_normalization
from lastlayer.quantization import quantize, range_quantization

STATE_METADATA_NAME = "lastlayer_kept_classes"
PREFIX = "lastlayer/KeptClasses"
B = schema.BuiltinOperator
_PROBABILITY_OPS = ("SOFTMAX", "LOGISTIC")
_CONVERSIONS = ("QUANTIZE", "DEQUANTIZE")
_TYPE_NAMES = {np.dtype(np.uint8): "uint8", np.dtype(np.int8): "int8", np.dtype(np.float32): "float32"}
# The joined logits' range may move up until its bottom has gone this part of the way to 0: original
# logits below it are raised to it, which (measured with benchmarks/keep_classes.py on the TF2 PTQ model,
# range -4.75..11.4) changed the original model's top-1 on 0.0-0.1 % of pictures at 0.75 and 0.2 % at 1.0,
# while new classes saturating at the top cost 0.05-0.2 of their top-1 without moving.
MAX_SHIFT_OF_BOTTOM = 0.75
_INT8_VERSIONS = {B.FULLY_CONNECTED: 4, B.CONCATENATION: 2, B.RESHAPE: 1, B.QUANTIZE: 2}


@dataclass(frozen=True)
class ClassLayer:
    """What a learner needs of a classifier's own class layer, as plain numbers.

    Attributes:
        weights: ``[C, D]`` rows, dequantized (float64).
        bias: ``[C]`` biases, dequantized.
        labels: the original classes' names stored in the model (``C``), or ``None``.
        logit_range: (min, max) logit the model can represent where the classes meet (its quantization),
            ``None`` for float logits.
        dtype: ``uint8``, ``int8`` or ``float32``: the type the logits are computed in.
        per_axis: the rows are quantized per row (per-axis) rather than with one scale.
        state: the stored state of classes appended before (``None`` when there are none).
        appended: how many classes were appended before (0 for an original classifier).
        max_logit_shift: how far the joined logits' range may move up (in front of a softmax, by whole
            quantization steps, see :data:`MAX_SHIFT_OF_BOTTOM`); 0 for float or other scores.
    """

    weights: np.ndarray
    bias: np.ndarray
    labels: list[str] | None
    logit_range: tuple[float, float] | None
    dtype: str
    per_axis: bool
    state: dict[str, Any] | None
    appended: int
    max_logit_shift: float = 0.0

    @property
    def num_classes(self) -> int:
        return int(self.weights.shape[0])


@dataclass(frozen=True)
class _Structure:
    """Where the parts are in an original (not appended) classifier's main subgraph."""

    class_op: int
    embedding: int
    joint: int  # the logits tensor the new classes' logits are concatenated to
    downstream: list[int]  # operators after the joint, in order, whose outputs grow by K classes
    classes: int
    softmax: bool  # the joint feeds a SOFTMAX (which only sees differences of logits)


def _producers(graph: schema.SubGraphT) -> dict[int, int]:
    return {t: i for i, op in enumerate(graph.operators) for t in op.outputs}


def _name(tree: schema.ModelT, op: schema.OperatorT) -> str:
    return operator_name(tree.operatorCodes[op.opcodeIndex])


def _ours(tree: schema.ModelT, op: schema.OperatorT) -> bool:
    graph = tree.subgraphs[0]
    return any(as_text(graph.tensors[t].name).startswith(PREFIX + "/") for t in op.outputs)


def _structure(tree: schema.ModelT, source: str) -> _Structure:
    point = locate_embedding(tree)
    if point is None:
        raise ModelError(f"{source} does not end in a classification layer (FULLY_CONNECTED or 1x1 CONV_2D before the softmax); "
                         "its classes cannot be kept", subject="keep_classes")
    graph = tree.subgraphs[0]
    producers = _producers(graph)
    chain, tensor = [], graph.outputs[0]
    while producers[tensor] != point.class_layer:
        chain.append(producers[tensor])
        tensor = graph.operators[producers[tensor]].inputs[0]
    chain.reverse()  # the operators after the class layer, in execution order
    names = [_name(tree, graph.operators[i]) for i in chain]
    position = next((i for i, n in enumerate(names) if n in _PROBABILITY_OPS), None)
    if position is None:
        position = next((i for i, n in enumerate(names) if n in _CONVERSIONS), len(chain))
    joint = graph.operators[chain[position]].inputs[0] if position < len(chain) else graph.outputs[0]
    shape = [int(d) for d in graph.tensors[joint].shape]
    classes = len(class_layer_parameters(tree, point)[1])
    if not shape or shape[-1] != classes or any(d != 1 for d in shape[:-1]):
        raise ModelError(f"{source}: the class scores have shape {shape}, not [1, {classes}]; its classes cannot be kept",
                         subject="keep_classes")
    softmax = position < len(chain) and names[position] == "SOFTMAX"
    return _Structure(point.class_layer, point.tensor, joint, chain[position:], classes, softmax)


def _detach(tree: schema.ModelT) -> schema.ModelT:
    """Remove classes appended before (their layer and the concatenation), in place; return ``tree``."""
    graph = tree.subgraphs[0]
    concat = next((op for op in graph.operators if _ours(tree, op) and _name(tree, op) == "CONCATENATION"), None)
    if concat is None:
        return tree
    original, joined = int(concat.inputs[0]), int(concat.outputs[0])
    producer = next((op for op in graph.operators if original in op.outputs), None)
    if producer is not None and _ours(tree, producer):  # the range-moving QUANTIZE in front of it
        original = int(producer.inputs[0])
    for op in graph.operators:
        op.inputs = [original if int(t) == joined else int(t) for t in op.inputs]
    graph.outputs = [original if int(t) == joined else int(t) for t in graph.outputs]
    graph.operators = [op for op in graph.operators if not _ours(tree, op)]
    # The tensors after the joint get back the original class count; orphaned tensors and buffers go.
    classes = int(graph.tensors[original].shape[-1])
    structure = _structure(extract_segment(tree, list(graph.outputs)), "the model")
    _set_class_count(tree, structure, classes)
    return tree


def _set_class_count(tree: schema.ModelT, structure: _Structure, count: int) -> None:
    """Make the outputs of the operators after the joint (and their reshape targets) ``count`` classes wide."""
    graph = tree.subgraphs[0]
    for op_index in structure.downstream:
        op = graph.operators[op_index]
        for t in op.outputs:
            tensor = graph.tensors[t]
            tensor.shape = [*list(tensor.shape)[:-1], count]
            if tensor.shapeSignature is not None and len(tensor.shapeSignature):
                tensor.shapeSignature = [*list(tensor.shapeSignature)[:-1], count]
        if _name(tree, op) == "RESHAPE":
            if len(op.inputs) > 1 and op.inputs[1] >= 0:
                target = graph.tensors[op.inputs[1]]
                values = np.frombuffer(bytes(np.asarray(tree.buffers[target.buffer].data, np.uint8)), np.int32).copy()
                values[-1] = count
                tree.buffers[target.buffer].data = np.frombuffer(values.tobytes(), dtype=np.uint8)
            if isinstance(op.builtinOptions, schema.ReshapeOptionsT) and op.builtinOptions.newShape is not None \
                    and len(op.builtinOptions.newShape):
                op.builtinOptions.newShape = [*list(op.builtinOptions.newShape)[:-1], count]


def has_appended_classes(model: ModelFile) -> bool:
    """Whether ``model`` holds classes appended by :func:`write_appended_classes`."""
    return read_metadata(model.tree, STATE_METADATA_NAME) is not None and \
        any(_ours(model.tree, op) for op in (model.tree.subgraphs or [schema.SubGraphT()])[0].operators or [])


def read_class_layer(model: ModelFile) -> ClassLayer:
    """The original class layer of a classifier (of the one it was, for a model with appended classes)."""
    if model.kind is ModelKind.EXTRACTOR:
        raise ModelError(f"{model.name} is an embedding extractor: it has no classes to keep", subject="keep_classes")
    if model.kind is not ModelKind.CLASSIFIER:
        raise ModelError(f"{model.name} has no class layer whose classes could be kept", subject="keep_classes")
    appended = has_appended_classes(model)
    tree = _detach(model.copy_tree()) if appended else model.tree
    structure = _structure(tree, model.name)
    graph = tree.subgraphs[0]
    op = graph.operators[structure.class_op]
    weights, bias = class_layer_parameters(tree, locate_embedding(tree))
    joint = graph.tensors[structure.joint]
    dtype = TENSOR_TYPE_TO_NUMPY.get(joint.type, np.dtype(np.float32))
    if dtype not in _TYPE_NAMES:
        raise ModelError(f"{model.name}: its class scores are {dtype}; classes can be kept in uint8, int8 and float32 models",
                         subject="keep_classes")
    q = joint.quantization
    logit_range, max_shift = None, 0.0
    if dtype != np.dtype(np.float32):
        if q is None or q.scale is None or not len(q.scale):
            raise ModelError(f"{model.name}: its {dtype} class scores have no quantization; re-export the model", subject="keep_classes")
        low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
        logit_range = (float(q.scale[0]) * (low - int(q.zeroPoint[0])), float(q.scale[0]) * (high - int(q.zeroPoint[0])))
        if structure.softmax:
            max_shift = max(0.0, min(-MAX_SHIFT_OF_BOTTOM * logit_range[0], (logit_range[1] - logit_range[0]) / 2))
    kernel_q = graph.tensors[op.inputs[1]].quantization
    per_axis = kernel_q is not None and kernel_q.scale is not None and len(kernel_q.scale) > 1
    state = None
    count = 0
    if appended:
        try:
            state = json.loads(read_metadata(model.tree, STATE_METADATA_NAME).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ModelError(f"{model.name}: the stored state of its appended classes is damaged; imprint them again from "
                             "their photos on the original classifier", subject="resume") from None
        count = int(model.tree.subgraphs[0].tensors[model.tree.subgraphs[0].outputs[0]].shape[-1]) - structure.classes
    labels = model.label_list(structure.classes + count)
    return ClassLayer(weights=np.asarray(weights, np.float64), bias=np.asarray(bias, np.float64),
                      labels=None if labels is None else labels[:structure.classes], logit_range=logit_range,
                      dtype=_TYPE_NAMES[dtype], per_axis=per_axis, state=state, appended=count, max_logit_shift=max_shift)


def write_appended_classes(base: ModelFile, appended: AppendedClasses, *, output_type: str | None = None,
                           normalization: Normalization | None = None) -> bytes:
    """``base`` with ``appended``'s classes after its own, as ``.tflite`` bytes; ``base`` is not changed.

    ``base`` is a classifier, or a model this function wrote (its appended classes are replaced).
    ``output_type`` (``None``: the base's) may convert the output by a DEQUANTIZE or QUANTIZE after it;
    ``normalization`` (default: the base's) is stored as the input's ``NormalizationOptions``.
    """
    layer = read_class_layer(base)
    if appended.weights.ndim != 2 or appended.bias.shape != (appended.num_classes,) or appended.num_classes < 1:
        raise ModelError(f"appended classes need weights [K, D] and bias [K], got {list(appended.weights.shape)} "
                         f"and {list(appended.bias.shape)}")
    if appended.dim != layer.weights.shape[1]:
        raise ModelError(f"{base.name} gives {layer.weights.shape[1]}-d embeddings but the new rows have {appended.dim}; "
                         "use the classifier the classes were learned on")
    if appended.labels and len(appended.labels) != layer.num_classes + appended.num_classes:
        raise ModelError(f"{len(appended.labels)} labels for {layer.num_classes} + {appended.num_classes} classes")
    if output_type is not None and output_type not in OUTPUT_TYPES:
        raise ModelError(f"output type {output_type!r} is not one of {', '.join(OUTPUT_TYPES)}", subject="output_type")
    tree = _detach(base.copy_tree())
    structure = _structure(tree, base.name)
    steps = _shift_steps(tree, structure, layer, appended.logit_range, base.name)
    _append(tree, structure, np.asarray(appended.weights, np.float32), np.asarray(appended.bias, np.float32), steps, base.name)
    if output_type is not None:
        convert_output(tree, output_type)
    if appended.labels:
        set_embedded_labels(tree, list(appended.labels))
    write_metadata(tree, STATE_METADATA_NAME, json.dumps(appended.state, sort_keys=True).encode("utf-8"))
    for name, data in appended.metadata.items():
        write_metadata(tree, name, bytes(data))
    chosen = normalization or input_normalization(base)
    write_input_normalization(tree, chosen.mean, chosen.std)
    return model_to_bytes(tree)


def _shift_steps(tree: schema.ModelT, structure: _Structure, layer: ClassLayer, wanted: tuple[float, float] | None,
                 source: str) -> int:
    """How many quantization steps the joined logits' range moves up to represent ``wanted``."""
    if wanted is None or layer.logit_range is None:
        return 0
    scale = float(tree.subgraphs[0].tensors[structure.joint].quantization.scale[0])
    steps = int(round((float(wanted[1]) - layer.logit_range[1]) / scale))
    if steps < 0 or steps * scale > layer.max_logit_shift + scale / 2:
        raise ModelError(f"{source}: the appended classes ask for the logit range {tuple(wanted)}, which its class scores "
                         f"cannot represent (from {layer.logit_range}, at most {layer.max_logit_shift:.3f} higher)")
    return steps


def _append(tree: schema.ModelT, structure: _Structure, weights: np.ndarray, bias: np.ndarray, steps: int,
            source: str) -> None:
    graph = tree.subgraphs[0]
    embedding, joint = graph.tensors[structure.embedding], graph.tensors[structure.joint]
    dtype = TENSOR_TYPE_TO_NUMPY.get(joint.type, np.dtype(np.float32))
    if TENSOR_TYPE_TO_NUMPY.get(embedding.type) != dtype:
        raise ModelError(f"{source}: its embedding is {TENSOR_TYPE_TO_NUMPY.get(embedding.type)} but its class scores are {dtype}; "
                         "classes can be kept when both have one type", subject="keep_classes")
    count = len(weights)
    version = (lambda code: _INT8_VERSIONS.get(code, 1)) if dtype == np.dtype(np.int8) else (lambda code: 1)
    if dtype == np.dtype(np.float32):
        w = add_tensor(tree, f"{PREFIX}/Weights", [count, weights.shape[1]], np.float32, data=weights)
        b = add_tensor(tree, f"{PREFIX}/Bias", [count], np.float32, data=bias)
        out_quant = None
    else:
        if dtype == np.dtype(np.int8):  # int8 kernels need symmetric weights
            w_scale, w_zero = max(float(np.abs(weights).max()), 1e-12) / 127.0, 0
        else:
            w_scale, w_zero = range_quantization(weights.min(), weights.max(), dtype)
        b_scale = float(np.float32(embedding.quantization.scale[0]) * np.float32(w_scale))
        w = add_tensor(tree, f"{PREFIX}/Weights", [count, weights.shape[1]], dtype, quant=quantization(w_scale, w_zero),
                       data=quantize(weights, w_scale, w_zero, dtype))
        b = add_tensor(tree, f"{PREFIX}/Bias", [count], np.int32, quant=quantization(b_scale, 0),
                       data=quantize(bias, b_scale, 0, np.int32))
        out_quant = quantization(joint.quantization.scale[0], int(joint.quantization.zeroPoint[0]) - steps)
    logits = add_tensor(tree, f"{PREFIX}/Logits", [1, count], dtype, quant=out_quant)
    new_ops = [add_operator(tree, B.FULLY_CONNECTED, [structure.embedding, w, b], [logits],
                            options_type=schema.BuiltinOptions.FullyConnectedOptions, options=schema.FullyConnectedOptionsT(),
                            version=version(B.FULLY_CONNECTED))]
    rank = len(joint.shape)
    if rank != 2:
        target = [1] * (rank - 1) + [count]
        shaped = add_tensor(tree, f"{PREFIX}/Logits/Reshaped", target, dtype, quant=out_quant)
        shape = add_tensor(tree, f"{PREFIX}/Logits/Shape", [rank], np.int32, data=np.array(target, np.int32))
        options = schema.ReshapeOptionsT()
        options.newShape = target
        new_ops.append(add_operator(tree, B.RESHAPE, [logits, shape], [shaped], options_type=schema.BuiltinOptions.ReshapeOptions,
                                    options=options, version=version(B.RESHAPE)))
        logits = shaped
    total = structure.classes + count
    original = structure.joint
    if steps:  # the original logits in the moved range, exactly (whole steps): the concatenation then only copies
        original = add_tensor(tree, f"{PREFIX}/Original", list(joint.shape), dtype, quant=out_quant)
        new_ops.append(add_operator(tree, B.QUANTIZE, [structure.joint], [original], version=version(B.QUANTIZE)))
    joined = add_tensor(tree, f"{PREFIX}/Joined", [*list(joint.shape)[:-1], total], dtype, quant=out_quant)
    options = schema.ConcatenationOptionsT()
    options.axis = rank - 1
    new_ops.append(add_operator(tree, B.CONCATENATION, [original, logits], [joined],
                                options_type=schema.BuiltinOptions.ConcatenationOptions, options=options,
                                version=version(B.CONCATENATION)))
    # Rewire the consumers of the original logits after the class layer to the joined ones.
    downstream = [graph.operators[i] for i in structure.downstream]
    for op in downstream:
        op.inputs = [joined if int(t) == structure.joint else int(t) for t in op.inputs]
    graph.outputs = [joined if int(t) == structure.joint else int(t) for t in graph.outputs]
    # Execution order: the new operators right before the first one that reads the joined logits.
    added = [graph.operators[i] for i in new_ops]
    graph.operators = [op for i, op in enumerate(graph.operators) if i not in set(new_ops)]
    at = graph.operators.index(downstream[0]) if downstream else len(graph.operators)
    graph.operators[at:at] = added
    structure_after = _Structure(structure.class_op, structure.embedding, joined,
                                 [graph.operators.index(op) for op in downstream], structure.classes, structure.softmax)
    _set_class_count(tree, structure_after, total)
    tree.signatureDefs = None  # they named the old output shape


def scores_from_embedding(model: ModelFile) -> ModelFile:
    """The part of a classifier after its embedding, as a model: the embedding in, the class scores out.

    Runs the class layer (and appended classes) on embeddings computed before, e.g. cached ones, as
    the whole model would on the images (the embedding as the extractor outputs it, quantized or not).
    """
    point = locate_embedding(model.tree)
    if point is None:
        raise ModelError(f"{model.name} has no class layer to start at", subject="model")
    tree = model.copy_tree()
    return ModelFile.from_tree(extract_segment(tree, list(tree.subgraphs[0].outputs), [point.tensor]),
                               f"{model.name} (after the embedding)")
