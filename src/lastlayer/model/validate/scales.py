"""What the quantized kernels need of their operands' quantization: parameters, and scales that fit together.

Every UINT8/INT8/INT16 operand of a quantized kernel needs parameters: ADD's Prepare divides by the
scales and aborts the process (``QuantizeMultiplierSmallerThanOneExp`` checks) on a missing one.
Activations have one scale (per-axis scales are for weights): the kernels read one. And the scale
ratios the kernels turn into fixed-point multipliers must stay in the range the kernels accept:

- ADD / SUB: ``max(input scales) / output scale`` below 2^19 for 8 bits (2^14 for 16 bits), or
  LiteRT aborts; lastlayer allows up to 2^16 (2^12).
- MUL, BATCH_MATMUL: ``input1 * input2 / output`` at most 2^16; CONV_2D, DEPTHWISE_CONV_2D,
  TRANSPOSE_CONV, FULLY_CONNECTED: ``input * weights / output`` at most 2^12 (XNNPACK takes up to 2^8;
  real models stay near or below 1).
- SQUARED_DIFFERENCE: ``max(input)^2 / output`` at most 2^10 (the kernel needs below 2^12).
- HARD_SWISH: ``input / output`` at most 2^6 (the kernel needs below 2^7).
- SOFTMAX, LOGISTIC, TANH, L2_NORMALIZATION, LOG_SOFTMAX: the fixed output parameters the kernels
  require (e.g. scale 1/256, zero point 0 for a UINT8 SOFTMAX).
- every other operator with quantized input and output (pooling, concatenation, padding, reshapes,
  reductions, requantization...): each ``input / output`` scale ratio from 2^-16 to 2^16 (2^-24 for
  reductions, whose output may sum many inputs).

Real models sit far inside these bounds (ratios near 1); the bounds only keep out what the kernels
cannot compute with.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.names import as_text, tensor_type_name
from lastlayer.model.validate.common import ModelContext, T, length
from lastlayer.model.validate.signatures import QUANTIZED

PAIR = (2.0**-16, 2.0**16)
REDUCTION = (2.0**-24, 2.0**16)
#: Operand positions whose quantized types hold plain integers (no parameters needed).
RAW_INTEGERS: dict[str, frozenset[tuple[str, int]]] = {
    "CAST": frozenset({("input", 0), ("output", 0)}),
    "SHAPE": frozenset({("input", 0)}),
}
#: Inputs that may be quantized per axis: weights (and the weights a DEQUANTIZE turns back into floats).
PER_AXIS_INPUTS: dict[str, frozenset[int]] = {
    "CONV_2D": frozenset({1}), "DEPTHWISE_CONV_2D": frozenset({1}), "FULLY_CONNECTED": frozenset({1}),
    "TRANSPOSE_CONV": frozenset({1}), "BATCH_MATMUL": frozenset({1}), "DEQUANTIZE": frozenset({0}),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": frozenset(range(1, 17)),
}
#: Output (scale, zero point) the kernels require, by operator and output type.
FIXED_OUTPUTS: dict[str, dict[int, tuple[float, int]]] = {
    "SOFTMAX": {T.UINT8: (1 / 256, 0), T.INT8: (1 / 256, -128), T.INT16: (1 / 32768, 0)},
    "LOGISTIC": {T.UINT8: (1 / 256, 0), T.INT8: (1 / 256, -128)},
    "TANH": {T.UINT8: (1 / 128, 128), T.INT8: (1 / 128, 0)},
    "L2_NORMALIZATION": {T.UINT8: (1 / 128, 128), T.INT8: (1 / 128, 0)},
    "LOG_SOFTMAX": {T.UINT8: (16 / 256, 255), T.INT8: (16 / 256, 127)},
}
_NO_RELATION = {"QUANTIZE", "DEQUANTIZE", "CAST", "ARG_MAX", "ARG_MIN", "SHAPE", "TFLite_Detection_PostProcess",
                "UNIDIRECTIONAL_SEQUENCE_LSTM"}
_PRODUCTS = {"CONV_2D": (0, 1, 2.0**12), "DEPTHWISE_CONV_2D": (0, 1, 2.0**12), "FULLY_CONNECTED": (0, 1, 2.0**12),
             "TRANSPOSE_CONV": (2, 1, 2.0**12), "MUL": (0, 1, 2.0**16), "BATCH_MATMUL": (0, 1, 2.0**16)}
_REDUCTIONS = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"}


class ScaleChecks(ModelContext):
    """Mixed into the checker: quantization parameters per operand, and the scale relations of each operator."""

    def check_operator_scales(self, where: tuple, name: str, ins: list[int], outs: list[int],
                              tensors: Sequence[schema.TensorT]) -> None:
        raw = RAW_INTEGERS.get(name, frozenset())
        per_axis = PER_AXIS_INPUTS.get(name, frozenset())
        quantized = False
        for role, ids in (("input", ins), ("output", outs)):
            for position, tid in enumerate(ids):
                if tid < 0 or int(tensors[tid].type) not in QUANTIZED or (role, position) in raw:
                    continue
                quantized = True
                q = tensors[tid].quantization
                count = length(q.scale) if q is not None else 0
                if not count:
                    self.fail(where, f"{self.operand(role, position, tid, tensors)} is {tensor_type_name(tensors[tid].type)} "
                                     f"without quantization parameters; {name}'s quantized kernel needs its scale")
                if count > 1 and not (role == "input" and position in per_axis):
                    self.fail(where, f"{self.operand(role, position, tid, tensors)} has {count} per-axis scales; "
                                     f"{name} reads one scale there (only weights are quantized per axis)")
        if quantized and name not in _NO_RELATION and outs and int(tensors[outs[0]].type) in QUANTIZED:
            self.check_relations(where, name, ins, outs, tensors)

    def operand(self, role: str, position: int, tid: int, tensors: Sequence[schema.TensorT]) -> str:
        return f"{role} {position} (tensor {tid} {as_text(tensors[tid].name)!r})"

    def check_relations(self, where: tuple, name: str, ins: list[int], outs: list[int], tensors: Sequence[schema.TensorT]) -> None:
        out = outs[0]
        out_q = tensors[out].quantization
        out_scale, out_zero = float(out_q.scale[0]), int(out_q.zeroPoint[0]) if length(out_q.zeroPoint) else 0
        kind = int(tensors[out].type)

        def scale(tid: int) -> float:  # the largest, for per-axis weights
            scales = tensors[tid].quantization.scale
            return float(scales[0]) if len(scales) == 1 else float(np.max(scales))

        def quantized(tid: int) -> bool:
            return tid >= 0 and int(tensors[tid].type) in QUANTIZED and tensors[tid].quantization is not None

        def bound(value: float, low: float, high: float, what: str) -> None:
            if not low <= value <= high:
                self.fail(where, f"the scales of its operands do not fit its quantized kernel: {what} = {value:.3g} "
                                 f"(must be {low:.3g} to {high:.3g}); re-quantize the model")

        fixed = FIXED_OUTPUTS.get(name, {}).get(kind)
        if fixed is not None:
            if abs(out_scale - fixed[0]) > 1e-3 * fixed[0] or out_zero != fixed[1]:
                self.fail(where, f"{self.operand('output', 0, out, tensors)} has scale {out_scale:.6g} and zero point {out_zero}; "
                                 f"a {tensor_type_name(kind)} {name} output has scale {fixed[0]:.6g} and zero point {fixed[1]}")
            return
        if name in ("ADD", "SUB"):
            high = 2.0**12 if kind == T.INT16 else 2.0**16
            bound(max(scale(ins[0]), scale(ins[1])) / out_scale, 0.0, high, "max(input scales) / output scale")
            return
        if name in _PRODUCTS:
            data, weights, high = _PRODUCTS[name]
            if quantized(ins[data]) and quantized(ins[weights]):
                bound(scale(ins[data]) * scale(ins[weights]) / out_scale, 0.0, high, "input scale * weight scale / output scale")
            return
        if name == "SQUARED_DIFFERENCE":
            bound(max(scale(ins[0]), scale(ins[1])) ** 2 / out_scale, 0.0, 2.0**10, "max(input scales)^2 / output scale")
            return
        if name == "DIV":
            bound(scale(ins[0]) / (scale(ins[1]) * out_scale), 2.0**-32, 2.0**16, "input scale / (divisor scale * output scale)")
            return
        low, high = REDUCTION if name in _REDUCTIONS else PAIR
        if name == "HARD_SWISH":
            high = 2.0**6
        for position, tid in enumerate(ins):
            if quantized(tid) and not (name == "PRELU" and position == 1):
                bound(scale(tid) / out_scale, low, high, f"input {position} scale / output scale")

