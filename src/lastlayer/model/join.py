"""Join a base graph and a head graph into one model (e.g. an Edge TPU base with a CPU head).

The head's inputs are connected to base outputs by tensor name, or by an explicit mapping; the
quantization on both sides of each junction must agree. Operator codes are merged (deduplicated),
buffers and tensors appended, and the head's operators run after the base's.
"""

from __future__ import annotations

import copy
from typing import Mapping

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.model.edit import remap_operator
from lastlayer.model.names import as_text, builtin_code, custom_code, tensor_type_name
from lastlayer.model.surgery import single_subgraph


def _quant_signature(tensor: schema.TensorT) -> tuple:
    q = tensor.quantization
    if q is None or q.scale is None or not len(q.scale):
        return (int(tensor.type), (), ())
    zero = q.zeroPoint if q.zeroPoint is not None else []
    return (int(tensor.type), tuple(np.round(np.asarray(q.scale, dtype=np.float64), 9)), tuple(int(z) for z in zero))


def _describe(tensor: schema.TensorT) -> str:
    kind, scales, zeros = _quant_signature(tensor)
    quant = f" scale {list(scales)} zero {list(zeros)}" if scales else " (not quantized)"
    return f"{as_text(tensor.name)} {tensor_type_name(kind)}{list(tensor.shape)}{quant}"


def junctions(base: schema.ModelT, head: schema.ModelT, mapping: Mapping[str, str] | None = None) -> dict[int, int]:
    """``{head input index: base output index}``; by equal names unless ``mapping`` (base name -> head name)."""
    base_graph, head_graph = single_subgraph(base, "the base"), single_subgraph(head, "the head")
    base_outputs = {as_text(base_graph.tensors[t].name): t for t in base_graph.outputs}
    head_inputs = {as_text(head_graph.tensors[t].name): t for t in head_graph.inputs}
    pairs: dict[int, int] = {}
    if mapping:
        for base_name, head_name in mapping.items():
            if base_name not in base_outputs:
                raise ModelError(f"the base has no output tensor named {base_name!r} (its outputs: {', '.join(base_outputs)})")
            if head_name not in head_inputs:
                raise ModelError(f"the head has no input tensor named {head_name!r} (its inputs: {', '.join(head_inputs)})")
            pairs[head_inputs[head_name]] = base_outputs[base_name]
    else:
        pairs = {head_inputs[name]: base_outputs[name] for name in head_inputs if name in base_outputs}
    if not pairs:
        raise ModelError(
            f"no head input matches a base output by name (base outputs: {', '.join(base_outputs)}; "
            f"head inputs: {', '.join(head_inputs)}); say which base output feeds which head input (BASE_OUTPUT=HEAD_INPUT)",
            subject="mapping")
    for head_index, base_index in pairs.items():
        base_tensor, head_tensor = base_graph.tensors[base_index], head_graph.tensors[head_index]
        if list(base_tensor.shape) != list(head_tensor.shape) or _quant_signature(base_tensor) != _quant_signature(head_tensor):
            raise ModelError(f"the junction does not match: base output {_describe(base_tensor)} vs head input {_describe(head_tensor)}")
    unconnected = [as_text(head_graph.tensors[t].name) for t in head_graph.inputs if t not in pairs]
    if unconnected:
        raise ModelError(f"head input(s) {', '.join(unconnected)} are not connected to the base; "
                         "say which base output feeds each (BASE_OUTPUT=HEAD_INPUT)", subject="mapping")
    return pairs


def join(base: schema.ModelT, head: schema.ModelT, mapping: Mapping[str, str] | None = None) -> schema.ModelT:
    """A new model: ``base`` followed by ``head`` (neither input is changed)."""
    pairs = junctions(base, head, mapping)
    model = copy.deepcopy(base)
    head = copy.deepcopy(head)
    graph, head_graph = model.subgraphs[0], head.subgraphs[0]

    buffer_map = {0: 0}
    for index, buffer in enumerate(head.buffers or []):
        if index == 0:
            continue
        buffer_map[index] = len(model.buffers)
        model.buffers.append(buffer)

    taken = {as_text(t.name) for t in graph.tensors}
    tensor_map = dict(pairs)
    for index, tensor in enumerate(head_graph.tensors or []):
        if index in tensor_map:
            continue
        tensor.buffer = buffer_map.get(tensor.buffer, 0)
        name = as_text(tensor.name)
        if name in taken:  # keep names unique: a silent merge by name would wire the wrong tensors
            tensor.name = f"{name}/head"
        taken.add(as_text(tensor.name))
        tensor_map[index] = len(graph.tensors)
        graph.tensors.append(tensor)

    code_map = {}
    for index, code in enumerate(head.operatorCodes or []):
        match = next((i for i, mine in enumerate(model.operatorCodes) if builtin_code(mine) == builtin_code(code)
                      and custom_code(mine) == custom_code(code)), None)
        if match is None:
            model.operatorCodes.append(code)
            match = len(model.operatorCodes) - 1
        else:
            model.operatorCodes[match].version = max(int(model.operatorCodes[match].version), int(code.version))
        code_map[index] = match
    for op in head_graph.operators:
        graph.operators.append(remap_operator(op, code_map[op.opcodeIndex], tensor_map))
    graph.outputs = [tensor_map[t] for t in head_graph.outputs]
    names = {as_text(m.name) for m in model.metadata or []}
    for entry in head.metadata or []:
        if as_text(entry.name) not in names:
            entry.buffer = buffer_map.get(entry.buffer, 0)
            model.metadata = list(model.metadata or []) + [entry]
    model.signatureDefs = None
    return model
