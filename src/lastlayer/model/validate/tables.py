"""The operator rules as data: custom options, options tables, operand ranks, integer inputs."""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.validate.common import MAX_RANK
from lastlayer.model.validate.signatures import MANY

PADDINGS = {v for k, v in vars(schema.Padding).items() if not k.startswith("_")}
ACTIVATIONS = {v for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
OPTIONS_NAMES = {v: k for k, v in vars(schema.BuiltinOptions).items() if not k.startswith("_")}

#: The keys the FlexBuffer options of a custom operator LiteRT runs itself must hold (its kernel reads them
#: without any check).
CUSTOM_OPTIONS: dict[str, dict[str, str]] = {
    "TFLite_Detection_PostProcess": {
        "max_detections": "count", "max_classes_per_detection": "count", "num_classes": "count",
        "nms_score_threshold": "float", "nms_iou_threshold": "float",
        "y_scale": "scale", "x_scale": "scale", "h_scale": "scale", "w_scale": "scale"},
}

#: The options table each operator carries: (name, required). A required table missing, or a table of
#: another type, is refused; an operator without an entry carries none.
OPERATOR_OPTIONS: dict[str, tuple[str, bool]] = {
    # kernels that divide by or loop over these options' values: the table must be there
    "CONV_2D": ("Conv2DOptions", True),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", True),
    "AVERAGE_POOL_2D": ("Pool2DOptions", True),
    "MAX_POOL_2D": ("Pool2DOptions", True),
    "TRANSPOSE_CONV": ("TransposeConvOptions", True),
    "SPACE_TO_DEPTH": ("SpaceToDepthOptions", True),
    "DEPTH_TO_SPACE": ("DepthToSpaceOptions", True),
    "SPLIT": ("SplitOptions", True),
    "SPLIT_V": ("SplitVOptions", True),
    "UNPACK": ("UnpackOptions", True),
    "PACK": ("PackOptions", True),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": ("UnidirectionalSequenceLSTMOptions", True),
    # defaults are fine
    **{name: (f"{name.title()}Options", False) for name in ("ADD", "SUB", "MUL", "DIV", "POW", "ABS", "NEG", "EXP", "GELU", "CAST",
                                                            "SHAPE", "TILE", "FILL", "SLICE", "GATHER", "QUANTIZE", "DEQUANTIZE",
                                                            "SQUARE", "RESHAPE", "SQUEEZE", "TRANSPOSE", "SOFTMAX", "PAD")},
    "MAXIMUM": ("MaximumMinimumOptions", False),
    "MINIMUM": ("MaximumMinimumOptions", False),
    "SQUARED_DIFFERENCE": ("SquaredDifferenceOptions", False),
    "HARD_SWISH": ("HardSwishOptions", False),
    "LEAKY_RELU": ("LeakyReluOptions", False),
    "L2_NORMALIZATION": ("L2NormOptions", False),
    "LOCAL_RESPONSE_NORMALIZATION": ("LocalResponseNormalizationOptions", False),
    "LOG_SOFTMAX": ("LogSoftmaxOptions", False),
    "FULLY_CONNECTED": ("FullyConnectedOptions", False),
    "BATCH_MATMUL": ("BatchMatMulOptions", False),
    "CONCATENATION": ("ConcatenationOptions", False),
    **{name: ("ReducerOptions", False) for name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD")},
    "ARG_MAX": ("ArgMaxOptions", False),
    "ARG_MIN": ("ArgMinOptions", False),
    "EXPAND_DIMS": ("ExpandDimsOptions", False),
    "STRIDED_SLICE": ("StridedSliceOptions", False),
    "PADV2": ("PadV2Options", False),
    "MIRROR_PAD": ("MirrorPadOptions", False),
    "RESIZE_BILINEAR": ("ResizeBilinearOptions", False),
    "RESIZE_NEAREST_NEIGHBOR": ("ResizeNearestNeighborOptions", False),
    "BROADCAST_TO": ("BroadcastToOptions", False),
}

#: Allowed rank ranges of operands, by operator: {input index: (min, max)} (missing optional inputs are skipped).
OPERAND_RANKS: dict[str, dict[int, tuple[int, int]]] = {
    "CONV_2D": {0: (4, 4), 1: (4, 4), 2: (1, 1)},
    "DEPTHWISE_CONV_2D": {0: (4, 4), 1: (4, 4), 2: (1, 1)},
    "TRANSPOSE_CONV": {0: (1, 1), 1: (4, 4), 2: (4, 4), 3: (1, 1)},
    "FULLY_CONNECTED": {0: (1, MAX_RANK), 1: (2, 2), 2: (1, 1)},
    "AVERAGE_POOL_2D": {0: (4, 4)},
    "MAX_POOL_2D": {0: (4, 4)},
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
    "REDUCE_PROD": {1: (0, 1)},
    "STRIDED_SLICE": {1: (1, 1), 2: (1, 1), 3: (1, 1)},
    "SLICE": {1: (1, 1), 2: (1, 1)},
}
# Operators whose constant integer inputs (by index) must be INT32/INT64.
INTEGER_INPUTS: dict[str, tuple[int, ...]] = {
    **{name: (1,) for name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD")},
    "PAD": (1,), "PADV2": (1,), "MIRROR_PAD": (1,), "RESHAPE": (1,), "SPLIT": (0,), "SPLIT_V": (1, 2),
    "STRIDED_SLICE": (1, 2, 3), "SLICE": (1, 2), "TRANSPOSE": (1,), "EXPAND_DIMS": (1,), "TILE": (1,),
    "RESIZE_BILINEAR": (1,), "RESIZE_NEAREST_NEIGHBOR": (1,), "TRANSPOSE_CONV": (0,), "GATHER": (1,),
}
# Options fields that must be at least 1 (and at most MAX_WINDOW): a zero divides by zero in the kernels.
POSITIVE_OPTIONS = ("strideW", "strideH", "strideD", "dilationWFactor", "dilationHFactor", "dilationDFactor",
                     "filterWidth", "filterHeight", "blockSize", "numSplits")
SUBGRAPH_OPTIONS = ("condSubgraphIndex", "bodySubgraphIndex", "thenSubgraphIndex", "elseSubgraphIndex",
                     "initSubgraphIndex", "subgraph", "decompositionSubgraphIndex")


def count_text(low: int, high: int) -> str:
    if low == high:
        return str(low)
    return f"at least {low}" if high >= MANY else f"{low} to {high}"
