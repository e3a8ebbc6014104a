"""Structural validation of a parsed model, before any native code sees it.

LiteRT's C++ runtime trusts much of a ``.tflite`` file: an operator input index out of range, a
missing bias, a zero quantization scale or a constant buffer shorter than its tensor can crash the
process (SIGSEGV, SIGABRT, SIGFPE) instead of raising an error. :func:`validate_model` walks the
``ModelT`` object tree and raises a one-line :class:`~lastlayer.errors.ModelError` for everything the
runtime (and lastlayer's own readers of the tree) is not guaranteed to survive.

The operator rules are data: :data:`OPERATOR_ARITY` gives each builtin's input/output counts and
which inputs may be omitted (``-1``), :data:`OPERATOR_OPTIONS` the options table it must carry and
:data:`OPERAND_RANKS` the ranks its operands must have. Custom operators (``edgetpu-custom-op``)
may have any number of inputs and outputs.

Index lists arrive as NumPy arrays when the tree was read by ``InitFromPackedBuf`` and as lists when
it was built in Python; both are handled, and big constant buffers are only ever measured, never
converted.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.model.names import BUILTIN_OPERATOR_NAMES, TENSOR_TYPE_NAMES, builtin_code, operator_name

HINT = "re-export the model"
MAX_ELEMENTS = 2**31 - 1  # the runtime sizes tensors with int; more elements (or bytes) overflow
MAX_RANK = 16
MAX_WINDOW = 65535  # strides, dilations, pooling windows, block sizes
# Scales outside this range overflow the float32 products and quotients the kernels compute.
_MIN_SCALE, _MAX_SCALE = 1e-30, 1e16

_T = schema.TensorType
# Bytes per element; sub-byte types may be stored packed or one value per byte.
_ELEMENT_BYTES: dict[int, tuple[float, ...]] = {
    _T.FLOAT32: (4,), _T.FLOAT16: (2,), _T.INT32: (4,), _T.UINT8: (1,), _T.INT64: (8,), _T.BOOL: (1,),
    _T.INT16: (2,), _T.COMPLEX64: (8,), _T.INT8: (1,), _T.FLOAT64: (8,), _T.COMPLEX128: (16,), _T.UINT64: (8,),
    _T.UINT32: (4,), _T.UINT16: (2,), _T.INT4: (0.5, 1), _T.BFLOAT16: (2,), _T.INT2: (0.25, 1), _T.UINT4: (0.5, 1),
    _T.FLOAT8_E4M3FN: (1,), _T.FLOAT8_E5M2: (1,),
}
# Zero points must fit the stored integer type.
_ZERO_POINT_RANGE: dict[int, tuple[int, int]] = {
    _T.UINT8: (0, 255), _T.INT8: (-128, 127), _T.INT16: (-32768, 32767), _T.UINT16: (0, 65535),
    _T.INT4: (-8, 7), _T.UINT4: (0, 15), _T.INT2: (-2, 1), _T.INT32: (-(2**31), 2**31 - 1), _T.UINT32: (0, 2**32 - 1),
}
_INT_INDEX_TYPES = (_T.INT32, _T.INT64)
_PADDINGS = {v for k, v in vars(schema.Padding).items() if not k.startswith("_")}
_ACTIVATIONS = {v for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
_OPTIONS_NAMES = {v: k for k, v in vars(schema.BuiltinOptions).items() if not k.startswith("_")}


@dataclass(frozen=True)
class Arity:
    """Input and output counts of a builtin; ``optional`` inputs may be ``-1`` (or left off the end)."""

    inputs: tuple[int, int]
    outputs: tuple[int, int] = (1, 1)
    optional: frozenset[int] = frozenset()


def _range(value: int | tuple[int, int]) -> tuple[int, int]:
    return value if isinstance(value, tuple) else (value, value)


def _a(inputs: int | tuple[int, int], outputs: int | tuple[int, int] = 1, optional: Iterable[int] = ()) -> Arity:
    return Arity(_range(inputs), _range(outputs), frozenset(optional))


MANY = 10_000
_UNARY = ("ABS", "CEIL", "COS", "DEQUANTIZE", "ELU", "EXP", "FLOOR", "GELU", "HARD_SWISH", "L2_NORMALIZATION",
          "LEAKY_RELU", "LOCAL_RESPONSE_NORMALIZATION", "LOG", "LOG_SOFTMAX", "LOGICAL_NOT", "LOGISTIC", "NEG",
          "QUANTIZE", "RELU", "RELU6", "RELU_0_TO_1", "RELU_N1_TO_1", "ROUND", "RSQRT", "SIGN", "SIN", "SOFTMAX",
          "SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "SQRT", "SQUARE", "SQUEEZE", "TANH", "ZEROS_LIKE", "ONES_LIKE",
          "CAST", "SHAPE", "RANK", "AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D", "FAKE_QUANT", "MATRIX_DIAG",
          "BITCAST", "DENSIFY", "WHERE", "REAL", "IMAG", "COMPLEX_ABS", "FLOOR")
_BINARY = ("ADD", "SUB", "MUL", "DIV", "POW", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "FLOOR_DIV", "FLOOR_MOD",
           "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL", "EQUAL", "NOT_EQUAL", "LOGICAL_AND", "LOGICAL_OR",
           "PRELU", "ATAN2", "BITWISE_XOR", "RIGHT_SHIFT", "BATCH_MATMUL", "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN",
           "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL", "ARG_MAX", "ARG_MIN", "EXPAND_DIMS", "PAD", "MIRROR_PAD", "TILE",
           "TRANSPOSE", "GATHER", "GATHER_ND", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "FILL", "BROADCAST_TO",
           "BROADCAST_ARGS", "REVERSE_V2", "MATRIX_SET_DIAG", "SEGMENT_SUM", "CUMSUM", "EMBEDDING_LOOKUP", "RFFT2D")

#: Input/output counts of the builtin operators lastlayer checks (others: index checks only).
OPERATOR_ARITY: dict[str, Arity] = {
    **{name: _a(1) for name in _UNARY},
    **{name: _a(2) for name in _BINARY},
    "CONV_2D": _a((2, 3), optional=[2]),
    # The quantized depthwise kernels read the bias unconditionally: it is required.
    "DEPTHWISE_CONV_2D": _a(3),
    "FULLY_CONNECTED": _a((2, 3), (1, 2), optional=[2]),
    "TRANSPOSE_CONV": _a((3, 4), optional=[3]),
    "CONV_3D": _a((2, 3), optional=[2]),
    "CONV_3D_TRANSPOSE": _a((3, 4), optional=[3]),
    "RESHAPE": _a((1, 2)),
    "CONCATENATION": _a((1, MANY)),
    "ADD_N": _a((1, MANY)),
    "PACK": _a((1, MANY)),
    "UNPACK": _a(1, (1, MANY)),
    "SPLIT": _a(2, (1, MANY)),
    "SPLIT_V": _a(3, (1, MANY)),
    "UNIQUE": _a(1, 2),
    "TOPK_V2": _a(2, 2),
    "PADV2": _a(3),
    "SLICE": _a(3),
    "STRIDED_SLICE": _a(4),
    "SELECT": _a(3),
    "SELECT_V2": _a(3),
    "BATCH_TO_SPACE_ND": _a(3),
    "SPACE_TO_BATCH_ND": _a(3),
    "SPARSE_TO_DENSE": _a(4),
    "SCATTER_ND": _a(3),
    "ONE_HOT": _a(4),
    "RANGE": _a(3),
    "REVERSE_SEQUENCE": _a(2),
    "DYNAMIC_UPDATE_SLICE": _a(3),
    "BUCKETIZE": _a(1),
    "NON_MAX_SUPPRESSION_V4": _a(5, 2),
    "NON_MAX_SUPPRESSION_V5": _a(6, 3),
    "UNSORTED_SEGMENT_SUM": _a(3), "UNSORTED_SEGMENT_PROD": _a(3),
    "UNSORTED_SEGMENT_MAX": _a(3), "UNSORTED_SEGMENT_MIN": _a(3),
    # Recurrent layers: the optional weights of the TFLite LSTM/RNN layouts may be -1.
    "UNIDIRECTIONAL_SEQUENCE_LSTM": _a((20, 24), optional=[1, 5, 9, 10, 11, 12, 16, 17, 20, 21, 22, 23]),
    "LSTM": _a((20, 24), (1, 4), optional=[1, 5, 9, 10, 11, 12, 16, 17, 20, 21, 22, 23]),
    "UNIDIRECTIONAL_SEQUENCE_RNN": _a(5),
    "RNN": _a(5, (1, 2)),
    "SVDF": _a((4, 5), optional=[3]),
}

#: Custom operators that LiteRT's builtin resolver runs itself: their arity and the keys their
#: FlexBuffer options must hold (the kernels read these options without any check).
BUILTIN_CUSTOM_OPERATORS: dict[str, tuple[Arity, dict[str, str]]] = {
    "TFLite_Detection_PostProcess": (_a(3, 4), {
        "max_detections": "count", "max_classes_per_detection": "count", "num_classes": "count",
        "nms_score_threshold": "float", "nms_iou_threshold": "float",
        "y_scale": "scale", "x_scale": "scale", "h_scale": "scale", "w_scale": "scale"}),
    "Mfcc": (_a(2), {"upper_frequency_limit": "float", "lower_frequency_limit": "float",
                     "filterbank_channel_count": "count", "dct_coefficient_count": "count"}),
    "AudioSpectrogram": (_a(1), {"window_size": "count", "stride": "count"}),
    "NumericVerify": (_a(2, (0, 1)), {"tolerance": "float"}),
}

#: The options table an operator must carry (``None``: may be absent; a wrong type is always refused).
OPERATOR_OPTIONS: dict[str, tuple[str, bool]] = {
    "CONV_2D": ("Conv2DOptions", True),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", True),
    "AVERAGE_POOL_2D": ("Pool2DOptions", True),
    "MAX_POOL_2D": ("Pool2DOptions", True),
    "L2_POOL_2D": ("Pool2DOptions", True),
    "TRANSPOSE_CONV": ("TransposeConvOptions", True),
    "CONV_3D": ("Conv3DOptions", True),
    "CONV_3D_TRANSPOSE": ("Conv3DOptions", True),
    "SPACE_TO_DEPTH": ("SpaceToDepthOptions", True),
    "DEPTH_TO_SPACE": ("DepthToSpaceOptions", True),
    "SPLIT": ("SplitOptions", True),
    "SPLIT_V": ("SplitVOptions", True),
    "UNPACK": ("UnpackOptions", True),
    "PACK": ("PackOptions", True),
    "SVDF": ("SVDFOptions", True),
    "IF": ("IfOptions", True),
    "WHILE": ("WhileOptions", True),
    "CALL_ONCE": ("CallOnceOptions", True),
    "FAKE_QUANT": ("FakeQuantOptions", True),
    "FULLY_CONNECTED": ("FullyConnectedOptions", False),
    "SOFTMAX": ("SoftmaxOptions", False),
    "CONCATENATION": ("ConcatenationOptions", False),
    "ADD": ("AddOptions", False),
    "SUB": ("SubOptions", False),
    "MUL": ("MulOptions", False),
    "DIV": ("DivOptions", False),
    "RESHAPE": ("ReshapeOptions", False),
    "MEAN": ("ReducerOptions", False),
    "SUM": ("ReducerOptions", False),
    "REDUCE_MAX": ("ReducerOptions", False),
    "REDUCE_MIN": ("ReducerOptions", False),
    "REDUCE_PROD": ("ReducerOptions", False),
    "PAD": ("PadOptions", False),
    "PADV2": ("PadV2Options", False),
    "SQUEEZE": ("SqueezeOptions", False),
    "L2_NORMALIZATION": ("L2NormOptions", False),
    "HARD_SWISH": ("HardSwishOptions", False),
    "QUANTIZE": ("QuantizeOptions", False),
    "DEQUANTIZE": ("DequantizeOptions", False),
    "STRIDED_SLICE": ("StridedSliceOptions", False),
    "RESIZE_BILINEAR": ("ResizeBilinearOptions", False),
    "RESIZE_NEAREST_NEIGHBOR": ("ResizeNearestNeighborOptions", False),
    "LOCAL_RESPONSE_NORMALIZATION": ("LocalResponseNormalizationOptions", False),
    "GATHER": ("GatherOptions", False),
    "TRANSPOSE": ("TransposeOptions", False),
    "LEAKY_RELU": ("LeakyReluOptions", False),
}

#: Allowed rank ranges of operands, by operator: {input index: (min, max)} (missing optional inputs are skipped).
OPERAND_RANKS: dict[str, dict[int, tuple[int, int]]] = {
    "CONV_2D": {0: (4, 4), 1: (4, 4), 2: (1, 1)},
    "DEPTHWISE_CONV_2D": {0: (4, 4), 1: (4, 4), 2: (1, 1)},
    "TRANSPOSE_CONV": {0: (1, 1), 1: (4, 4), 2: (4, 4), 3: (1, 1)},
    "FULLY_CONNECTED": {0: (1, MAX_RANK), 1: (2, 2), 2: (1, 1)},
    "AVERAGE_POOL_2D": {0: (4, 4)},
    "MAX_POOL_2D": {0: (4, 4)},
    "L2_POOL_2D": {0: (4, 4)},
    "SPACE_TO_DEPTH": {0: (4, 4)},
    "DEPTH_TO_SPACE": {0: (4, 4)},
    "RESIZE_BILINEAR": {0: (4, 4), 1: (1, 1)},
    "RESIZE_NEAREST_NEIGHBOR": {0: (4, 4), 1: (1, 1)},
    "SOFTMAX": {0: (1, MAX_RANK)},
    "LOG_SOFTMAX": {0: (1, MAX_RANK)},
    "L2_NORMALIZATION": {0: (1, MAX_RANK)},
    "PAD": {0: (1, MAX_RANK), 1: (2, 2)},
    "PADV2": {0: (1, MAX_RANK), 1: (2, 2)},
    "MIRROR_PAD": {0: (1, MAX_RANK), 1: (2, 2)},
    "RESHAPE": {1: (0, 1)},
    "MEAN": {1: (0, 1)}, "SUM": {1: (0, 1)}, "REDUCE_MAX": {1: (0, 1)}, "REDUCE_MIN": {1: (0, 1)},
    "REDUCE_PROD": {1: (0, 1)}, "REDUCE_ANY": {1: (0, 1)}, "REDUCE_ALL": {1: (0, 1)},
    "STRIDED_SLICE": {1: (1, 1), 2: (1, 1), 3: (1, 1)},
    "SLICE": {1: (1, 1), 2: (1, 1)},
}
# Operators whose input 1 holds axes into input 0 (values checked when the axes are constant).
_AXES_INPUT = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL"}
# Operators whose constant integer inputs (by index) must be INT32/INT64.
_INTEGER_INPUTS: dict[str, tuple[int, ...]] = {
    **{name: (1,) for name in _AXES_INPUT},
    "PAD": (1,), "PADV2": (1,), "MIRROR_PAD": (1,), "RESHAPE": (1,), "SPLIT": (0,), "SPLIT_V": (1, 2),
    "STRIDED_SLICE": (1, 2, 3), "SLICE": (1, 2), "TRANSPOSE": (1,), "EXPAND_DIMS": (1,), "TILE": (1,),
    "RESIZE_BILINEAR": (1,), "RESIZE_NEAREST_NEIGHBOR": (1,), "TRANSPOSE_CONV": (0,), "GATHER": (1,),
}
# Constant inputs (by index) that set an output shape.
_SHAPE_INPUTS = {"RESHAPE": 1, "TILE": 1, "RESIZE_BILINEAR": 1, "RESIZE_NEAREST_NEIGHBOR": 1, "BROADCAST_TO": 1,
                 "FILL": 0, "TRANSPOSE_CONV": 0}
# Options fields that must be at least 1 (and at most MAX_WINDOW): a zero divides by zero in the kernels.
_POSITIVE_OPTIONS = ("strideW", "strideH", "strideD", "dilationWFactor", "dilationHFactor", "dilationDFactor",
                     "filterWidth", "filterHeight", "blockSize", "numSplits")
_SUBGRAPH_OPTIONS = ("condSubgraphIndex", "bodySubgraphIndex", "thenSubgraphIndex", "elseSubgraphIndex",
                     "initSubgraphIndex", "subgraph", "decompositionSubgraphIndex")


def _ints(values: Any) -> list[int]:
    """An index list (list, NumPy array or None) as Python ints."""
    if values is None:
        return []
    if isinstance(values, np.ndarray):
        return values.tolist() if values.dtype.kind in "iu" else values.astype(np.int64).tolist()
    return [int(v) for v in values]


def _length(values: Any) -> int:
    return 0 if values is None else len(values)


class _Checker:
    def __init__(self, model: schema.ModelT, source: str, file_size: int | None) -> None:
        self.model, self.source, self.file_size = model, source, file_size
        self.buffers = model.buffers or []
        self.codes = model.operatorCodes or []
        self.subgraphs = model.subgraphs or []
        self.sizes = [self.buffer_bytes(i) for i in range(len(self.buffers))] or [0]

    def fail(self, where: str | tuple, problem: str) -> None:
        """Raise the one-line error; ``where`` may be a tuple of parts, joined only now (it is on the hot path)."""
        place = " ".join(str(part) for part in where) if isinstance(where, tuple) else where
        raise ModelError(f"{self.source} is not a valid TFLite model: {place}: {problem}; {HINT}")

    # ----------------------------------------------------------------- whole model
    def run(self) -> None:
        if not self.subgraphs:
            raise ModelError(f"{self.source} is not a valid TFLite model: it has no subgraph (no graph to run); {HINT}")
        self.check_buffers()
        self.check_codes()
        for number, graph in enumerate(self.subgraphs):
            self.check_subgraph(number, graph)
        if not _length(self.subgraphs[0].outputs):
            raise ModelError(f"{self.source} is not a valid TFLite model: its main graph has no outputs; {HINT}")
        self.check_calls()
        self.check_metadata()

    def check_buffers(self) -> None:
        for index, buffer in enumerate(self.buffers):
            if buffer is None:
                continue
            offset, size = int(buffer.offset or 0), int(buffer.size or 0)
            if offset < 0 or size < 0:
                self.fail(f"buffer {index}", f"negative offset/size ({offset}, {size})")
            if offset > 1 and self.file_size is not None and offset + size > self.file_size:
                self.fail(f"buffer {index}", f"its data ({size} bytes at offset {offset}) lies past the end of the file ({self.file_size} bytes)")

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

    def check_codes(self) -> None:
        self.code_names = [operator_name(code) for code in self.codes]
        for index, code in enumerate(self.codes):
            value = builtin_code(code)
            if value not in BUILTIN_OPERATOR_NAMES:
                self.fail(f"operator code {index}", f"unknown builtin operator {value}")
            if int(code.deprecatedBuiltinCode) < 0:
                self.fail(f"operator code {index}", f"negative builtin code {int(code.deprecatedBuiltinCode)}")
            if int(code.version) < 1:
                self.fail(f"operator code {index} ({operator_name(code)})", f"version {int(code.version)} (must be 1 or more)")

    def check_metadata(self) -> None:
        for entry in self.model.metadata or []:
            self.check_text("metadata", entry.name)
            if not 0 <= int(entry.buffer) < max(len(self.buffers), 1):
                self.fail(f"metadata {entry.name!r}", f"buffer index {int(entry.buffer)} out of range (model has {len(self.buffers)} buffers)")
        for index in _ints(self.model.metadataBuffer):
            if not 0 <= index < len(self.buffers):
                self.fail("metadata buffer list", f"buffer index {index} out of range (model has {len(self.buffers)} buffers)")
        for signature in self.model.signatureDefs or []:
            sub = int(signature.subgraphIndex)
            if not 0 <= sub < len(self.subgraphs):
                self.fail("signature", f"subgraph index {sub} out of range ({len(self.subgraphs)} subgraphs)")
            count = _length(self.subgraphs[sub].tensors)
            self.check_text("signature", signature.signatureKey)
            for entry in list(signature.inputs or []) + list(signature.outputs or []):
                self.check_text("signature", entry.name)
                if not 0 <= int(entry.tensorIndex) < count:
                    self.fail(f"signature of subgraph {sub}", f"tensor index {int(entry.tensorIndex)} out of range ({count} tensors)")

    def check_calls(self) -> None:
        """Control-flow operators name subgraphs: in range, and never (directly or not) their own."""
        calls: dict[int, set[int]] = {}
        for number, graph in enumerate(self.subgraphs):
            for op in graph.operators or []:
                for field in _SUBGRAPH_OPTIONS:
                    for options in (op.builtinOptions, op.builtinOptions2):
                        if options is not None and hasattr(options, field):
                            target = int(getattr(options, field))
                            if not 0 <= target < len(self.subgraphs):
                                self.fail(f"subgraph {number}", f"an operator calls subgraph {target}, out of range ({len(self.subgraphs)} subgraphs)")
                            calls.setdefault(number, set()).add(target)
        state: dict[int, int] = {}

        def visit(node: int) -> None:
            state[node] = 1
            for target in calls.get(node, ()):
                if state.get(target) == 1:
                    self.fail(f"subgraph {node}", f"calls subgraph {target} recursively")
                if target not in state:
                    visit(target)
            state[node] = 2

        for node in list(calls):
            if node not in state:
                visit(node)

    # ----------------------------------------------------------------- one subgraph
    def check_subgraph(self, number: int, graph: schema.SubGraphT) -> None:
        tensors = graph.tensors or []
        count = len(tensors)
        where = f"subgraph {number}"
        self.check_text(where, graph.name)
        self.shapes: list[list[int]] = []
        constants = {index for index, tensor in enumerate(tensors) if self.check_tensor((where, "tensor", index), tensor)}
        inputs, outputs = _ints(graph.inputs), _ints(graph.outputs)
        for label, ids in (("input", inputs), ("output", outputs)):
            for tid in ids:
                if not 0 <= tid < count:
                    self.fail(where, f"graph {label} tensor index {tid} out of range ({count} tensors)")
        produced: dict[int, int] = {}
        op_inputs: list[list[int]] = []
        for op_index, op in enumerate(graph.operators or []):
            op_where = (where, "operator", op_index)
            name, ins, outs = self.check_operator(op_where, op, tensors)
            for tid in outs:
                if tid in produced:
                    self.fail((*op_where, f"({name})"), f"output tensor {tid} is already written by operator {produced[tid]}")
                if tid in constants:
                    self.fail((*op_where, f"({name})"), f"output tensor {tid} is a constant")
                produced[tid] = op_index
            op_inputs.append(ins)
        for op_index, ins in enumerate(op_inputs):
            for tid in ins:
                if produced.get(tid, -1) >= op_index:
                    self.fail(f"{where} operator {op_index}",
                              f"reads tensor {tid} before operator {produced[tid]} computes it (operators out of order or a cycle)")
        graph_inputs = set(inputs)
        for tid in outputs:
            if tid not in produced and tid not in graph_inputs and tid not in constants:
                self.fail(where, f"graph output tensor {tid} is computed by no operator")

    def check_text(self, where: str, value: Any) -> None:
        if isinstance(value, (bytes, bytearray)):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                self.fail(where, f"its name {bytes(value)[:40]!r} is not valid UTF-8")

    def check_tensor(self, where: str, tensor: schema.TensorT) -> bool:
        """Check one tensor; return whether it is a constant. (The hot loop: kept lean.)"""
        name = tensor.name
        if isinstance(name, (bytes, bytearray)):
            self.check_text(where, name)
        kind = int(tensor.type)
        widths = _ELEMENT_BYTES.get(kind)
        if widths is None and kind not in TENSOR_TYPE_NAMES:
            self.fail(where, f"unknown tensor type {kind}")
        shape = tensor.shape
        shape = shape.tolist() if isinstance(shape, np.ndarray) else _ints(shape)
        if shape and (len(shape) > MAX_RANK or min(shape) < 0):
            if len(shape) > MAX_RANK:
                self.fail(where, f"rank {len(shape)} (at most {MAX_RANK} is supported)")
            self.fail(where, f"negative dimension in shape {shape}")
        if tensor.shapeSignature is not None and len(tensor.shapeSignature):
            signature = _ints(tensor.shapeSignature)
            if len(signature) != len(shape):
                self.fail(where, f"shape signature {signature} has another rank than shape {shape}")
            if min(signature) < -1:
                self.fail(where, f"invalid dimension in shape signature {signature}")
        elements = math.prod(shape)
        if elements > MAX_ELEMENTS:
            self.fail(where, f"shape {shape} has {elements:,} elements (more than 2^31)")
        buffer = int(tensor.buffer)
        if not 0 <= buffer < len(self.sizes):  # (buffer 0 is accepted in a model without buffers: no data)
            self.fail(where, f"buffer index {buffer} out of range (model has {len(self.buffers)} buffers)")
        size = self.sizes[buffer]
        if size and tensor.sparsity is None:
            if kind == _T.STRING:
                self.check_strings(where, buffer, elements)
            elif widths is None:
                self.fail(where, f"{TENSOR_TYPE_NAMES[kind]} tensor cannot be a constant")
            elif size != elements * widths[0] and not any(size == math.ceil(elements * w) for w in widths):
                self.fail(where, f"constant buffer {buffer} holds {size:,} bytes, but a {TENSOR_TYPE_NAMES[kind]} tensor of shape {shape} needs "
                                 f"{math.ceil(elements * widths[-1]):,}")
        if widths is not None and elements * widths[-1] > MAX_ELEMENTS:
            self.fail(where, f"shape {shape} needs more than 2 GB")
        if tensor.quantization is not None:
            self.check_quantization(where, tensor, kind, shape)
        if tensor.sparsity is not None:
            self.check_sparsity(where, tensor.sparsity, len(shape))
        if tensor.externalBuffer and not 0 < int(tensor.externalBuffer) <= _length(self.model.externalBuffers):
            self.fail(where, f"external buffer {int(tensor.externalBuffer)} out of range")
        self.shapes.append(shape)
        return size > 0

    def check_strings(self, where: str, buffer: int, elements: int) -> None:
        data = self.constant(buffer)
        if data is None or len(data) < 4:
            self.fail(where, "string constant shorter than its header")
        count = int(np.frombuffer(data[:4].tobytes(), dtype="<i4")[0])
        if count != elements or 4 * (count + 2) > len(data):
            self.fail(where, f"string constant header says {count} strings for {elements} elements in {len(data)} bytes")
        offsets = np.frombuffer(data[4 : 4 * (count + 2)].tobytes(), dtype="<i4")
        if offsets[0] != 4 * (count + 2) or np.any(np.diff(offsets) < 0) or offsets[-1] > len(data):
            self.fail(where, "string constant offsets are out of order or past its end")

    def check_quantization(self, where: str, tensor: schema.TensorT, kind: int, shape: list[int]) -> None:
        q = tensor.quantization
        if q is None:
            return
        count = _length(q.scale)
        zero = q.zeroPoint
        if not count:
            if _length(zero) and kind in _ZERO_POINT_RANGE:
                self.fail(where, "zero points without scales")
            return
        if _length(zero) != count:
            self.fail(where, f"{count} quantization scale(s) but {_length(zero)} zero point(s)")
        limits = _ZERO_POINT_RANGE.get(kind)
        if count == 1:  # per-tensor: plain floats, much faster than NumPy on one value
            scale = float(q.scale[0])
            if not (math.isfinite(scale) and scale > 0):
                self.fail(where, f"quantization scale {scale!r} (must be finite and positive)")
            if not _MIN_SCALE <= scale <= _MAX_SCALE:
                self.fail(where, f"quantization scale {scale:g} out of the usable range [{_MIN_SCALE:g}, {_MAX_SCALE:g}]")
            point = int(zero[0])
            if limits is not None and not limits[0] <= point <= limits[1]:
                self.fail(where, f"zero point {point} outside the {TENSOR_TYPE_NAMES[kind]} range [{limits[0]}, {limits[1]}]")
        else:
            scales = np.asarray(q.scale, dtype=np.float64).reshape(-1)
            usable = (scales >= _MIN_SCALE) & (scales <= _MAX_SCALE)
            if not usable.all():
                bad = float(scales[~usable][0])
                self.fail(where, f"quantization scale {bad!r} (must be finite, positive and within [{_MIN_SCALE:g}, {_MAX_SCALE:g}])")
            points = np.asarray(zero, dtype=np.int64).reshape(-1)
            if limits is not None and (points.min() < limits[0] or points.max() > limits[1]):
                bad = int(points[(points < limits[0]) | (points > limits[1])][0])
                self.fail(where, f"zero point {bad} outside the {TENSOR_TYPE_NAMES[kind]} range [{limits[0]}, {limits[1]}]")
        axis = int(q.quantizedDimension)
        if axis < 0 or axis >= max(len(shape), 1):
            self.fail(where, f"quantized dimension {axis} out of range for shape {shape}")
        if count > 1 and (not shape or shape[axis] != count):
            self.fail(where, f"{count} per-axis scales do not match dimension {axis} of shape {shape}")

    def check_sparsity(self, where: str, sparsity: Any, rank: int) -> None:
        order = _ints(sparsity.traversalOrder)
        blocks = _ints(sparsity.blockMap)
        if sorted(order) != list(range(len(order))) or len(order) < rank or len(order) != _length(sparsity.dimMetadata):
            self.fail(where, "inconsistent sparsity parameters")
        if any(not 0 <= b < rank for b in blocks) or len(order) != rank + len(blocks):
            self.fail(where, "inconsistent sparsity block map")

    # ----------------------------------------------------------------- one operator
    def check_operator(self, where: str, op: schema.OperatorT, tensors: Sequence[schema.TensorT]) -> tuple[str, list[int], list[int]]:
        count = len(tensors)
        code_index = int(op.opcodeIndex)
        if not 0 <= code_index < len(self.codes):
            self.fail(where, f"operator code index {code_index} out of range (model has {len(self.codes)} operator codes)")
        code = self.codes[code_index]
        name = self.code_names[code_index]
        where = (*where, f"({name})")
        custom = builtin_code(code) == schema.BuiltinOperator.CUSTOM
        ins, outs = _ints(op.inputs), _ints(op.outputs)
        arity = None if custom else OPERATOR_ARITY.get(name)
        if custom and name in BUILTIN_CUSTOM_OPERATORS:
            arity = BUILTIN_CUSTOM_OPERATORS[name][0]
            self.check_custom_options(where, name, op)
        # Unlisted builtins and plain custom operators: any input may be an omitted optional one.
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

        for tid in _ints(op.intermediates):
            if not 0 <= tid < count:
                self.fail(where, f"intermediate tensor index {tid} out of range ({count} tensors)")
        for tid in _ints(op.mutatingVariableInputs):
            if tid not in (0, 1):
                self.fail(where, "invalid mutating-variable-inputs flags")
        if op.largeCustomOptionsSize and self.file_size is not None and \
                int(op.largeCustomOptionsOffset) + int(op.largeCustomOptionsSize) > self.file_size:
            self.fail(where, "its custom options lie past the end of the file")
        if arity is not None:
            low, high = arity.inputs
            if not low <= len(ins) <= high:
                self.fail(where, f"{len(ins)} inputs, expected {_count_text(low, high)}")
            low, high = arity.outputs
            if not low <= len(outs) <= high:
                self.fail(where, f"{len(outs)} outputs, expected {_count_text(low, high)}")
        if not custom:
            self.check_options(where, name, op)
            self.check_operands(where, name, ins, tensors)
        present = [t for t in ins if t >= 0]
        return name, present, outs

    def check_custom_options(self, where: str, name: str, op: schema.OperatorT) -> None:
        from flatbuffers import flexbuffers

        raw = op.customOptions
        if raw is None or not len(raw) or int(op.customOptionsFormat) != 0:
            self.fail(where, "its custom options are missing")
        try:
            options = flexbuffers.Loads(np.asarray(raw, dtype=np.uint8).tobytes())
        except Exception:  # any malformed FlexBuffer
            options = None
        if not isinstance(options, dict):
            self.fail(where, "its custom options are not a valid FlexBuffer map")
        for key, kind in BUILTIN_CUSTOM_OPERATORS[name][1].items():
            value = options.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                self.fail(where, f"custom option {key!r} is missing or not a number")
            if (kind == "count" and not (isinstance(value, int) and 0 < value <= MAX_ELEMENTS)) or (kind == "scale" and value <= 0):
                self.fail(where, f"custom option {key} = {value!r}")

    def check_options(self, where: str, name: str, op: schema.OperatorT) -> None:
        expected = OPERATOR_OPTIONS.get(name)
        kind = int(op.builtinOptionsType)
        options = op.builtinOptions
        if kind not in _OPTIONS_NAMES:
            self.fail(where, f"unknown options type {kind}")
        if expected is not None:
            wanted, required = expected
            if options is None or kind == 0:
                if required:
                    self.fail(where, f"its {wanted} are missing")
            elif _OPTIONS_NAMES[kind] != wanted:
                self.fail(where, f"carries {_OPTIONS_NAMES[kind]} instead of {wanted}")
        if options is None:
            return
        positive, padding, activation, counts = _options_plan(type(options))
        for field in positive:
            value = int(getattr(options, field))
            if not 1 <= value <= MAX_WINDOW:
                self.fail(where, f"option {field} = {value} (must be 1 to {MAX_WINDOW})")
        if padding and int(options.padding) not in _PADDINGS:
            self.fail(where, f"unknown padding {int(options.padding)}")
        if activation and int(options.fusedActivationFunction) not in _ACTIVATIONS:
            self.fail(where, f"unknown fused activation {int(options.fusedActivationFunction)}")
        for field in counts:
            if not 0 <= int(getattr(options, field)) <= MAX_ELEMENTS:
                self.fail(where, f"option {field} = {int(getattr(options, field))}")
        if name == "RESHAPE" and getattr(options, "newShape", None) is not None:
            new_shape = _ints(options.newShape)
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
        for position in _INTEGER_INPUTS.get(name, ()):
            if position < len(ins) and ins[position] >= 0:
                tensor = tensors[ins[position]]
                if self.buffer_bytes(int(tensor.buffer)) and int(tensor.type) not in _INT_INDEX_TYPES:
                    self.fail(where, f"input {position} is a {TENSOR_TYPE_NAMES[int(tensor.type)]} constant; {name} needs INT32 or INT64")
        if name in _AXES_INPUT or name in ("PAD", "PADV2", "MIRROR_PAD", "SPLIT"):
            position = 0 if name == "SPLIT" else 1
            data_position = 1 if name == "SPLIT" else 0
            values = self.int_constant(tensors[ins[position]])
            rank = len(shape_of(data_position) or [])
            if values is None:
                return
            if name in _AXES_INPUT and any(not -rank <= int(a) < rank for a in values):
                self.fail(where, f"reduces axes {values.tolist()} of a rank-{rank} input")
            if name == "SPLIT" and (values.size != 1 or not -rank <= int(values[0]) < rank):
                self.fail(where, f"splits along axis {values.tolist()} of a rank-{rank} input")
            if name in ("PAD", "PADV2", "MIRROR_PAD") and values.size != 2 * rank:
                self.fail(where, f"{values.size} padding values for a rank-{rank} input (needs {2 * rank})")
            if name in ("PAD", "PADV2", "MIRROR_PAD"):
                shape = shape_of(0) or []
                pads = values.reshape(-1, 2).tolist()
                if any(a < 0 or b < 0 for a, b in pads) or \
                        math.prod(d + a + b for d, (a, b) in zip(shape, pads)) > MAX_ELEMENTS:
                    self.fail(where, f"paddings {pads} are negative or give an output of more than 2^31 elements")
        self.check_shape_inputs(where, name, ins, tensors, shape_of)

    def check_shape_inputs(self, where: str, name: str, ins: list[int], tensors: Sequence[schema.TensorT], shape_of: Any) -> None:
        """Constant inputs that set an output's shape: sane values, and no output above 2^31 elements."""
        position = _SHAPE_INPUTS.get(name)
        if position is None or position >= len(ins) or ins[position] < 0:
            return
        values = self.int_constant(tensors[ins[position]])
        if values is None:
            return
        dims = values.tolist()
        if name == "RESHAPE":
            source = shape_of(0) or []
            if len(dims) > MAX_RANK or any(d < -1 for d in dims) or dims.count(-1) > 1:
                self.fail(where, f"invalid new shape {dims[:MAX_RANK + 1]}")
            known = math.prod(d for d in dims if d != -1)
            if -1 not in dims and math.prod(source) != known:
                self.fail(where, f"new shape {dims} does not hold the {math.prod(source):,} elements of shape {source}")
            if -1 in dims and (known == 0 or math.prod(source) % known):
                self.fail(where, f"new shape {dims} cannot hold the {math.prod(source):,} elements of shape {source}")
            return
        if name == "TILE":
            source = shape_of(0) or []
            if len(dims) != len(source) or any(d < 0 for d in dims) or math.prod(a * b for a, b in zip(source, dims)) > MAX_ELEMENTS:
                self.fail(where, f"multiples {dims} do not fit input shape {source} or exceed 2^31 elements")
            return
        if name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
            source = shape_of(0) or [1, 1, 1, 1]
            if len(dims) != 2 or any(not 1 <= d <= MAX_WINDOW for d in dims) or source[0] * source[-1] * dims[0] * dims[1] > MAX_ELEMENTS:
                self.fail(where, f"output size {dims} (needs 2 values from 1 to {MAX_WINDOW})")
            return
        if len(dims) > MAX_RANK or any(d < 0 for d in dims) or math.prod(dims) > MAX_ELEMENTS:
            self.fail(where, f"output shape {dims[:MAX_RANK + 1]} is invalid or has more than 2^31 elements")

    def int_constant(self, tensor: schema.TensorT) -> np.ndarray | None:
        data = self.constant(int(tensor.buffer))
        if data is None or int(tensor.type) not in _INT_INDEX_TYPES:
            return None
        return np.frombuffer(data.tobytes(), dtype="<i4" if int(tensor.type) == _T.INT32 else "<i8")


@functools.cache
def _options_plan(options_class: type) -> tuple[tuple[str, ...], bool, bool, tuple[str, ...]]:
    """Which checked fields an options class has: (positive fields, padding, fused activation, counts)."""
    fields = vars(options_class())
    return (tuple(f for f in _POSITIVE_OPTIONS if f in fields), "padding" in fields, "fusedActivationFunction" in fields,
            tuple(f for f in ("depthMultiplier", "num", "valuesCount") if f in fields))


def _count_text(low: int, high: int) -> str:
    if low == high:
        return str(low)
    return f"at least {low}" if high >= MANY else f"{low} to {high}"


def validate_model(model: schema.ModelT, source: str, *, file_size: int | None = None) -> None:
    """Raise :class:`ModelError` (one line naming ``source``) unless ``model`` is safe to hand to LiteRT.

    ``file_size``, when known, also bounds buffers and custom options stored after the flatbuffer.
    """
    _Checker(model, source, file_size).run()
