"""Quantization parameters of one tensor: scales, zero points, per-axis lengths."""

from __future__ import annotations

import math

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.names import TENSOR_TYPE_NAMES
from lastlayer.model.validate.common import MAX_SCALE, MIN_SCALE, ZERO_POINT_RANGE, ModelContext, length


class QuantizationChecks(ModelContext):
    """Mixed into the checker: each tensor's quantization parameters."""

    def check_quantization(self, where: str, tensor: schema.TensorT, kind: int, shape: list[int]) -> None:
        q = tensor.quantization
        if q is None:
            return
        count = length(q.scale)
        zero = q.zeroPoint
        if not count:
            if length(zero) and kind in ZERO_POINT_RANGE:
                self.fail(where, "zero points without scales")
            return
        if length(zero) != count:
            self.fail(where, f"{count} quantization scale(s) but {length(zero)} zero point(s)")
        limits = ZERO_POINT_RANGE.get(kind)
        if count == 1:  # per-tensor: plain floats, much faster than NumPy on one value
            scale = float(q.scale[0])
            if not (math.isfinite(scale) and scale > 0):
                self.fail(where, f"quantization scale {scale!r} (must be finite and positive)")
            if not MIN_SCALE <= scale <= MAX_SCALE:
                self.fail(where, f"quantization scale {scale:g} out of the usable range [{MIN_SCALE:g}, {MAX_SCALE:g}]")
            point = int(zero[0])
            if limits is not None and not limits[0] <= point <= limits[1]:
                self.fail(where, f"zero point {point} outside the {TENSOR_TYPE_NAMES[kind]} range [{limits[0]}, {limits[1]}]")
        else:
            with np.errstate(invalid="ignore"):  # a signalling NaN from the file would warn in the cast
                scales = np.asarray(q.scale, dtype=np.float64).reshape(-1)
            usable = (scales >= MIN_SCALE) & (scales <= MAX_SCALE)
            if not usable.all():
                bad = float(scales[~usable][0])
                self.fail(where, f"quantization scale {bad!r} (must be finite, positive and within [{MIN_SCALE:g}, {MAX_SCALE:g}])")
            points = np.asarray(zero, dtype=np.int64).reshape(-1)
            if limits is not None and (points.min() < limits[0] or points.max() > limits[1]):
                bad = int(points[(points < limits[0]) | (points > limits[1])][0])
                self.fail(where, f"zero point {bad} outside the {TENSOR_TYPE_NAMES[kind]} range [{limits[0]}, {limits[1]}]")
        axis = int(q.quantizedDimension)
        if axis < 0 or axis >= max(len(shape), 1):
            self.fail(where, f"quantized dimension {axis} out of range for shape {shape}")
        if count > 1 and (not shape or shape[axis] != count):
            self.fail(where, f"{count} per-axis scales do not match dimension {axis} of shape {shape}")

