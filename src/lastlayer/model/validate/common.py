"""Constants and small helpers shared by the validator's modules."""

from __future__ import annotations

from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError

HINT = "re-export the model"
MAX_ELEMENTS = 2**31 - 1  # the runtime sizes tensors with int; more elements (or bytes) overflow
MAX_RANK = 16
MAX_WINDOW = 65535  # strides, dilations, pooling windows, block sizes
# Scales outside this range overflow the float32 products and quotients the kernels compute.
MIN_SCALE, MAX_SCALE = 1e-30, 1e16

T = schema.TensorType
# Bytes per element; sub-byte types may be stored packed or one value per byte.
ELEMENT_BYTES: dict[int, tuple[float, ...]] = {
    T.FLOAT32: (4,), T.FLOAT16: (2,), T.INT32: (4,), T.UINT8: (1,), T.INT64: (8,), T.BOOL: (1,),
    T.INT16: (2,), T.COMPLEX64: (8,), T.INT8: (1,), T.FLOAT64: (8,), T.COMPLEX128: (16,), T.UINT64: (8,),
    T.UINT32: (4,), T.UINT16: (2,), T.INT4: (0.5, 1), T.BFLOAT16: (2,), T.INT2: (0.25, 1), T.UINT4: (0.5, 1),
    T.FLOAT8_E4M3FN: (1,), T.FLOAT8_E5M2: (1,),
}
# Zero points must fit the stored integer type.
ZERO_POINT_RANGE: dict[int, tuple[int, int]] = {
    T.UINT8: (0, 255), T.INT8: (-128, 127), T.INT16: (-32768, 32767), T.UINT16: (0, 65535),
    T.INT4: (-8, 7), T.UINT4: (0, 15), T.INT2: (-2, 1), T.INT32: (-(2**31), 2**31 - 1), T.UINT32: (0, 2**32 - 1),
}
INT_INDEX_TYPES = (T.INT32, T.INT64)


def ints(values: Any) -> list[int]:
    """An index list (list, NumPy array or None) as Python ints."""
    if values is None:
        return []
    if isinstance(values, np.ndarray):
        return values.tolist() if values.dtype.kind in "iu" else values.astype(np.int64).tolist()
    return [int(v) for v in values]


def length(values: Any) -> int:
    return 0 if values is None else len(values)


class ModelContext:
    """What every rule reads (the model, its buffers and codes, the tensor shapes) and the one-line failure."""

    def __init__(self, model: schema.ModelT, source: str, file_size: int | None) -> None:
        self.model, self.source, self.file_size = model, source, file_size
        self.buffers = model.buffers or []
        self.codes = model.operatorCodes or []
        self.subgraphs = model.subgraphs or []
        self.sizes = [self.buffer_bytes(i) for i in range(len(self.buffers))] or [0]
        self.code_names: list[str] = []
        self.shapes: list[list[int]] = []  # declared, of the subgraph being checked, by tensor index
        self.derived: list[list[int]] = []  # as LiteRT will compute them (see shapes.py)

    def fail(self, where: str | tuple, problem: str) -> None:
        """Raise the one-line error; ``where`` may be a tuple of parts, joined only now (it is on the hot path)."""
        place = " ".join(str(part) for part in where) if isinstance(where, tuple) else where
        raise ModelError(f"{self.source} is not a valid TFLite model: {place}: {problem}; {HINT}")

    def buffer_bytes(self, index: int) -> int:
        if index >= len(self.buffers) or self.buffers[index] is None:
            return 0
        buffer = self.buffers[index]
        if buffer.data is not None and len(buffer.data):
            return len(buffer.data)
        return int(buffer.size or 0) if int(buffer.offset or 0) > 1 else 0

    def constant(self, index: int) -> np.ndarray | None:
        if index >= len(self.buffers) or self.buffers[index] is None:
            return None
        data = self.buffers[index].data
        return None if data is None or not len(data) else np.asarray(data, dtype=np.uint8)
