"""The operator rules as data: arity, options table, operand ranks, integer and shape inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.validate.common import MAX_RANK

PADDINGS = {v for k, v in vars(schema.Padding).items() if not k.startswith("_")}
ACTIVATIONS = {v for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
OPTIONS_NAMES = {v: k for k, v in vars(schema.BuiltinOptions).items() if not k.startswith("_")}


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
AXES_INPUT = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL"}
# Operators whose constant integer inputs (by index) must be INT32/INT64.
INTEGER_INPUTS: dict[str, tuple[int, ...]] = {
    **{name: (1,) for name in AXES_INPUT},
    "PAD": (1,), "PADV2": (1,), "MIRROR_PAD": (1,), "RESHAPE": (1,), "SPLIT": (0,), "SPLIT_V": (1, 2),
    "STRIDED_SLICE": (1, 2, 3), "SLICE": (1, 2), "TRANSPOSE": (1,), "EXPAND_DIMS": (1,), "TILE": (1,),
    "RESIZE_BILINEAR": (1,), "RESIZE_NEAREST_NEIGHBOR": (1,), "TRANSPOSE_CONV": (0,), "GATHER": (1,),
}
# Constant inputs (by index) that set an output shape.
SHAPE_INPUTS = {"RESHAPE": 1, "TILE": 1, "RESIZE_BILINEAR": 1, "RESIZE_NEAREST_NEIGHBOR": 1, "BROADCAST_TO": 1,
                 "FILL": 0, "TRANSPOSE_CONV": 0}
# Options fields that must be at least 1 (and at most MAX_WINDOW): a zero divides by zero in the kernels.
POSITIVE_OPTIONS = ("strideW", "strideH", "strideD", "dilationWFactor", "dilationHFactor", "dilationDFactor",
                     "filterWidth", "filterHeight", "blockSize", "numSplits")
SUBGRAPH_OPTIONS = ("condSubgraphIndex", "bodySubgraphIndex", "thenSubgraphIndex", "elseSubgraphIndex",
                     "initSubgraphIndex", "subgraph", "decompositionSubgraphIndex")


def count_text(low: int, high: int) -> str:
    if low == high:
        return str(low)
    return f"at least {low}" if high >= MANY else f"{low} to {high}"
