"""The output shapes each operator computes from its input shapes, options and constant inputs (NHWC, as LiteRT).

A rule takes an :class:`Operands` view and returns one shape per output, ``None`` for a shape it
cannot know before running (it depends on values computed at run time, bounded by the input's size),
or raises through :meth:`Operands.fail` for inputs the kernel cannot take (shapes that do not
broadcast, axes out of range, negative paddings, a kernel larger than its input ...).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol

from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.validate.common import MAX_ELEMENTS, MAX_RANK, MAX_WINDOW

Shape = list[int]
Shapes = list["Shape | None"]


class Operands(Protocol):
    """What a rule reads of one operator."""

    name: str
    options: Any
    inputs: int
    outputs: int

    def shape(self, position: int) -> Shape | None: ...  # None: an omitted optional input
    def values(self, position: int) -> list[int] | None: ...  # an integer input's values, if known before running
    def fail(self, problem: str) -> None: ...


def _same(ops: Operands) -> Shapes:
    return [ops.shape(0)]


def broadcast(ops: Operands, a: Shape, b: Shape) -> Shape:
    if a == b:
        return list(a)
    if max(len(a), len(b)) > 4:
        ops.fail(f"broadcasts shapes {a} and {b}; {ops.name} broadcasts ranks up to 4")
    rank = max(len(a), len(b))
    a, b = [1] * (rank - len(a)) + list(a), [1] * (rank - len(b)) + list(b)
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        ops.fail(f"inputs of shapes {a} and {b} do not broadcast")
    return [x if y == 1 else y for x, y in zip(a, b)]


def _binary(ops: Operands) -> Shapes:
    return [broadcast(ops, ops.shape(0), ops.shape(1))]


def _axis(ops: Operands, axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1):
        ops.fail(f"{what} {axis} is out of range for a rank-{rank} input")
    return axis % max(rank, 1)


def _window(ops: Operands, size: int, kernel: int, stride: int, dilation: int, padding: int) -> int:
    effective = (kernel - 1) * dilation + 1
    if padding == schema.Padding.SAME:
        return -(-size // stride)
    out = -(-(size - effective + 1) // stride)
    if out < 1:
        ops.fail(f"its {kernel}x window (dilation {dilation}) is larger than the input's {size} without padding")
    return out


def _spatial(ops: Operands, shape: Shape, kh: int, kw: int) -> tuple[int, int]:
    o = ops.options
    dh, dw = getattr(o, "dilationHFactor", 1) or 1, getattr(o, "dilationWFactor", 1) or 1
    return (_window(ops, shape[1], kh, o.strideH, dh, o.padding), _window(ops, shape[2], kw, o.strideW, dw, o.padding))


def _bias(ops: Operands, position: int, units: int) -> None:
    bias = ops.shape(position)
    if bias is not None and math.prod(bias) != units:
        ops.fail(f"its bias of shape {bias} does not hold one value for each of its {units} outputs")


def _conv(ops: Operands) -> Shapes:
    x, w = ops.shape(0), ops.shape(1)
    if w[3] < 1 or x[3] % w[3] or w[0] % (x[3] // w[3]):
        ops.fail(f"input of shape {x} and filter of shape {w} do not match (input channels / filter channels)")
    _bias(ops, 2, w[0])
    return [[x[0], *_spatial(ops, x, w[1], w[2]), w[0]]]


def _depthwise(ops: Operands) -> Shapes:
    x, w = ops.shape(0), ops.shape(1)
    if w[0] != 1 or x[3] < 1 or w[3] % x[3]:
        ops.fail(f"filter of shape {w} does not fit an input of {x[3]} channels (needs [1, h, w, a multiple of it])")
    _bias(ops, 2, w[3])
    return [[x[0], *_spatial(ops, x, w[1], w[2]), w[3]]]


def _transpose_conv(ops: Operands) -> Shapes:
    out, w, x = ops.values(0), ops.shape(1), ops.shape(2)
    if out is None:
        ops.fail("its output shape is computed at run time; lastlayer needs it constant")
    if len(out) != 4 or out[0] != x[0] or out[3] != w[0] or w[3] != x[3] or min(out) < 1:
        ops.fail(f"output shape {out} does not fit input {x} and filter {w}")
    o = ops.options
    for size, kernel, stride, given in ((out[1], w[1], o.strideH, x[1]), (out[2], w[2], o.strideW, x[2])):
        if size > MAX_WINDOW or (size - kernel + 1 < 1 and o.padding != schema.Padding.SAME) or \
                _window(ops, size, kernel, stride, 1, o.padding) != given:
            ops.fail(f"output shape {out} does not give back its input {x} with stride {stride} and a {kernel}x filter")
    _bias(ops, 3, w[0])
    return [list(out)]


def _fully_connected(ops: Operands) -> Shapes:
    x, w = ops.shape(0), ops.shape(1)
    size = w[1]
    if size < 1 or math.prod(x) % size:
        ops.fail(f"input of shape {x} does not split into rows of the weights' {size} values")
    _bias(ops, 2, w[0])
    if getattr(ops.options, "keepNumDims", False):
        if x[-1] != size:
            ops.fail(f"input of shape {x} does not end in the weights' {size} values")
        return [[*x[:-1], w[0]]]
    return [[math.prod(x) // size, w[0]]]


def _batch_matmul(ops: Operands) -> Shapes:
    a, b = ops.shape(0), ops.shape(1)
    if len(a) < 2 or len(b) < 2:
        ops.fail(f"inputs of shapes {a} and {b} are not matrices")
    m, k = (a[-1], a[-2]) if getattr(ops.options, "adjX", False) else (a[-2], a[-1])
    k2, n = (b[-1], b[-2]) if getattr(ops.options, "adjY", False) else (b[-2], b[-1])
    if k != k2:
        ops.fail(f"inputs of shapes {a} and {b} do not multiply ({k} against {k2})")
    return [[*broadcast(ops, a[:-2], b[:-2]), m, n]]


def _pool(ops: Operands) -> Shapes:
    x = ops.shape(0)
    return [[x[0], *_spatial(ops, x, ops.options.filterHeight, ops.options.filterWidth), x[3]]]


def _reduce(ops: Operands) -> Shapes:
    x, axes = ops.shape(0), ops.values(1)
    if axes is None:
        return [None]
    if any(not -len(x) <= a < max(len(x), 1) for a in axes):
        ops.fail(f"reduces axes {axes} of a rank-{len(x)} input")
    gone = {a % max(len(x), 1) for a in axes}
    if getattr(ops.options, "keepDims", False):
        return [[1 if i in gone else d for i, d in enumerate(x)]]
    return [[d for i, d in enumerate(x) if i not in gone]]


def _arg(ops: Operands) -> Shapes:
    x, axis = ops.shape(0), ops.values(1)
    if axis is None:
        return [None]
    if len(axis) != 1:
        ops.fail(f"takes one axis, got {axis}")
    gone = _axis(ops, axis[0], len(x))
    return [[d for i, d in enumerate(x) if i != gone]]


def resolve(ops: Operands, source: Shape, dims: list[int]) -> Shape:
    """``dims`` (one of them may be -1) holding the elements of ``source``."""
    if len(dims) > MAX_RANK or any(d < -1 for d in dims) or dims.count(-1) > 1:
        ops.fail(f"invalid new shape {dims[:MAX_RANK + 1]}")
    total, known = math.prod(source), math.prod(d for d in dims if d != -1)
    if -1 not in dims:
        if total != known:
            ops.fail(f"new shape {dims} does not hold the {total:,} elements of shape {source}")
        return list(dims)
    if known == 0 or total % known:
        ops.fail(f"new shape {dims} cannot hold the {total:,} elements of shape {source}")
    return [total // known if d == -1 else d for d in dims]


def _reshape(ops: Operands) -> Shapes:
    """As LiteRT: a 1-D shape input wins, else the options' new shape ([0] and none mean a scalar)."""
    x, given = ops.shape(0), ops.shape(1)
    if given is not None and len(given) == 1:
        dims = ops.values(1)
        if dims is None:
            return [None]  # computed at run time; the kernel checks the element count
    else:
        dims = [int(d) for d in (getattr(ops.options, "newShape", None) or [])]
        dims = [] if dims == [0] else dims
    return [resolve(ops, x, dims)]


def _squeeze(ops: Operands) -> Shapes:
    x = ops.shape(0)
    dims = [int(d) for d in (getattr(ops.options, "squeezeDims", None) or [])]
    if not dims:
        return [[d for d in x if d != 1]]
    gone = {_axis(ops, d, len(x), "squeeze dimension") for d in dims}
    if any(x[i] != 1 for i in gone):
        ops.fail(f"squeezes dimensions {dims} of shape {x}, not all of size 1")
    return [[d for i, d in enumerate(x) if i not in gone]]


def _expand_dims(ops: Operands) -> Shapes:
    x, axis = ops.shape(0), ops.values(1)
    if axis is None:
        return [None]
    if len(axis) != 1 or not -len(x) - 1 <= axis[0] <= len(x):
        ops.fail(f"axis {axis} is out of range for a rank-{len(x)} input")
    at = axis[0] % (len(x) + 1)
    return [[*x[:at], 1, *x[at:]]]


def _transpose(ops: Operands) -> Shapes:
    x, perm = ops.shape(0), ops.values(1)
    if perm is None:
        return [None]
    if sorted(p % max(len(x), 1) for p in perm) != list(range(len(x))) or any(not -len(x) <= p < len(x) for p in perm):
        ops.fail(f"permutation {perm} does not fit a rank-{len(x)} input")
    return [[x[p % len(x)] for p in perm]]


def _concatenation(ops: Operands) -> Shapes:
    shapes = [ops.shape(i) for i in range(ops.inputs)]
    first = shapes[0]
    axis = _axis(ops, int(ops.options.axis), len(first))
    for shape in shapes[1:]:
        if len(shape) != len(first) or any(a != b for i, (a, b) in enumerate(zip(shape, first)) if i != axis):
            ops.fail(f"inputs of shapes {first} and {shape} do not join along axis {axis}")
    return [[sum(s[axis] for s in shapes) if i == axis else d for i, d in enumerate(first)]]


def _pack(ops: Operands) -> Shapes:
    first, count = ops.shape(0), ops.inputs
    if int(ops.options.valuesCount) != count or any(ops.shape(i) != first for i in range(count)):
        ops.fail(f"packs {count} inputs of different shapes or a values count of {int(ops.options.valuesCount)}")
    axis = int(ops.options.axis)
    if not -len(first) - 1 <= axis <= len(first):
        ops.fail(f"axis {axis} is out of range for rank-{len(first)} inputs")
    at = axis % (len(first) + 1)
    return [[*first[:at], count, *first[at:]]]


def _unpack(ops: Operands) -> Shapes:
    x = ops.shape(0)
    axis = _axis(ops, int(ops.options.axis), len(x))
    if int(ops.options.num) != ops.outputs or x[axis] != ops.outputs:
        ops.fail(f"unpacks dimension {axis} of shape {x} into {ops.outputs} outputs (num {int(ops.options.num)})")
    return [[d for i, d in enumerate(x) if i != axis]] * ops.outputs


def _split(ops: Operands) -> Shapes:
    axis, x = ops.values(0), ops.shape(1)
    if axis is None:
        ops.fail("its split axis is computed at run time; lastlayer needs it constant")
    if len(axis) != 1 or not -len(x) <= axis[0] < len(x):
        ops.fail(f"splits along axis {axis} of a rank-{len(x)} input")
    at, parts = axis[0] % len(x), ops.outputs
    if int(ops.options.numSplits) != parts or x[at] % parts:
        ops.fail(f"splits dimension {at} of shape {x} into {parts} equal outputs (num_splits {int(ops.options.numSplits)})")
    return [[d // parts if i == at else d for i, d in enumerate(x)]] * parts


def _split_v(ops: Operands) -> Shapes:
    x, sizes, axis = ops.shape(0), ops.values(1), ops.values(2)
    if sizes is None or axis is None:
        ops.fail("its split sizes or axis are computed at run time; lastlayer needs them constant")
    if len(axis) != 1 or not -len(x) <= axis[0] < len(x):
        ops.fail(f"splits along axis {axis} of a rank-{len(x)} input")
    at = axis[0] % len(x)
    if len(sizes) != ops.outputs or sizes.count(-1) > 1 or any(s < -1 for s in sizes):
        ops.fail(f"split sizes {sizes} do not fit {ops.outputs} outputs")
    rest = x[at] - sum(s for s in sizes if s != -1)
    if rest < 0 or (-1 not in sizes and rest):
        ops.fail(f"split sizes {sizes} do not add up to dimension {at} of shape {x}")
    return [[(rest if s == -1 else s) if i == at else d for i, d in enumerate(x)] for s in sizes]


def _slice(ops: Operands) -> Shapes:
    x, begin, size = ops.shape(0), ops.values(1), ops.values(2)
    if begin is None or size is None:
        return [None]
    if len(begin) != len(x) or len(size) != len(x):
        ops.fail(f"begin {begin} and size {size} do not fit a rank-{len(x)} input")
    out = []
    for b, s, d in zip(begin, size, x):
        s = d - b if s == -1 else s
        if not 0 <= b <= d or s < 0 or b + s > d:
            ops.fail(f"slice of begin {begin} and size {size} leaves shape {x}")
        out.append(s)
    return [out]


def slice_length(ops: Operands, dim: int, begin: int, end: int, stride: int, masks: tuple[bool, bool]) -> int:
    """Elements of ``begin:end:stride`` of a dimension of size ``dim`` (TensorFlow's clamping)."""
    if stride == 0:
        ops.fail("has a stride of 0")
    low, high = (0, dim) if stride > 0 else (-1, dim - 1)
    begin = (low if stride > 0 else high) if masks[0] else begin
    end = (high if stride > 0 else low) if masks[1] else end
    if not masks[0]:
        begin = min(max(begin + dim if begin < 0 else begin, low), high)
    if not masks[1]:
        end = min(max(end + dim if end < 0 else end, low), high)
    return max(0, -(-(end - begin) // stride))


def _strided_slice(ops: Operands) -> Shapes:
    x, begin, end, strides = ops.shape(0), ops.values(1), ops.values(2), ops.values(3)
    o = ops.options
    if begin is None or end is None or strides is None or getattr(o, "ellipsisMask", 0) or getattr(o, "newAxisMask", 0):
        return [None]
    if not len(begin) == len(end) == len(strides) <= len(x):
        ops.fail(f"begin {begin}, end {end} and strides {strides} do not fit a rank-{len(x)} input")
    out = []
    for i, dim in enumerate(x):
        if i >= len(begin):
            out.append(dim)
            continue
        stop = begin[i] + end[i] if getattr(o, "offset", False) else end[i]
        if (o.shrinkAxisMask >> i) & 1:
            if not -dim <= begin[i] < dim:
                ops.fail(f"takes index {begin[i]} of a dimension of size {dim}")
            continue
        out.append(slice_length(ops, dim, begin[i], stop, strides[i], (bool((o.beginMask >> i) & 1), bool((o.endMask >> i) & 1))))
    return [out]


def _pad(ops: Operands) -> Shapes:
    x, pads = ops.shape(0), ops.values(1)
    if pads is None:
        ops.fail("its paddings are computed at run time; lastlayer needs them constant")
    if len(pads) != 2 * len(x):
        ops.fail(f"{len(pads)} padding values for a rank-{len(x)} input (needs {2 * len(x)})")
    pairs = [pads[i:i + 2] for i in range(0, len(pads), 2)]
    out = [d + a + b for d, (a, b) in zip(x, pairs)]
    mirror = ops.name == "MIRROR_PAD"
    if any(a < 0 or b < 0 or (mirror and max(a, b) > d) for d, (a, b) in zip(x, pairs)) or math.prod(out) > MAX_ELEMENTS:
        ops.fail(f"paddings {pairs} are negative{', wider than the input' if mirror else ''} or give an output of "
                 "more than 2^31 elements")
    if ops.name == "PADV2" and ops.shape(2) is not None and math.prod(ops.shape(2)) != 1:
        ops.fail(f"its padding value of shape {ops.shape(2)} is not one value")
    return [out]


def _space_to_depth(ops: Operands) -> Shapes:
    x, block = ops.shape(0), int(ops.options.blockSize)
    if x[1] % block or x[2] % block:
        ops.fail(f"input of shape {x} does not split into {block}x{block} blocks")
    return [[x[0], x[1] // block, x[2] // block, x[3] * block * block]]


def _depth_to_space(ops: Operands) -> Shapes:
    x, block = ops.shape(0), int(ops.options.blockSize)
    if x[3] % (block * block):
        ops.fail(f"input of shape {x} does not have a multiple of {block * block} channels")
    return [[x[0], x[1] * block, x[2] * block, x[3] // (block * block)]]


def _resize(ops: Operands) -> Shapes:
    x, size = ops.shape(0), ops.values(1)
    if size is None:
        ops.fail("its output size is computed at run time; lastlayer needs it constant")
    if len(size) != 2 or any(not 1 <= d <= MAX_WINDOW for d in size) or x[0] * x[3] * size[0] * size[1] > MAX_ELEMENTS:
        ops.fail(f"output size {size} (needs 2 values from 1 to {MAX_WINDOW})")
    return [[x[0], size[0], size[1], x[3]]]


def _tile(ops: Operands) -> Shapes:
    x, multiples = ops.shape(0), ops.values(1)
    if multiples is None:
        ops.fail("its multiples are computed at run time; lastlayer needs them constant")
    if len(multiples) != len(x) or any(m < 0 for m in multiples) or math.prod(a * b for a, b in zip(x, multiples)) > MAX_ELEMENTS:
        ops.fail(f"multiples {multiples} do not fit input shape {x} or exceed 2^31 elements")
    return [[a * b for a, b in zip(x, multiples)]]


def _gather(ops: Operands) -> Shapes:
    x, indices = ops.shape(0), ops.shape(1)
    axis = _axis(ops, int(ops.options.axis), len(x))
    batch = int(getattr(ops.options, "batchDims", 0))
    if batch < 0 or batch > min(axis, len(indices)) or x[:batch] != indices[:batch]:
        ops.fail(f"batch dimensions {batch} do not fit shapes {x} and {indices}")
    values = ops.values(1)
    if values is not None and any(not 0 <= v < x[axis] for v in values):
        ops.fail(f"indices {values[:8]} fall outside dimension {axis} of shape {x}")
    return [[*x[:axis], *indices[batch:], *x[axis + 1:]]]


def _fixed_shape(ops: Operands, position: int, what: str) -> Shape:
    dims = ops.values(position)
    if dims is None:
        ops.fail(f"its {what} is computed at run time; lastlayer needs it constant")
    if len(dims) > MAX_RANK or any(d < 0 for d in dims) or math.prod(dims) > MAX_ELEMENTS:
        ops.fail(f"output shape {dims[:MAX_RANK + 1]} is invalid or has more than 2^31 elements")
    return dims


def _broadcast_to(ops: Operands) -> Shapes:
    dims = _fixed_shape(ops, 1, "shape")
    if broadcast(ops, ops.shape(0), dims) != dims:
        ops.fail(f"input of shape {ops.shape(0)} does not broadcast to {dims}")
    return [dims]


def _fill(ops: Operands) -> Shapes:
    if math.prod(ops.shape(1)) != 1:
        ops.fail(f"its fill value of shape {ops.shape(1)} is not one value")
    return [_fixed_shape(ops, 0, "shape")]


def _lstm(ops: Operands) -> Shapes:
    state = ops.shape(18)
    return [[*ops.shape(0)[:-1], state[-1]] if state else None]


def _detection(ops: Operands) -> Shapes:
    count = int(ops.options["max_detections"]) * int(ops.options.get("max_classes_per_detection", 1))
    if count > MAX_ELEMENTS // 4:
        ops.fail(f"{count:,} detections are too many")
    return [[1, count, 4], [1, count], [1, count], [1]]


_UNARY = ("ABS", "NEG", "SQRT", "RSQRT", "SQUARE", "EXP", "LOG", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LOGISTIC",
          "TANH", "HARD_SWISH", "LEAKY_RELU", "ELU", "GELU", "L2_NORMALIZATION", "LOCAL_RESPONSE_NORMALIZATION", "SOFTMAX",
          "LOG_SOFTMAX", "QUANTIZE", "DEQUANTIZE", "CAST")
_BINARY = ("ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "POW", "PRELU")

#: The shape rule of every operator lastlayer runs (and of the custom operators it checks).
SHAPE_RULES: dict[str, Callable[[Operands], Shapes]] = {
    **{name: _same for name in _UNARY},
    **{name: _binary for name in _BINARY},
    "CONV_2D": _conv, "DEPTHWISE_CONV_2D": _depthwise, "TRANSPOSE_CONV": _transpose_conv,
    "FULLY_CONNECTED": _fully_connected, "BATCH_MATMUL": _batch_matmul,
    "AVERAGE_POOL_2D": _pool, "MAX_POOL_2D": _pool,
    **{name: _reduce for name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD")},
    "ARG_MAX": _arg, "ARG_MIN": _arg,
    "RESHAPE": _reshape, "SQUEEZE": _squeeze, "EXPAND_DIMS": _expand_dims, "TRANSPOSE": _transpose,
    "CONCATENATION": _concatenation, "PACK": _pack, "UNPACK": _unpack,
    "SPLIT": _split, "SPLIT_V": _split_v, "SLICE": _slice, "STRIDED_SLICE": _strided_slice,
    "PAD": _pad, "PADV2": _pad, "MIRROR_PAD": _pad,
    "SPACE_TO_DEPTH": _space_to_depth, "DEPTH_TO_SPACE": _depth_to_space,
    "RESIZE_BILINEAR": _resize, "RESIZE_NEAREST_NEIGHBOR": _resize,
    "TILE": _tile, "GATHER": _gather, "SHAPE": lambda ops: [[len(ops.shape(0))]],
    "BROADCAST_TO": _broadcast_to, "FILL": _fill,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": _lstm,
    "TFLite_Detection_PostProcess": _detection,
}

