"""Quantization arithmetic, bit-compatible with libcoral's (float32 throughout, round half away from 0).

Pure NumPy: used by the model writers and by the learners that emulate what a saved quantized
file computes.
"""

from __future__ import annotations

import numpy as np

_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def _round_half_away(values: np.ndarray) -> np.ndarray:
    """C ``std::round``: ties go away from zero (NumPy's ``round`` goes to even)."""
    return np.sign(values) * np.floor(np.abs(values) + np.float32(0.5))


def quantization_params(f_min: float, f_max: float, dtype: type = np.uint8) -> tuple[float, int]:
    """Scale and zero point mapping ``[f_min, f_max]`` onto the integer range of ``dtype``.

    Port of the TFLite test-util algorithm libcoral uses, in float32: the range must contain 0
    (widen it first); the zero point is picked from the end with the smaller error and clamped.
    A zero-width range gives ``(0.0, 0)`` in libcoral; here it gives scale 1 so a model stays valid.
    """
    qmin, qmax = _RANGES[np.dtype(dtype)]
    f_min, f_max = np.float32(f_min), np.float32(f_max)
    if not f_min <= 0 <= f_max:
        raise ValueError(f"quantization range [{f_min}, {f_max}] must contain 0")
    if f_min == f_max:
        return 1.0, int(qmin if qmin == 0 else 0)
    scale = (f_max - f_min) / np.float32(qmax - qmin)
    zero_from_min = np.float32(qmin) - f_min / scale
    zero_from_max = np.float32(qmax) - f_max / scale
    error_min = np.float32(abs(qmin)) + abs(f_min / scale)
    error_max = np.float32(abs(qmax)) + abs(f_max / scale)
    zero = zero_from_min if error_min < error_max else zero_from_max
    if zero < qmin:
        zero_point = qmin
    elif zero > qmax:
        zero_point = qmax
    else:
        zero_point = int(_round_half_away(np.float32(zero)))
    return float(scale), int(zero_point)


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype: type = np.uint8) -> np.ndarray:
    """``clamp(round(z + x / s))`` into ``dtype`` (uint8, int8 or int32), computed in float32."""
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    scaled = np.float32(zero_point) + np.asarray(values, dtype=np.float32) / np.float32(scale)
    rounded = _round_half_away(scaled.astype(np.float64))
    return np.clip(rounded, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``s * (q - z)`` as float32."""
    return (np.float32(scale) * (np.asarray(values, dtype=np.float32) - np.float32(zero_point))).astype(np.float32)


def range_quantization(f_min: float, f_max: float, dtype: type = np.uint8) -> tuple[float, int]:
    """:func:`quantization_params` of the range widened to contain 0 (how every head layer is quantized)."""
    return quantization_params(min(0.0, float(f_min)), max(0.0, float(f_max)), dtype)


def fake_quantize(values: np.ndarray, scale: float, zero_point: int, dtype: type = np.uint8) -> np.ndarray:
    """The float values a quantized tensor really holds: ``dequantize(quantize(x))``."""
    return dequantize(quantize(values, scale, zero_point, dtype), scale, zero_point)


# Softmax outputs in TFLite's quantized kernels: scale 1/256, zero point at the type's minimum.
SOFTMAX_QUANTIZATION = {np.dtype(np.uint8): (1.0 / 256.0, 0), np.dtype(np.int8): (1.0 / 256.0, -128)}
