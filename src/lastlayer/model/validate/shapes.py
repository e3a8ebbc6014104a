"""Declared shapes against what the operators compute: LiteRT and XNNPACK allocate from the declared ones.

An intermediate tensor declared with a batch of 131,071 instead of 1 made XNNPACK allocate 6 GB and
exit 0. Walking the operators in order, each output's shape is re-derived from its operator's inputs
(:mod:`~lastlayer.model.validate.shape_rules`), as LiteRT re-derives it when it prepares the model;
the declared shape must have the same rank and the same number of elements (what buffers are
allocated from), and the derived shapes are what later operators, and the memory bound, see. Small
integer tensors computed from shapes (Keras' ``SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE``) are
followed too; a shape that depends on values only known at run time is left as declared when the
operator cannot grow its input (a RESHAPE, a SLICE), and refused when it could (TILE, FILL, RESIZE,
PAD ...).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.names import as_text
from lastlayer.model.validate.common import INT_INDEX_TYPES, MAX_RANK, ModelContext
from lastlayer.model.validate.shape_rules import SHAPE_RULES, Operands, Shape
from lastlayer.model.validate.tables import OPERATOR_OPTIONS

_MAX_CHECKED_VALUES = 4096  # constant index inputs up to this size are read for range checks


@functools.cache
def _default_options(name: str) -> Any:
    """The options a missing table stands for (LiteRT zero-fills them, as the generated classes do)."""
    entry = OPERATOR_OPTIONS.get(name)
    return getattr(schema, f"{entry[0]}T")() if entry else None


def small_values(name: str, ops: Operands) -> list[int] | None:
    """The values of a small integer output computed from known values (shape arithmetic, as in Keras
    models with a dynamic batch: SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE), or ``None``."""
    if name == "SHAPE":
        return list(ops.shape(0))
    if name in ("CAST", "RESHAPE", "SQUEEZE", "EXPAND_DIMS"):
        return ops.values(0)
    if name in ("PACK", "CONCATENATION"):
        parts = [ops.values(i) for i in range(ops.inputs)]
        return None if any(p is None for p in parts) else [v for p in parts for v in p]
    if name in ("STRIDED_SLICE", "SLICE", "GATHER"):
        source = ops.values(0)
        if source is None or len(ops.shape(0)) != 1:
            return None
        if name == "GATHER":
            indices = ops.values(1)
            return None if indices is None else [source[i] for i in indices]
        begin, other = ops.values(1), ops.values(2)
        if begin is None or other is None:
            return None
        if name == "SLICE":
            return source[begin[0]:] if other[0] == -1 else source[begin[0]:begin[0] + other[0]]
        strides, o = ops.values(3), ops.options
        if strides is None or getattr(o, "ellipsisMask", 0) or getattr(o, "newAxisMask", 0) or getattr(o, "offset", False):
            return None
        size = len(source)
        start = None if o.beginMask & 1 else begin[0]
        stop = None if o.endMask & 1 else other[0]
        if o.shrinkAxisMask & 1:
            return [source[begin[0] % size]] if -size <= begin[0] < size else None
        return source[start:stop:strides[0]] if strides[0] else None
    return None


class _Operands:
    """One operator as its shape rule sees it."""

    def __init__(self, checker: ShapeChecks, where: tuple, name: str, options: Any, ins: list[int], outs: list[int],
                 tensors: Sequence[schema.TensorT], known: dict[int, list[int]]) -> None:
        self.checker, self.where, self.name, self.options = checker, where, name, options
        self.ins, self.tensors, self.known = ins, tensors, known
        self.inputs, self.outputs = len(ins), len(outs)

    def shape(self, position: int) -> Shape | None:
        tid = self.ins[position] if position < len(self.ins) else -1
        return None if tid < 0 else self.checker.derived[tid]

    def values(self, position: int) -> list[int] | None:
        tid = self.ins[position] if position < len(self.ins) else -1
        if tid < 0:
            return None
        if tid not in self.known:
            tensor = self.tensors[tid]
            found = None
            if int(tensor.type) in INT_INDEX_TYPES and self.checker.sizes[int(tensor.buffer)] <= 8 * _MAX_CHECKED_VALUES:
                array = self.checker.int_constant(tensor)
                found = None if array is None else array.tolist()
            self.known[tid] = found
        return self.known[tid]

    def fail(self, problem: str) -> None:
        self.checker.fail(self.where, problem)


class ShapeChecks(ModelContext):
    """Mixed into the checker: each operator's outputs have the size and rank of the shapes it computes."""

    def check_shapes(self, where: tuple, name: str, options: Any, ins: list[int], outs: list[int],
                     tensors: Sequence[schema.TensorT], known: dict[int, list[int] | None]) -> None:
        rule = SHAPE_RULES.get(name)
        if rule is None:
            return
        operands = _Operands(self, where, name, options if options is not None else _default_options(name), ins, outs, tensors, known)
        expected = rule(operands)
        for position, tid in enumerate(outs):
            shape = expected[position] if position < len(expected) else None
            if shape is None:
                continue
            declared = self.shapes[tid]
            if declared != shape and (len(declared) != len(shape) or math.prod(declared) != math.prod(shape)):
                self.fail(where, f"output {position} (tensor {tid} {as_text(tensors[tid].name)!r}) is declared {declared} "
                                 f"but {name} computes {shape} from its inputs")
            self.derived[tid] = shape
        if len(outs) == 1 and int(tensors[outs[0]].type) in INT_INDEX_TYPES and len(self.derived[outs[0]]) <= 1:
            values = small_values(name, operands)
            if values is not None and len(values) <= MAX_RANK and len(values) == (self.derived[outs[0]] or [1])[0]:
                known[outs[0]] = values
