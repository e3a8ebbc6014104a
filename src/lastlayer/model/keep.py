"""A classifier with new classes appended after its own: read its class layer, write it with more classes.

``[embedding] -> class layer -> ... -> logits [1, C] (-> QUANTIZE) ----------------------------> CONCATENATION -> SOFTMAX -> ...
             |                                       `-> REDUCE_MAX -----.                       ^
             `-> centred, unit -> FULLY_CONNECTED -> r [1, K] -> gate -> ADD (-> QUANTIZE) ------'``

The original class layer (FULLY_CONNECTED or 1x1 CONV_2D), its rows, biases and quantization, the
softmax and everything after it stay as they are. New class ``k`` gets the logit
``max(original logits) + min(r_k, steepness * r_k)`` with ``r_k = W_k . unit(x - mean(x)) + b_k``
(:class:`~lastlayer.layer.AppendedClasses`): the embedding is centred (MEAN, SUB) and normalised
(MUL, SUM, MAXIMUM, RSQRT, MUL; no L2_NORMALIZATION, which would make the model look like Coral's
imprinting structure), all in float32 (in a quantized model after a DEQUANTIZE: a quantized
normalisation was off by up to 2 %, which moved the cosines more than the classes differ), and the
new logits are quantized once, into the original logits' quantization, then joined to them just
before the softmax. So the original classes compute bit for bit what they did, in uint8, int8 or
float32, with per-tensor or per-axis weights. In front of a softmax the joined range may move up by
whole quantization steps (a QUANTIZE of the original logits, exact) to leave the new logits room.
The labels (original ones first), the learner's state and any further metadata entries are stored
in the model; writing again replaces the appended operators, so a resumed model never stacks two sets.
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
from lastlayer.model.surgery import CutPoint, class_layer_parameters, extract_segment, locate_embedding
from lastlayer.model.tflite_metadata import write_input_normalization

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
_INT8_VERSIONS = {B.CONCATENATION: 2, B.QUANTIZE: 2, B.DEQUANTIZE: 2, B.REDUCE_MAX: 2}


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

    point: CutPoint  # the class layer and the embedding it reads
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


def _structure(tree: schema.ModelT, source: str, point: CutPoint | None = None) -> _Structure:
    """The parts of ``tree``; ``point``: its class layer when already known (else found here)."""
    point = point or locate_embedding(tree)
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
    return _Structure(point, joint, chain[position:], classes, softmax)


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


def appended_operators(tree: schema.ModelT) -> bool:
    """Whether ``tree`` holds classes appended by :func:`write_appended_classes` (its state and its operators)."""
    return read_metadata(tree, STATE_METADATA_NAME) is not None and \
        any(_ours(tree, op) for op in (tree.subgraphs or [schema.SubGraphT()])[0].operators or [])


def has_appended_classes(model: ModelFile) -> bool:
    """Whether ``model`` holds classes appended by :func:`write_appended_classes` (from its analysis)."""
    return model.analysis.appended_classes


def read_class_layer(model: ModelFile) -> ClassLayer:
    """The original class layer of a classifier (of the one it was, for a model with appended classes)."""
    if model.kind is ModelKind.EXTRACTOR:
        raise ModelError(f"{model.name} is an embedding extractor: it has no classes to keep", subject="keep_classes")
    if model.kind is not ModelKind.CLASSIFIER:
        raise ModelError(f"{model.name} has no class layer whose classes could be kept", subject="keep_classes")
    appended = has_appended_classes(model)
    tree = _detach(model.copy_tree()) if appended else model.tree
    structure = _structure(tree, model.name, None if appended else model.analysis.class_layer)
    graph = tree.subgraphs[0]
    op = graph.operators[structure.point.class_layer]
    weights, bias = class_layer_parameters(tree, structure.point)
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
    structure = _structure(tree, base.name, None if layer.appended else base.analysis.class_layer)  # a copy: the same parts
    steps = _shift_steps(tree, structure, layer, appended.logit_range, base.name)
    _append(tree, structure, appended, steps, base.name)
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


class _Writer:
    """Adds the new classes' operators (tensors named under :data:`PREFIX`) to a tree of type ``dtype``."""

    def __init__(self, tree: schema.ModelT, dtype: np.dtype) -> None:
        self.tree, self.dtype, self.ops = tree, dtype, []

    @property
    def quantized(self) -> bool:
        return self.dtype != np.dtype(np.float32)

    def tensor(self, name: str, shape: list[int], quant: schema.QuantizationParametersT | None = None) -> int:
        """An activation: in the model's type with ``quant``, in float32 without."""
        return add_tensor(self.tree, f"{PREFIX}/{name}", shape, self.dtype if quant is not None else np.float32, quant=quant)

    def constant(self, name: str, values: np.ndarray, dtype: type = np.float32) -> int:
        values = np.asarray(values, dtype)
        return add_tensor(self.tree, f"{PREFIX}/{name}", list(values.shape), dtype, data=values)

    def shape(self, tensor: int) -> list[int]:
        return [int(d) for d in self.tree.subgraphs[0].tensors[tensor].shape]

    def op(self, code: int, inputs: list[int], output: int, options_type: int = 0, options: object = None) -> int:
        integer = self.tree.subgraphs[0].tensors[inputs[0]].type == schema.TensorType.INT8 or \
            self.tree.subgraphs[0].tensors[output].type == schema.TensorType.INT8
        version = _INT8_VERSIONS.get(code, 1) if integer else 1
        self.ops.append(add_operator(self.tree, code, inputs, [output], options_type=options_type, options=options,
                                     version=version))
        return output

    def unary(self, code: int, name: str, source: int, quant: schema.QuantizationParametersT | None = None) -> int:
        """QUANTIZE (to ``quant``) or DEQUANTIZE (to float32) of ``source``."""
        return self.op(code, [source], self.tensor(name, self.shape(source), quant))

    def binary(self, code: int, name: str, first: int, second: int, shape: list[int]) -> int:
        """ADD, SUB, MUL or MINIMUM in float32 (with broadcasting)."""
        options = {B.ADD: (schema.BuiltinOptions.AddOptions, schema.AddOptionsT), B.SUB: (schema.BuiltinOptions.SubOptions,
                   schema.SubOptionsT), B.MUL: (schema.BuiltinOptions.MulOptions, schema.MulOptionsT)}.get(code)
        return self.op(code, [first, second], self.tensor(name, shape), *((options[0], options[1]()) if options else ()))

    def reduce(self, code: int, name: str, source: int, quant: schema.QuantizationParametersT | None = None) -> int:
        """MEAN, SUM or REDUCE_MAX over the last axis of ``source``, keeping its rank."""
        shape = self.shape(source)
        options = schema.ReducerOptionsT()
        options.keepDims = True
        return self.op(code, [source, self.constant(f"{name}/Axis", [len(shape) - 1], np.int32)],
                       self.tensor(name, [*shape[:-1], 1], quant), schema.BuiltinOptions.ReducerOptions, options)


def _relative(writer: _Writer, embedding: int, weights: np.ndarray, bias: np.ndarray, target: list[int]) -> int:
    """``r = W . unit(x - mean(x)) + b`` in float32, shaped ``target``: (DEQUANTIZE,) MEAN, SUB, the norm (MUL, SUM,
    MAXIMUM, RSQRT, MUL), FULLY_CONNECTED (, RESHAPE). Float keeps the cosines exact (quantized, an L2_NORMALIZATION
    was off by up to 2 %); no L2_NORMALIZATION op, which would make the model look like Coral's imprinting structure."""
    x = writer.unary(B.DEQUANTIZE, "Embedding", embedding) if writer.quantized else embedding
    shape = writer.shape(x)
    centred = writer.binary(B.SUB, "Centred", x, writer.reduce(B.MEAN, "Mean", x), shape)
    squares = writer.reduce(B.SUM, "SquaredNorm", writer.binary(B.MUL, "Squares", centred, centred, shape))
    floored = writer.op(B.MAXIMUM, [squares, writer.constant("NormFloor", [1e-12])], writer.tensor("SquaredNorm/Floored",
                        writer.shape(squares)))
    inverse = writer.op(B.RSQRT, [floored], writer.tensor("InverseNorm", writer.shape(squares)))
    unit = writer.binary(B.MUL, "Unit", centred, inverse, shape)
    options = schema.FullyConnectedOptionsT()
    relative = writer.op(B.FULLY_CONNECTED, [unit, writer.constant("Weights", weights), writer.constant("Bias", bias)],
                         writer.tensor("Relative", [1, len(weights)]), schema.BuiltinOptions.FullyConnectedOptions, options)
    if target == [1, len(weights)]:
        return relative
    options = schema.ReshapeOptionsT()
    options.newShape = target
    return writer.op(B.RESHAPE, [relative, writer.constant("Relative/Shape", target, np.int32)],
                     writer.tensor("Relative/Reshaped", target), schema.BuiltinOptions.ReshapeOptions, options)


def _append(tree: schema.ModelT, structure: _Structure, appended: AppendedClasses, steps: int, source: str) -> None:
    graph = tree.subgraphs[0]
    embedding, joint = graph.tensors[structure.point.tensor], graph.tensors[structure.joint]
    dtype = TENSOR_TYPE_TO_NUMPY.get(joint.type, np.dtype(np.float32))
    if TENSOR_TYPE_TO_NUMPY.get(embedding.type) != dtype:
        raise ModelError(f"{source}: its embedding is {TENSOR_TYPE_TO_NUMPY.get(embedding.type)} but its class scores are {dtype}; "
                         "classes can be kept when both have one type", subject="keep_classes")
    writer = _Writer(tree, dtype)
    out_quant = None
    if writer.quantized:
        out_quant = quantization(joint.quantization.scale[0], int(joint.quantization.zeroPoint[0]) - steps)
    target = [1] * (len(joint.shape) - 1) + [len(appended.weights)]
    original = structure.joint
    if steps:  # the original logits in the moved range, exactly (whole steps): the concatenation then only copies
        original = writer.unary(B.QUANTIZE, "Original", structure.joint, out_quant)
    relative = _relative(writer, structure.point.tensor, np.asarray(appended.weights, np.float32),
                         np.asarray(appended.bias, np.float32), target)
    steepness = float(appended.steepness)
    if steepness > 1.0:  # below the threshold (r < 0) the new logit falls `steepness` times faster: min(r, steepness * r)
        steep = writer.binary(B.MUL, "Steep", relative, writer.constant("Steepness", [steepness]), target)
        relative = writer.op(B.MINIMUM, [relative, steep], writer.tensor("Gated", target))
    top = writer.reduce(B.REDUCE_MAX, "Top", original, out_quant)  # the best original logit, exact in its quantization
    if writer.quantized:
        top = writer.unary(B.DEQUANTIZE, "Top/Float", top)
    new = writer.binary(B.ADD, "Logits", top, relative, target)
    if writer.quantized:
        new = writer.unary(B.QUANTIZE, "Logits/Quantized", new, out_quant)
    total = structure.classes + len(appended.weights)
    joined = writer.tensor("Joined", [*list(joint.shape)[:-1], total], out_quant)
    options = schema.ConcatenationOptionsT()
    options.axis = len(joint.shape) - 1
    writer.op(B.CONCATENATION, [original, new], joined, schema.BuiltinOptions.ConcatenationOptions, options)
    # Rewire the consumers of the original logits after the class layer to the joined ones.
    downstream = [graph.operators[i] for i in structure.downstream]
    for op in downstream:
        op.inputs = [joined if int(t) == structure.joint else int(t) for t in op.inputs]
    graph.outputs = [joined if int(t) == structure.joint else int(t) for t in graph.outputs]
    # Execution order: the new operators right before the first one that reads the joined logits.
    added = [graph.operators[i] for i in writer.ops]
    graph.operators = [op for i, op in enumerate(graph.operators) if i not in set(writer.ops)]
    at = graph.operators.index(downstream[0]) if downstream else len(graph.operators)
    graph.operators[at:at] = added
    structure_after = _Structure(structure.point, joined,
                                 [graph.operators.index(op) for op in downstream], structure.classes, structure.softmax)
    _set_class_count(tree, structure_after, total)
    tree.signatureDefs = None  # they named the old output shape


def scores_from_embedding(model: ModelFile) -> ModelFile:
    """The part of a classifier after its embedding, as a model: the embedding in, the class scores out.

    Runs the class layer (and appended classes) on embeddings computed before, e.g. cached ones, as
    the whole model would on the images (the embedding as the extractor outputs it, quantized or not).
    """
    point = model.analysis.class_layer
    if point is None:
        raise ModelError(f"{model.name} has no class layer to start at", subject="model")
    tree = model.copy_tree()
    return ModelFile.from_tree(extract_segment(tree, list(tree.subgraphs[0].outputs), [point.tensor]),
                               f"{model.name} (after the embedding)")
