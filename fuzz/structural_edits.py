"""Edits of a model's structure: indices, graph inputs and outputs, shapes, buffers, options, subgraphs, codes."""

from __future__ import annotations

import math
import random

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from fuzz.picking import INT32_MAX, as_list, index_value, pick_graph, pick_op, pick_tensor

BUILTIN_CODES = sorted(v for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_"))
OPTIONS_TYPES = sorted(v for k, v in vars(schema.BuiltinOptions).items() if not k.startswith("_"))


def edit_op_index(model: schema.ModelT, rng: random.Random) -> str | None:
    picked = pick_op(model, rng)
    if picked is None:
        return None
    graph, index, op = picked
    field = rng.choice(["inputs", "inputs", "outputs", "intermediates"])
    values = as_list(getattr(op, field))
    count = len(graph.tensors or [])
    action = rng.choice(["set", "set", "drop", "append", "clear"])
    if action == "set" and values:
        k = rng.randrange(len(values))
        values[k] = index_value(rng, count)
    elif action == "drop" and values:
        del values[rng.randrange(len(values))]
    elif action == "append":
        values.append(rng.choice([-1, rng.randrange(max(count, 1)), count]))
    else:
        values = []
    setattr(op, field, values)
    return f"op {index} {field} {action} -> {values[:8]}"


def edit_graph_io(model: schema.ModelT, rng: random.Random) -> str | None:
    graph = pick_graph(model, rng)
    field = rng.choice(["inputs", "outputs"])
    values = as_list(getattr(graph, field))
    count = len(graph.tensors or [])
    action = rng.choice(["set", "set", "clear", "append", "dup"])
    if action == "set" and values:
        values[rng.randrange(len(values))] = index_value(rng, count)
    elif action == "append":
        values.append(rng.randrange(max(count, 1)))
    elif action == "dup" and values:
        values.append(values[0])
    else:
        values = []
    setattr(graph, field, values)
    return f"graph {field} {action} -> {values}"


def edit_shape(model: schema.ModelT, rng: random.Random) -> str | None:
    picked = pick_tensor(model, rng)
    if picked is None:
        return None
    index, tensor = picked
    shape = as_list(tensor.shape)
    action = rng.choice(["dim", "dim", "dim", "drop", "add", "empty", "signature"])
    values = [-1, 0, -7, INT32_MAX, 1 << 16, 1 << 24, 3, 1, 2, rng.randrange(1, 2000)]
    if action == "dim" and shape:
        shape[rng.randrange(len(shape))] = rng.choice(values)
    elif action == "drop" and shape:
        del shape[rng.randrange(len(shape))]
    elif action == "add":
        shape.insert(rng.randrange(len(shape) + 1), rng.choice([1, 1, 2, 7]))
    elif action == "signature":
        signature = list(shape)
        if signature and rng.random() < 0.7:
            signature[rng.randrange(len(signature))] = rng.choice([-1, -2, 0])
        else:
            signature.append(-1)
        tensor.shapeSignature = signature
        return f"tensor {index} shapeSignature -> {signature}"
    else:
        shape = []
    tensor.shape = shape
    return f"tensor {index} shape {action} -> {shape}"


def edit_tensor_buffer(model: schema.ModelT, rng: random.Random) -> str | None:
    picked = pick_tensor(model, rng)
    if picked is None:
        return None
    index, tensor = picked
    count = len(model.buffers or [])
    tensor.buffer = rng.choice([0, -1, count, count + 5, INT32_MAX, rng.randrange(max(count, 1))])
    return f"tensor {index} buffer -> {tensor.buffer}"


def edit_options(model: schema.ModelT, rng: random.Random) -> str | None:
    picked = pick_op(model, rng)
    if picked is None:
        return None
    graph, index, op = picked
    del graph
    action = rng.choice(["field", "field", "field", "remove", "type", "swap"])
    options = op.builtinOptions
    if action == "field" and options is not None:
        fields = [k for k, v in vars(options).items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if fields:
            field = rng.choice(fields)
            value = rng.choice([0, -1, 2, 7, 6, INT32_MAX, 100000, -(2**31), rng.randrange(64)])
            if isinstance(getattr(options, field), float):
                value = rng.choice([0.0, -1.0, math.nan, math.inf, 1e30])
            setattr(options, field, value)
            return f"op {index} option {field} -> {value}"
    if action == "remove":
        op.builtinOptions, op.builtinOptionsType = None, 0
        return f"op {index} options removed"
    if action == "type":
        op.builtinOptionsType = rng.choice(OPTIONS_TYPES)
        return f"op {index} options type -> {op.builtinOptionsType}"
    others = [o for g in model.subgraphs for o in g.operators or [] if o.builtinOptions is not None]
    if others:
        other = rng.choice(others)
        op.builtinOptions, op.builtinOptionsType = other.builtinOptions, other.builtinOptionsType
        return f"op {index} options swapped to type {other.builtinOptionsType}"
    return None


def edit_subgraphs(model: schema.ModelT, rng: random.Random) -> str | None:
    action = rng.choice(["clear", "duplicate", "duplicate", "empty_graph", "drop_ops"])
    if action == "clear":
        model.subgraphs = []
    elif action == "duplicate":
        model.subgraphs = list(model.subgraphs) + [model.subgraphs[0]]
        if rng.random() < 0.5:
            model.subgraphs.reverse()
    elif action == "empty_graph":
        graph = schema.SubGraphT()
        graph.tensors, graph.operators, graph.inputs, graph.outputs = [], [], [], []
        model.subgraphs = [graph] + list(model.subgraphs)[1:]
    else:
        model.subgraphs[0].operators = []
    return f"subgraphs {action}"


def edit_opcode_index(model: schema.ModelT, rng: random.Random) -> str | None:
    picked = pick_op(model, rng)
    if picked is None:
        return None
    _, index, op = picked
    count = len(model.operatorCodes or [])
    op.opcodeIndex = rng.choice([-1, count, count + 3, INT32_MAX, rng.randrange(max(count, 1)), rng.randrange(max(count, 1))])
    return f"op {index} opcodeIndex -> {op.opcodeIndex}"


def edit_operator_code(model: schema.ModelT, rng: random.Random) -> str | None:
    if not model.operatorCodes:
        return None
    index = rng.randrange(len(model.operatorCodes))
    code = model.operatorCodes[index]
    action = rng.choice(["builtin", "builtin", "builtin", "version", "custom", "unknown"])
    if action == "builtin":
        value = rng.choice(BUILTIN_CODES)
        code.builtinCode, code.deprecatedBuiltinCode, code.customCode = value, min(value, 127), None
        return f"operator code {index} -> builtin {value}"
    if action == "version":
        code.version = rng.choice([0, -1, 2, 3, 100, INT32_MAX])
        return f"operator code {index} version -> {code.version}"
    if action == "custom":
        code.builtinCode, code.deprecatedBuiltinCode = 32, 32
        code.customCode = rng.choice(["edgetpu-custom-op", "TFLite_Detection_PostProcess", "", "x" * 300])
        return f"operator code {index} -> custom {code.customCode[:30]!r}"
    code.builtinCode = rng.choice([-1, 210, 1000, INT32_MAX])
    code.deprecatedBuiltinCode = rng.choice([0, 127, -1, 100])
    return f"operator code {index} -> builtin {code.builtinCode} / deprecated {code.deprecatedBuiltinCode}"


def edit_buffers(model: schema.ModelT, rng: random.Random) -> str | None:
    buffers = model.buffers or []
    full = [i for i, b in enumerate(buffers) if b.data is not None and len(b.data)]
    action = rng.choice(["shrink", "shrink", "grow", "empty", "clear", "offset", "fill0"])
    if action == "clear":
        model.buffers = []
        return "all buffers removed"
    if action == "fill0":
        if buffers:
            buffers[0].data = np.zeros(rng.choice([1, 4, 16]), dtype=np.uint8)
        return "buffer 0 given data"
    if not full:
        return None
    index = rng.choice(full)
    data = np.asarray(buffers[index].data, dtype=np.uint8)
    if action == "shrink":
        buffers[index].data = data[: rng.randrange(len(data))]
    elif action == "grow":
        buffers[index].data = np.concatenate([data, np.zeros(rng.choice([1, 3, 4, len(data)]), dtype=np.uint8)])
    elif action == "empty":
        buffers[index].data = None
    else:
        buffers[index].data = None
        buffers[index].offset, buffers[index].size = rng.choice([(2, 10**9), (1 << 40, 16), (100, len(data))])
    return f"buffer {index} {action}"


def edit_metadata(model: schema.ModelT, rng: random.Random) -> str | None:
    count = len(model.buffers or [])
    if model.metadata:
        entry = rng.choice(model.metadata)
        entry.buffer = rng.choice([-1, count, INT32_MAX, rng.randrange(max(count, 1))])
        return f"metadata buffer -> {entry.buffer}"
    model.metadataBuffer = [rng.choice([-1, count, count + 7])]
    return f"metadataBuffer -> {model.metadataBuffer}"


def edit_tensors(model: schema.ModelT, rng: random.Random) -> str | None:
    graph = pick_graph(model, rng)
    tensors = list(graph.tensors or [])
    if not tensors:
        return None
    action = rng.choice(["drop_last", "drop", "dup"])
    if action == "drop_last":
        tensors.pop()
    elif action == "drop":
        tensors.pop(rng.randrange(len(tensors)))
    else:
        tensors.append(tensors[rng.randrange(len(tensors))])
    graph.tensors = tensors
    return f"tensors {action}"


def edit_operators(model: schema.ModelT, rng: random.Random) -> str | None:
    graph = pick_graph(model, rng)
    ops = list(graph.operators or [])
    if not ops:
        return None
    action = rng.choice(["swap", "drop", "dup", "reverse"])
    i, j = rng.randrange(len(ops)), rng.randrange(len(ops))
    if action == "swap":
        ops[i], ops[j] = ops[j], ops[i]
    elif action == "drop":
        ops.pop(i)
    elif action == "dup":
        ops.insert(i, ops[j])
    else:
        ops.reverse()
    graph.operators = ops
    return f"operators {action} {i} {j}"
