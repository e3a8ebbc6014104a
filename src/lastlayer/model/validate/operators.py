"""One operator: indices, arity, options and the constant inputs that set axes, paddings and shapes."""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.names import TENSOR_TYPE_NAMES, as_text, builtin_code, tensor_type_name
from lastlayer.model.validate.common import INT_INDEX_TYPES, MAX_ELEMENTS, MAX_RANK, MAX_WINDOW, T, ints
from lastlayer.model.validate.control_flow import ControlFlowChecks
from lastlayer.model.validate.signatures import (
    CUSTOM_ARITY,
    NATIVE_CUSTOM_OPERATORS,
    OPERATOR_ARITY,
    Arity,
    type_mismatch,
)
from lastlayer.model.validate.tables import (
    ACTIVATIONS,
    CUSTOM_OPTIONS,
    INTEGER_INPUTS,
    OPERAND_RANKS,
    OPERATOR_OPTIONS,
    OPTIONS_NAMES,
    PADDINGS,
    POSITIVE_OPTIONS,
    count_text,
)


class OperatorChecks(ControlFlowChecks):
    """Mixed into the checker: everything about one operator."""

    def check_operator(self, where: tuple, op: schema.OperatorT, tensors: Sequence[schema.TensorT]) -> tuple[str, list[int], list[int]]:
        """Indices, arity, options, operand ranks and types of one operator; returns (name, inputs (-1: omitted), outputs)."""
        count = len(tensors)
        code_index = int(op.opcodeIndex)
        if not 0 <= code_index < len(self.codes):
            self.fail(where, f"operator code index {code_index} out of range (model has {len(self.codes)} operator codes)")
        name = self.code_names[code_index]
        where = (*where, f"({name})")
        custom = builtin_code(self.codes[code_index]) == schema.BuiltinOperator.CUSTOM
        ins, outs = ints(op.inputs), ints(op.outputs)
        arity = self.operator_arity(where, name, custom)
        if custom and name in CUSTOM_OPTIONS:
            self.check_custom_options(where, name, op)
        # Custom operators run by the Edge TPU delegate (or by none): any input may be an omitted optional one.
        optional = arity.optional if arity is not None else frozenset(range(len(ins)))
        for position, tid in enumerate(ins):
            if tid == -1 and position in optional:
                continue
            if not 0 <= tid < count:
                what = "a required input is missing (-1)" if tid == -1 else f"input tensor index {tid} out of range ({count} tensors)"
                self.fail(where, what)
        for tid in outs:
            if not 0 <= tid < count:
                self.fail(where, f"output tensor index {tid} out of range ({count} tensors)")

        for tid in ints(op.intermediates):
            if not 0 <= tid < count:
                self.fail(where, f"intermediate tensor index {tid} out of range ({count} tensors)")
        for tid in ints(op.mutatingVariableInputs):
            if tid not in (0, 1):
                self.fail(where, "invalid mutating-variable-inputs flags")
        if op.largeCustomOptionsSize and self.file_size is not None and \
                int(op.largeCustomOptionsOffset) + int(op.largeCustomOptionsSize) > self.file_size:
            self.fail(where, "its custom options lie past the end of the file")
        if arity is not None:
            low, high = arity.inputs
            if not low <= len(ins) <= high:
                self.fail(where, f"{len(ins)} inputs, expected {count_text(low, high)}")
            low, high = arity.outputs
            if not low <= len(outs) <= high:
                self.fail(where, f"{len(outs)} outputs, expected {count_text(low, high)}")
            self.check_types(where, name, ins, outs, tensors)
        if not custom:
            self.check_options(where, name, op)
            self.check_operands(where, name, ins, tensors)
        return name, ins, outs

    def operator_arity(self, where: tuple, name: str, custom: bool) -> Arity | None:
        """The arity of a known operator (``None``: a custom one LiteRT has no kernel for); an unknown builtin is refused."""
        if custom:
            if name in NATIVE_CUSTOM_OPERATORS:
                self.fail(where, f"custom operator {name} is not one lastlayer runs (it runs image classifiers and extractors)")
            return CUSTOM_ARITY.get(name)
        arity = OPERATOR_ARITY.get(name)
        if arity is None:
            self.refuse_operator(where, name)
        return arity

    def check_types(self, where: tuple, name: str, ins: list[int], outs: list[int], tensors: Sequence[schema.TensorT]) -> None:
        """The operand types must fit one of the operator's signatures (LiteRT's kernels trust them)."""
        in_types = tuple(None if tid < 0 else int(tensors[tid].type) for tid in ins)
        out_types = tuple(int(tensors[tid].type) for tid in outs)
        blame = type_mismatch(name, in_types, out_types)
        if blame is None:
            return
        role, position, allowed = blame
        ids = ins if role == "input" else outs
        if position >= len(ids):
            self.fail(where, f"its operand types fit none of its signatures ({allowed})")
        tid = ids[position]
        kind = "omitted" if tid < 0 else tensor_type_name(tensors[tid].type)
        tensor = "" if tid < 0 else f" (tensor {tid} {as_text(tensors[tid].name)!r})"
        self.fail(where, f"{role} {position}{tensor} is {kind}; {name} accepts {allowed} there")

    def custom_options(self, op: schema.OperatorT) -> dict | None:
        """The FlexBuffer map of a custom operator's options, or ``None``."""
        from flatbuffers import flexbuffers

        raw = op.customOptions
        if raw is None or not len(raw) or int(op.customOptionsFormat) != 0:
            return None
        try:
            options = flexbuffers.Loads(np.asarray(raw, dtype=np.uint8).tobytes())
        except Exception:  # any malformed FlexBuffer
            return None
        return options if isinstance(options, dict) else None

    def check_custom_options(self, where: tuple, name: str, op: schema.OperatorT) -> None:
        raw = op.customOptions
        if raw is None or not len(raw) or int(op.customOptionsFormat) != 0:
            self.fail(where, "its custom options are missing")
        options = self.custom_options(op)
        if options is None:
            self.fail(where, "its custom options are not a valid FlexBuffer map")
        for key, kind in CUSTOM_OPTIONS[name].items():
            value = options.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                self.fail(where, f"custom option {key!r} is missing or not a number")
            if (kind == "count" and not (isinstance(value, int) and 0 < value <= MAX_ELEMENTS)) or (kind == "scale" and value <= 0):
                self.fail(where, f"custom option {key} = {value!r}")

    def check_options(self, where: tuple, name: str, op: schema.OperatorT) -> None:
        expected = OPERATOR_OPTIONS.get(name)
        kind = int(op.builtinOptionsType)
        options = op.builtinOptions
        if kind not in OPTIONS_NAMES:
            self.fail(where, f"unknown options type {kind}")
        if expected is not None:
            wanted, required = expected
            if options is None or kind == 0:
                if required:
                    self.fail(where, f"its {wanted} are missing")
            elif OPTIONS_NAMES[kind] != wanted:
                self.fail(where, f"carries {OPTIONS_NAMES[kind]} instead of {wanted}")
        elif kind != 0 and options is not None:
            self.fail(where, f"carries {OPTIONS_NAMES[kind]} but {name} takes no options")
        if options is None:
            return
        positive, padding, activation, counts = _options_plan(type(options))
        for field in positive:
            value = int(getattr(options, field))
            if not 1 <= value <= MAX_WINDOW:
                self.fail(where, f"option {field} = {value} (must be 1 to {MAX_WINDOW})")
        if padding and int(options.padding) not in PADDINGS:
            self.fail(where, f"unknown padding {int(options.padding)}")
        if activation and int(options.fusedActivationFunction) not in ACTIVATIONS:
            self.fail(where, f"unknown fused activation {int(options.fusedActivationFunction)}")
        for field in counts:
            if not 0 <= int(getattr(options, field)) <= MAX_ELEMENTS:
                self.fail(where, f"option {field} = {int(getattr(options, field))}")
        if name == "RESHAPE" and getattr(options, "newShape", None) is not None:
            new_shape = ints(options.newShape)
            if len(new_shape) > MAX_RANK or any(d < -1 for d in new_shape) or new_shape.count(-1) > 1:
                self.fail(where, f"invalid new shape {new_shape}")
        if name == "FAKE_QUANT":
            low, high, bits = float(options.min), float(options.max), int(options.numBits)
            if not (math.isfinite(low) and math.isfinite(high) and low < high and 2 <= bits <= 16):
                self.fail(where, f"fake-quant range [{low}, {high}] with {bits} bits")
        if name in ("SOFTMAX", "LOG_SOFTMAX") and hasattr(options, "beta") and not math.isfinite(float(options.beta)):
            self.fail(where, f"softmax beta {float(options.beta)}")

    def check_operands(self, where: str, name: str, ins: list[int], tensors: Sequence[schema.TensorT]) -> None:
        shapes = self.shapes

        def shape_of(position: int) -> list[int] | None:
            if position >= len(ins) or ins[position] < 0:
                return None
            return shapes[ins[position]]

        for position, (low, high) in OPERAND_RANKS.get(name, {}).items():
            shape = shape_of(position)
            if shape is not None and not low <= len(shape) <= high:
                wanted = f"rank {low}" if low == high else f"rank {low} to {high}"
                self.fail(where, f"input {position} has shape {shape}; {name} needs {wanted}")
        for position in INTEGER_INPUTS.get(name, ()):
            if position < len(ins) and ins[position] >= 0:
                tensor = tensors[ins[position]]
                if self.buffer_bytes(int(tensor.buffer)) and int(tensor.type) not in INT_INDEX_TYPES:
                    self.fail(where, f"input {position} is a {TENSOR_TYPE_NAMES[int(tensor.type)]} constant; {name} needs INT32 or INT64")

    def int_constant(self, tensor: schema.TensorT) -> np.ndarray | None:
        data = self.constant(int(tensor.buffer))
        if data is None or int(tensor.type) not in INT_INDEX_TYPES:
            return None
        return np.frombuffer(data.tobytes(), dtype="<i4" if int(tensor.type) == T.INT32 else "<i8")


@functools.cache
def _options_plan(options_class: type) -> tuple[tuple[str, ...], bool, bool, tuple[str, ...]]:
    """Which checked fields an options class has: (positive fields, padding, fused activation, counts)."""
    fields = vars(options_class())
    return (tuple(f for f in POSITIVE_OPTIONS if f in fields), "padding" in fields, "fusedActivationFunction" in fields,
            tuple(f for f in ("depthMultiplier", "num", "valuesCount") if f in fields))

