"""Model surgery on the object tree: find the embedding, cut a classifier into an extractor.

``cut`` keeps only what computes the chosen tensor and drops every other operator, tensor,
operator code and buffer, so the dropped weights leave the file too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.model.edit import remap_operator
from lastlayer.model.names import as_text, operator_name
from lastlayer.model.tensors import dequantized_values

# Operators between the class layer and the output that do not change what the classes are.
_PASS_THROUGH = {"SOFTMAX", "RESHAPE", "SQUEEZE", "QUANTIZE", "DEQUANTIZE", "LOGISTIC"}


@dataclass(frozen=True)
class CutPoint:
    """Where a classifier's embedding is: the tensor feeding its class layer."""

    tensor: int
    name: str
    dim: int
    class_layer: int  # operator index of the FC / 1x1 CONV_2D
    class_layer_name: str


def single_subgraph(model: schema.ModelT, source: str = "the model") -> schema.SubGraphT:
    """The model's only subgraph, or a clear error for multi-subgraph models."""
    count = len(model.subgraphs or [])
    if count != 1:
        raise ModelError(f"{source} has {count} subgraphs; lastlayer edits single-subgraph models only (export without control flow)")
    return model.subgraphs[0]


def tensor_index(model: schema.ModelT, name: str, source: str = "the model") -> int:
    """Index of the tensor called ``name`` in the main subgraph."""
    graph = single_subgraph(model, source)
    for index, tensor in enumerate(graph.tensors or []):
        if as_text(tensor.name) == name:
            return index
    raise ModelError(f"{source} has no tensor named {name!r}; list the tensor names with 'lastlayer inspect'")


def _producers(graph: schema.SubGraphT) -> dict[int, int]:
    return {t: i for i, op in enumerate(graph.operators) for t in op.outputs}


def _is_class_layer(model: schema.ModelT, graph: schema.SubGraphT, op: schema.OperatorT) -> bool:
    """A FULLY_CONNECTED, or a 1x1 CONV_2D on a 1x1 map: one score per class, no spatial dimensions left.

    (A 1x1 convolution over a feature map is a segmentation or detection head, not a class layer.)
    """
    name = operator_name(model.operatorCodes[op.opcodeIndex])
    if name == "FULLY_CONNECTED":
        return True
    if name == "CONV_2D":
        kernel = graph.tensors[op.inputs[1]].shape
        output = graph.tensors[op.outputs[0]].shape
        return len(kernel) == 4 and kernel[1] == 1 and kernel[2] == 1 and len(output) == 4 and output[1] == 1 and output[2] == 1
    return False


def locate_embedding(model: schema.ModelT) -> CutPoint | None:
    """Walk back from the single output over SOFTMAX/RESHAPE/SQUEEZE/(DE)QUANTIZE to the class layer; ``None`` if there is none.

    A CONCATENATION (the original logits first, then the classes lastlayer appended) is walked
    through to its first input: the original class layer.
    """
    if len(model.subgraphs or []) != 1 or len(model.subgraphs[0].outputs or []) != 1:
        return None
    graph = model.subgraphs[0]
    found = _class_layer_behind(model, graph, _producers(graph), graph.outputs[0])
    if found is None:
        return None
    op_index, name = found
    embedding = graph.operators[op_index].inputs[0]
    shape = graph.tensors[embedding].shape
    return CutPoint(embedding, as_text(graph.tensors[embedding].name), shape[-1], op_index, name)


def _class_layer_behind(model: schema.ModelT, graph: schema.SubGraphT, producers: dict[int, int], tensor: int,
                        ) -> tuple[int, str] | None:
    """(operator index, name) of the class layer that ``tensor`` passes unchanged from, or ``None``."""
    while tensor in producers:
        op_index = producers[tensor]
        op = graph.operators[op_index]
        name = operator_name(model.operatorCodes[op.opcodeIndex])
        if _is_class_layer(model, graph, op):
            return op_index, name
        if name == "CONCATENATION" and len(op.inputs) > 1:
            return _class_layer_behind(model, graph, producers, op.inputs[0])
        if name not in _PASS_THROUGH or len(op.inputs) == 0:
            return None
        tensor = op.inputs[0]
    return None


def find_embedding(model: schema.ModelT, source: str = "the model") -> CutPoint:
    """:func:`locate_embedding`, or a :class:`ModelError` saying why there is no class layer to cut at."""
    graph = single_subgraph(model, source)
    if len(graph.outputs) != 1:
        raise ModelError(f"{source} has {len(graph.outputs)} outputs; name the embedding tensor to keep", subject="tensor")
    point = locate_embedding(model)
    if point is None:
        raise ModelError(
            f"{source} does not end in a classification layer (FULLY_CONNECTED or 1x1 CONV_2D before the softmax); "
            "name the embedding tensor to cut at (see 'lastlayer inspect')", subject="tensor")
    return point


def cut(model: schema.ModelT, tensor: int, source: str = "the model") -> schema.ModelT:
    """Keep only what computes ``tensor`` (made the single output), in place; return ``model``.

    Operators, tensors, operator codes and buffers that ``tensor`` does not depend on are
    dropped; tensors and codes are renumbered; metadata buffers are kept.
    """
    return extract_segment(model, [tensor], None, source)


def extract_segment(model: schema.ModelT, outputs: list[int], inputs: list[int] | None = None, source: str = "the model") -> schema.ModelT:
    """Keep the operators computing ``outputs`` from ``inputs`` (default: the graph inputs), in place.

    With ``inputs`` given, the walk back stops there and they become the graph inputs: this cuts
    the *head* of a model off its base.
    """
    graph = single_subgraph(model, source)
    stops = set(inputs or [])
    needed = set(outputs)
    kept_ops = []
    for op_index in range(len(graph.operators or []) - 1, -1, -1):
        op = graph.operators[op_index]
        if any(t in needed and t not in stops for t in op.outputs):
            kept_ops.append(op_index)
            needed.update(t for t in op.inputs if t >= 0)
            needed.update(op.intermediates or [])
    kept_ops.reverse()

    buffers = [schema.BufferT()]  # buffer 0: the empty sentinel every activation may point at
    buffer_map: dict[int, int] = {}

    def keep_buffer(old: int) -> int:
        if not _has_data(model, old):
            return 0
        if old not in buffer_map:
            buffer_map[old] = len(buffers)
            buffers.append(model.buffers[old])
        return buffer_map[old]

    tensor_map = {old: new for new, old in enumerate(sorted(needed))}
    tensors = []
    for old in sorted(needed):
        kept = graph.tensors[old]
        kept.buffer = keep_buffer(kept.buffer)
        tensors.append(kept)

    code_map: dict[int, int] = {}
    codes, operators = [], []
    for op_index in kept_ops:
        op = graph.operators[op_index]
        if op.opcodeIndex not in code_map:
            code_map[op.opcodeIndex] = len(codes)
            codes.append(model.operatorCodes[op.opcodeIndex])
        operators.append(remap_operator(op, code_map[op.opcodeIndex], tensor_map))

    for entry in model.metadata or []:
        entry.buffer = keep_buffer(entry.buffer)
    new_inputs = inputs if inputs is not None else [t for t in graph.inputs if t in needed]
    graph.inputs = [tensor_map[t] for t in new_inputs]
    graph.outputs = [tensor_map[t] for t in outputs]
    graph.tensors, graph.operators = tensors, operators
    model.operatorCodes, model.buffers = codes, buffers
    model.signatureDefs = None  # signatures named the old outputs
    return model


def _has_data(model: schema.ModelT, index: int) -> bool:
    if index <= 0 or index >= len(model.buffers or []):
        return False
    buffer = model.buffers[index]
    return (buffer.data is not None and len(buffer.data) > 0) or bool(buffer.size)


def class_layer_parameters(model: schema.ModelT, point: CutPoint) -> tuple[np.ndarray, np.ndarray]:
    """The class layer's weights ``[C, D]`` and bias ``[C]``, dequantized (a missing bias is zeros)."""
    graph = model.subgraphs[0]
    op = graph.operators[point.class_layer]
    weights = dequantized_values(model, graph.tensors[op.inputs[1]])
    if weights is None:
        raise ModelError(f"the class layer {point.class_layer_name} has no constant weights")
    weights = weights.reshape(weights.shape[0], -1)
    bias = dequantized_values(model, graph.tensors[op.inputs[2]]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    return weights, (np.zeros(len(weights)) if bias is None else bias.reshape(-1))


def cut_at_embedding(model: schema.ModelT, tensor_name: str | None = None, source: str = "the model") -> tuple[schema.ModelT, CutPoint | None]:
    """Cut ``model`` at ``tensor_name``, or at the automatically found embedding when ``None``, in place."""
    if tensor_name is None:
        point = find_embedding(model, source)
        graph = model.subgraphs[0]
        if point.tensor in graph.inputs:
            raise ModelError(f"{source}'s class layer reads the model input directly: cutting there leaves no operators; "
                             "name the embedding tensor to cut at (see 'lastlayer inspect')", subject="tensor")
        return cut(model, point.tensor, source), point
    return cut(model, tensor_index(model, tensor_name, source), source), None

