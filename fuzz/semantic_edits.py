"""Edits of what operators compute with (issue 26): tensor types, operator codes, quantization, big dimensions
(alone or carried through the graph), constants of another type, and loops around the graph."""

from __future__ import annotations

import contextlib
import math
import random

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from fuzz.picking import INT32_MAX, as_list, pick_graph, pick_op, pick_tensor
from fuzz.structural_edits import BUILTIN_CODES

TENSOR_TYPES = sorted(v for k, v in vars(schema.TensorType).items() if not k.startswith("_"))
HUGE_DIMS = [46341, 131071, 362, 1 << 16, 4096, 1000, 224 * 8]


def edit_tensor_type(model: schema.ModelT, rng: random.Random) -> str | None:
    """Any tensor, often a graph input or output or an operator's output, becomes any type (or a bad value)."""
    graph = pick_graph(model, rng)
    if not graph.tensors:
        return None
    targets = as_list(graph.inputs) + as_list(graph.outputs) + [t for op in graph.operators or [] for t in op.outputs]
    index = int(rng.choice(targets)) if targets and rng.random() < 0.6 else rng.randrange(len(graph.tensors))
    if not 0 <= index < len(graph.tensors):
        return None
    graph.tensors[index].type = rng.choice(TENSOR_TYPES + [99, 127, -1]) if rng.random() < 0.95 else 99
    return f"tensor {index} type -> {graph.tensors[index].type}"


def edit_quantization(model: schema.ModelT, rng: random.Random) -> str | None:
    candidates = [(i, t) for g in model.subgraphs for i, t in enumerate(g.tensors or []) if t.quantization is not None]
    if not candidates:
        return None
    index, tensor = rng.choice(candidates)
    q = tensor.quantization
    scale = [float(s) for s in (q.scale if q.scale is not None else [])]
    zero = as_list(q.zeroPoint)
    action = rng.choice(["scale", "scale", "zero", "zero", "axis", "extend", "drop_zero", "none", "both", "rescale", "rescale",
                         "none"])
    if action == "rescale" and scale:  # the relations between operands: near and past the kernels' bounds
        factor = rng.choice([2.0**-20, 2.0**-17, 2.0**-15, 1e-7, 1e-3, 0.5, 2.0, 1e3, 2.0**15, 2.0**17, 2.0**20])
        q.scale = [s * factor for s in scale]
        return f"tensor {index} quantization scales x {factor:g}"
    if action in ("scale", "both") and scale:
        scale[rng.randrange(len(scale))] = rng.choice(
            [0.0, -1.0, math.nan, math.inf, -math.inf, 1e-45, 1e-38, 1e-30, 1e38, 1e20, 1e-12, rng.random()])
    if action in ("zero", "both") and zero:
        zero[rng.randrange(len(zero))] = rng.choice([-129, 256, -1, 2**40, 128, 0, 32768, -(2**40), 127])
    if action == "axis":
        q.quantizedDimension = rng.choice([-1, 1, 3, 4, 100, INT32_MAX])
    elif action == "extend":
        scale.append(rng.choice([0.5, 1e-3]))
        if rng.random() < 0.5:
            zero.append(0)
    elif action == "drop_zero":
        zero = []
    elif action == "none":
        tensor.quantization = None
        return f"tensor {index} quantization removed"
    q.scale, q.zeroPoint = scale, zero
    return f"tensor {index} quantization {action} -> scale {scale[:4]} zero {zero[:4]} axis {q.quantizedDimension}"


def rederive(model: schema.ModelT) -> None:
    """Set every declared shape of the main graph to the one lastlayer derives (the graph stays consistent)."""
    from lastlayer.model.validate.structure import Checker

    class Rederiving(Checker):
        def fail(self, where: str | tuple, problem: str) -> None:
            if " is declared " not in problem:
                super().fail(where, problem)

    checker = Rederiving(model, "mutant", None)
    with contextlib.suppress(Exception):  # whatever stops it, keep the shapes derived so far
        checker.run()
    if len(model.subgraphs) == 1 and len(checker.derived) == len(model.subgraphs[0].tensors or []):
        for tensor, shape in zip(model.subgraphs[0].tensors, checker.derived):
            tensor.shape = list(shape)


def edit_big_dims(model: schema.ModelT, rng: random.Random) -> str | None:
    """A huge dimension on a graph input or an intermediate; often carried through the graph (consistently)."""
    graph = model.subgraphs[0]
    targets = as_list(graph.inputs) * 3 + [t for op in graph.operators or [] for t in op.outputs]
    targets = [t for t in targets if 0 <= int(t) < len(graph.tensors or []) and len(graph.tensors[int(t)].shape)]
    if not targets:
        return None
    index = int(rng.choice(targets))
    shape = as_list(graph.tensors[index].shape)
    axis = rng.randrange(len(shape))
    shape[axis] = rng.choice(HUGE_DIMS) if rng.random() < 0.7 else shape[axis] * rng.choice([2, 3, 8])
    graph.tensors[index].shape = shape
    if rng.random() < 0.6:
        rederive(model)
        return f"tensor {index} shape -> {shape}, re-derived through the graph"
    return f"tensor {index} shape -> {shape}"


def edit_same_size_shape(model: schema.ModelT, rng: random.Random) -> str | None:
    """An intermediate re-declared with its dimensions permuted or merged: the same size, another layout."""
    picked = pick_tensor(model, rng)
    if picked is None or len(picked[1].shape) < 2:
        return None
    index, tensor = picked
    shape = as_list(tensor.shape)
    if rng.random() < 0.5:
        rng.shuffle(shape)
    else:
        shape = [1] * (len(shape) - 1) + [math.prod(shape)]
    tensor.shape = shape
    return f"tensor {index} shape -> {shape} (same size)"


def edit_single_op_code(model: schema.ModelT, rng: random.Random) -> str | None:
    """One operator (not all sharing its code) becomes another builtin, keeping its operands."""
    picked = pick_op(model, rng)
    if picked is None:
        return None
    _, index, op = picked
    code = schema.OperatorCodeT()
    code.builtinCode = rng.choice(BUILTIN_CODES)
    code.deprecatedBuiltinCode, code.version = min(code.builtinCode, 127), 1
    model.operatorCodes = list(model.operatorCodes or []) + [code]
    op.opcodeIndex = len(model.operatorCodes) - 1
    return f"op {index} -> builtin {code.builtinCode}"


def edit_input_to_constant(model: schema.ModelT, rng: random.Random) -> str | None:
    """An operator input points at a constant: an existing one, or a new one of its shape in another type."""
    picked = pick_op(model, rng)
    if picked is None or not len(as_list(picked[2].inputs)):
        return None
    graph, index, op = picked
    inputs = as_list(op.inputs)
    position = rng.randrange(len(inputs))
    constants = [i for i, t in enumerate(graph.tensors or []) if 0 <= t.buffer < len(model.buffers or [])
                 and model.buffers[t.buffer].data is not None and len(model.buffers[t.buffer].data)]
    if constants and rng.random() < 0.5:
        inputs[position] = rng.choice(constants)
    else:
        old = graph.tensors[inputs[position]] if 0 <= inputs[position] < len(graph.tensors) else None
        tensor = schema.TensorT()
        tensor.name, tensor.shape = "fuzz constant", as_list(old.shape) if old is not None else [1]
        tensor.type = rng.choice([schema.TensorType.FLOAT32, schema.TensorType.INT32, schema.TensorType.UINT8,
                                  schema.TensorType.INT8, schema.TensorType.INT64])
        width = {schema.TensorType.FLOAT32: 4, schema.TensorType.INT32: 4, schema.TensorType.INT64: 8}.get(tensor.type, 1)
        if min(tensor.shape, default=1) < 0 or math.prod(tensor.shape) * width > 1 << 24:
            return None
        buffer = schema.BufferT()
        buffer.data = np.zeros(math.prod(tensor.shape) * width, np.uint8)
        model.buffers = list(model.buffers or []) + [buffer]
        tensor.buffer = len(model.buffers) - 1
        if old is not None and rng.random() < 0.5:
            tensor.quantization = old.quantization
        graph.tensors = list(graph.tensors) + [tensor]
        inputs[position] = len(graph.tensors) - 1
    op.inputs = inputs
    return f"op {index} input {position} -> constant tensor {inputs[position]}"


def wrap_in_loop(model: schema.ModelT, kind: str = "WHILE") -> None:
    """Run the main graph's input through a WHILE whose condition is a constant ``true`` (or an IF), in place."""
    graph = model.subgraphs[0]
    first_index = int(graph.inputs[0])
    first = graph.tensors[first_index]
    shape, kind_of = as_list(first.shape), int(first.type)
    for role in ("cond", "body"):
        sub = schema.SubGraphT()
        sub.name, sub.operators = role, []
        x = schema.TensorT()
        x.name, x.shape, x.type, x.buffer, x.quantization = "x", shape, kind_of, 0, first.quantization
        sub.tensors, sub.inputs, sub.outputs = [x], [0], [0]
        model.subgraphs.append(sub)
    cond = len(model.subgraphs) - 2
    truth = schema.TensorT()
    truth.name, truth.shape, truth.type = "always", [], schema.TensorType.BOOL
    buffer = schema.BufferT()
    buffer.data = np.array([1], np.uint8)
    model.buffers = list(model.buffers or []) + [buffer]
    truth.buffer = len(model.buffers) - 1
    model.subgraphs[cond].tensors.append(truth)
    model.subgraphs[cond].outputs = [1]
    looped = schema.TensorT()
    looped.name, looped.shape, looped.type, looped.quantization = "looped", shape, kind_of, first.quantization
    looped.buffer = 0
    graph.tensors = list(graph.tensors) + [looped]
    out = len(graph.tensors) - 1
    op = schema.OperatorT()
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = getattr(schema.BuiltinOperator, kind)
    code.version = 1
    model.operatorCodes = list(model.operatorCodes or []) + [code]
    op.opcodeIndex = len(model.operatorCodes) - 1
    if kind == "WHILE":
        op.inputs, op.builtinOptionsType = [first_index], schema.BuiltinOptions.WhileOptions
        op.builtinOptions = schema.WhileOptionsT()
        op.builtinOptions.condSubgraphIndex, op.builtinOptions.bodySubgraphIndex = cond, cond + 1
    else:
        graph.tensors.append(truth)
        op.inputs, op.builtinOptionsType = [len(graph.tensors) - 1, first_index], schema.BuiltinOptions.IfOptions
        op.builtinOptions = schema.IfOptionsT()
        op.builtinOptions.thenSubgraphIndex, op.builtinOptions.elseSubgraphIndex = cond + 1, cond + 1
    op.outputs = [out]
    for other in graph.operators or []:
        other.inputs = [out if int(t) == first_index else int(t) for t in other.inputs]
    graph.operators = [op] + list(graph.operators or [])


def edit_loop(model: schema.ModelT, rng: random.Random) -> str | None:
    if not len(as_list(model.subgraphs[0].inputs)):
        return None
    kind = rng.choice(["WHILE", "WHILE", "IF"])
    wrap_in_loop(model, kind)
    return f"graph wrapped in {kind}"
