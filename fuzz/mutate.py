"""Seeded mutations of real ``.tflite`` models: raw byte edits and edits through the object tree.

Every mutation is a pure function of ``(base model bytes, random.Random)``, so a case is replayed
exactly from its seed and number (see ``fuzz/run.py --only``). Byte edits aim at the flatbuffer's
structure (tables, vectors of indices), not at the megabytes of weights, where a flip is harmless.
Tree edits change indices, shapes, buffers, options and subgraphs, and also what crashed native
code in issue 26: tensor types (every ``TensorType``), operator codes (every builtin, on one operator
or a shared code), quantization removed or rescaled, huge dimensions on inputs and intermediates
(alone, or re-derived through the whole graph so the model stays consistent), an operator reading a
constant of another type, and loops (WHILE / IF around the graph).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from fuzz.semantic_edits import (
    edit_big_dims,
    edit_input_to_constant,
    edit_loop,
    edit_quantization,
    edit_same_size_shape,
    edit_single_op_code,
    edit_tensor_type,
    wrap_in_loop,
)
from fuzz.structural_edits import (
    edit_buffers,
    edit_graph_io,
    edit_metadata,
    edit_op_index,
    edit_opcode_index,
    edit_operator_code,
    edit_operators,
    edit_options,
    edit_shape,
    edit_subgraphs,
    edit_tensor_buffer,
    edit_tensors,
)

TFL3 = b"TFL3"


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
__all__ = ["Mutant", "mutate", "pack", "parse", "structural_ranges", "wrap_in_loop"]
TREE_MUTATIONS: list[Callable[[schema.ModelT, random.Random], str | None]] = [
    edit_op_index, edit_op_index, edit_graph_io, edit_shape, edit_shape, edit_tensor_buffer, edit_tensor_type,
    edit_tensor_type, edit_quantization, edit_quantization, edit_quantization, edit_options, edit_options, edit_subgraphs,
    edit_opcode_index, edit_operator_code, edit_operator_code, edit_single_op_code, edit_buffers, edit_metadata,
    edit_tensors, edit_operators, edit_big_dims, edit_big_dims, edit_same_size_shape, edit_input_to_constant, edit_loop,
]


def tree_mutation(data: bytes, rng: random.Random) -> Mutant | None:
    model = parse(data)
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if not model.subgraphs:
            break
        edit = rng.choice(TREE_MUTATIONS)
        try:
            what = edit(model, rng)
        except (ValueError, TypeError, IndexError, OverflowError):  # an earlier edit left what this one cannot edit
            break
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
