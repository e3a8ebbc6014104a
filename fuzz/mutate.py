"""Seeded mutations of real ``.tflite`` models: raw byte edits and edits through the object tree.

Every mutation is a pure function of ``(base model bytes, random.Random)``, so a case is replayed
exactly from its seed and number (see ``fuzz/run.py --only``). Byte edits aim at the flatbuffer's
structure (tables, vectors of indices), not at the megabytes of weights, where a flip is harmless.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

TFL3 = b"TFL3"
BUILTIN_CODES = sorted(v for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_"))
OPTIONS_TYPES = sorted(v for k, v in vars(schema.BuiltinOptions).items() if not k.startswith("_"))
INT32_MAX = 2**31 - 1


@dataclass
class Mutant:
    """A mutated model and what was done to it."""

    data: bytes
    description: str


def pack(model: schema.ModelT) -> bytes:
    builder = flatbuffers.Builder(1024 * 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFL3)
    return bytes(builder.Output())


def parse(data: bytes) -> schema.ModelT:
    return schema.ModelT.InitFromPackedBuf(data, 0)


# ----------------------------------------------------------------------------------- byte level
def structural_ranges(data: bytes, min_buffer: int = 64) -> list[tuple[int, int]]:
    """Byte ranges of ``data`` outside the constant buffers larger than ``min_buffer`` bytes."""
    model = schema.Model.GetRootAs(data, 0)
    base = np.frombuffer(data, dtype=np.uint8).ctypes.data
    holes = []
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer is None or buffer.DataLength() < min_buffer:
            continue
        array = buffer.DataAsNumpy()
        start = array.ctypes.data - base
        holes.append((start, start + len(array)))
    ranges, position = [], 0
    for start, end in sorted(holes):
        if start > position:
            ranges.append((position, start))
        position = max(position, end)
    if position < len(data):
        ranges.append((position, len(data)))
    return ranges


def _structural_position(data: bytes, ranges: list[tuple[int, int]], rng: random.Random) -> int:
    weights = [end - start for start, end in ranges]
    start, end = rng.choices(ranges, weights=weights)[0]
    return rng.randrange(start, end)


def byte_flips(data: bytes, rng: random.Random, ranges: list[tuple[int, int]]) -> Mutant:
    out = bytearray(data)
    count = rng.choice([1, 1, 2, 4, 8])
    where = []
    for _ in range(count):
        pos = _structural_position(data, ranges, rng)
        out[pos] = rng.choice([0, 0xFF, 0x7F, 0x80, 1, rng.randrange(256)])
        where.append(pos)
    out[4:8] = TFL3
    return Mutant(bytes(out), f"byte-set at {where}")


def bit_flips(data: bytes, rng: random.Random, ranges: list[tuple[int, int]]) -> Mutant:
    out = bytearray(data)
    where = []
    for _ in range(rng.choice([1, 2, 3])):
        pos = _structural_position(data, ranges, rng)
        out[pos] ^= 1 << rng.randrange(8)
        where.append(pos)
    out[4:8] = TFL3
    return Mutant(bytes(out), f"bit-flip at {where}")


def truncation(data: bytes, rng: random.Random, ranges: list[tuple[int, int]]) -> Mutant:
    del ranges
    cut = rng.choice([rng.randrange(8, 64), rng.randrange(8, len(data)), len(data) - rng.randrange(1, 64)])
    return Mutant(data[: max(8, cut)], f"truncated to {max(8, cut)} of {len(data)} bytes")


def int32_write(data: bytes, rng: random.Random, ranges: list[tuple[int, int]]) -> Mutant:
    """Overwrite an aligned 32-bit word (an offset, a length or an index) with an edge value."""
    out = bytearray(data)
    pos = _structural_position(data, ranges, rng) & ~3
    pos = min(max(pos, 8), len(data) - 4)
    value = rng.choice([0, 1, -1, 0x7FFFFFFF, -0x80000000, len(data), len(data) - 4, rng.randrange(1 << 16)])
    out[pos : pos + 4] = int(value).to_bytes(4, "little", signed=True)
    return Mutant(bytes(out), f"int32 {value} at {pos}")


BYTE_MUTATIONS = [byte_flips, bit_flips, truncation, int32_write]


# ----------------------------------------------------------------------------------- tree level
def _as_list(values: Any) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def _index_value(rng: random.Random, count: int) -> int:
    return rng.choice([-1, -1, -2, count, count + 1, count + 100, INT32_MAX, -(2**31),
                       rng.randrange(max(count, 1)), rng.randrange(max(count, 1))])


def _pick_graph(model: schema.ModelT, rng: random.Random) -> schema.SubGraphT:
    return rng.choice(model.subgraphs)


def _pick_op(model: schema.ModelT, rng: random.Random) -> tuple[schema.SubGraphT, int, schema.OperatorT] | None:
    graph = _pick_graph(model, rng)
    if not graph.operators:
        return None
    index = rng.randrange(len(graph.operators))
    return graph, index, graph.operators[index]


def _pick_tensor(model: schema.ModelT, rng: random.Random) -> tuple[int, schema.TensorT] | None:
    graph = _pick_graph(model, rng)
    if not graph.tensors:
        return None
    index = rng.randrange(len(graph.tensors))
    return index, graph.tensors[index]


def edit_op_index(model: schema.ModelT, rng: random.Random) -> str | None:
    picked = _pick_op(model, rng)
    if picked is None:
        return None
    graph, index, op = picked
    field = rng.choice(["inputs", "inputs", "outputs", "intermediates"])
    values = _as_list(getattr(op, field))
    count = len(graph.tensors or [])
    action = rng.choice(["set", "set", "drop", "append", "clear"])
    if action == "set" and values:
        k = rng.randrange(len(values))
        values[k] = _index_value(rng, count)
    elif action == "drop" and values:
        del values[rng.randrange(len(values))]
    elif action == "append":
        values.append(rng.choice([-1, rng.randrange(max(count, 1)), count]))
    else:
        values = []
    setattr(op, field, values)
    return f"op {index} {field} {action} -> {values[:8]}"


def edit_graph_io(model: schema.ModelT, rng: random.Random) -> str | None:
    graph = _pick_graph(model, rng)
    field = rng.choice(["inputs", "outputs"])
    values = _as_list(getattr(graph, field))
    count = len(graph.tensors or [])
    action = rng.choice(["set", "set", "clear", "append", "dup"])
    if action == "set" and values:
        values[rng.randrange(len(values))] = _index_value(rng, count)
    elif action == "append":
        values.append(rng.randrange(max(count, 1)))
    elif action == "dup" and values:
        values.append(values[0])
    else:
        values = []
    setattr(graph, field, values)
    return f"graph {field} {action} -> {values}"


def edit_shape(model: schema.ModelT, rng: random.Random) -> str | None:
    picked = _pick_tensor(model, rng)
    if picked is None:
        return None
    index, tensor = picked
    shape = _as_list(tensor.shape)
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
    picked = _pick_tensor(model, rng)
    if picked is None:
        return None
    index, tensor = picked
    count = len(model.buffers or [])
    tensor.buffer = rng.choice([0, -1, count, count + 5, INT32_MAX, rng.randrange(max(count, 1))])
    return f"tensor {index} buffer -> {tensor.buffer}"


def edit_tensor_type(model: schema.ModelT, rng: random.Random) -> str | None:
    picked = _pick_tensor(model, rng)
    if picked is None:
        return None
    index, tensor = picked
    tensor.type = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 13, 14, 17, 23, 99, 127, -1])
    return f"tensor {index} type -> {tensor.type}"


def edit_quantization(model: schema.ModelT, rng: random.Random) -> str | None:
    candidates = [(i, t) for g in model.subgraphs for i, t in enumerate(g.tensors or []) if t.quantization is not None]
    if not candidates:
        return None
    index, tensor = rng.choice(candidates)
    q = tensor.quantization
    scale = [float(s) for s in (q.scale if q.scale is not None else [])]
    zero = _as_list(q.zeroPoint)
    action = rng.choice(["scale", "scale", "zero", "zero", "axis", "extend", "drop_zero", "none", "both"])
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


def edit_options(model: schema.ModelT, rng: random.Random) -> str | None:
    picked = _pick_op(model, rng)
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
    picked = _pick_op(model, rng)
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
    graph = _pick_graph(model, rng)
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
    graph = _pick_graph(model, rng)
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


TREE_MUTATIONS: list[Callable[[schema.ModelT, random.Random], str | None]] = [
    edit_op_index, edit_op_index, edit_graph_io, edit_shape, edit_shape, edit_tensor_buffer, edit_tensor_type,
    edit_quantization, edit_quantization, edit_options, edit_options, edit_subgraphs, edit_opcode_index,
    edit_operator_code, edit_operator_code, edit_buffers, edit_metadata, edit_tensors, edit_operators,
]


def tree_mutation(data: bytes, rng: random.Random) -> Mutant | None:
    model = parse(data)
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if not model.subgraphs:
            break
        edit = rng.choice(TREE_MUTATIONS)
        what = edit(model, rng)
        if what:
            done.append(f"{edit.__name__}: {what}")
    if not done:
        return None
    try:
        return Mutant(pack(model), "; ".join(done))
    except Exception:  # a value the flatbuffers builder cannot encode: not a model anyone can write
        return None


def mutate(data: bytes, rng: random.Random, ranges: list[tuple[int, int]] | None = None) -> Mutant:
    """One mutation of ``data``: 65% object-tree edits, 35% byte-level edits."""
    ranges = ranges if ranges is not None else structural_ranges(data)
    if rng.random() < 0.65:
        for _ in range(5):
            mutant = tree_mutation(data, rng)
            if mutant is not None:
                return mutant
    return rng.choice(BYTE_MUTATIONS)(data, rng, ranges)
