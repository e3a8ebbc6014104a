"""Which operators lastlayer runs, and the tensor types (and so the counts) of their inputs and outputs.

The table covers the Edge TPU's operators and those of the architectures lastlayer meets (MobileNet
v1-v3, EfficientNet, ResNet, Inception, SSD heads, the heads lastlayer writes). Any other builtin is
refused, and so are the custom operators LiteRT or XNNPACK run themselves but this table does not
check: their kernels trust their operands' types (a float SOFTMAX writing into a UINT8 output corrupts
the heap; a resource variable read from a missing input crashes in ``allocate_tensors``). Other custom
operators have no kernel in LiteRT, which refuses them when it prepares the model.

A signature reads like LiteRT's kernel documentation: ``"F F F? > F"`` is a FLOAT32 input, FLOAT32
weights, an optional FLOAT32 bias and a FLOAT32 output. Letters: ``F`` FLOAT32, ``H`` FLOAT16, ``U``
UINT8, ``B`` INT8, ``S`` INT16, ``I`` INT32, ``L`` INT64, ``Z`` BOOL, ``N`` INT4; ``U|B`` is either;
``T`` is one type of the signature's list, the same everywhere it appears. ``?`` marks an input that
may be omitted (``-1``, or left off the end), ``*`` a last slot that repeats (one or more times).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable, Sequence

from lastlayer.model.names import TENSOR_TYPE_NAMES
from lastlayer.model.validate.common import T

MANY = 10_000
LETTERS = {"F": T.FLOAT32, "H": T.FLOAT16, "U": T.UINT8, "B": T.INT8, "S": T.INT16, "I": T.INT32, "L": T.INT64,
           "Z": T.BOOL, "N": T.INT4}
QUANTIZED = frozenset({T.UINT8, T.INT8, T.INT16})  # activations of these types need quantization parameters
#: What a classifier or an extractor may take in and give out (main graph inputs and outputs).
GRAPH_INPUT_TYPES = frozenset({T.FLOAT32, T.UINT8, T.INT8, T.INT16})
GRAPH_OUTPUT_TYPES = frozenset({T.FLOAT32, T.UINT8, T.INT8, T.INT16, T.INT32, T.INT64})


@dataclass(frozen=True)
class Arity:
    """Input and output counts of a builtin; ``optional`` inputs may be ``-1`` (or left off the end)."""

    inputs: tuple[int, int]
    outputs: tuple[int, int] = (1, 1)
    optional: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Signature:
    """One combination of operand types an operator accepts."""

    inputs: tuple[frozenset[int], ...]
    outputs: tuple[frozenset[int], ...]
    optional: frozenset[int]
    repeat_inputs: bool
    repeat_outputs: bool

    def slot(self, role: str, position: int) -> frozenset[int] | None:
        """The types allowed at input/output ``position``, or ``None`` when there is no such slot."""
        slots, repeat = (self.inputs, self.repeat_inputs) if role == "input" else (self.outputs, self.repeat_outputs)
        if position < len(slots):
            return slots[position]
        return slots[-1] if repeat and slots else None

    def admits(self, role: str, position: int, kind: int | None) -> bool:
        allowed = self.slot(role, position)
        if kind is None:  # an omitted input
            return role == "input" and position in self.optional
        return allowed is not None and kind in allowed

    def fits(self, ins: Sequence[int | None], outs: Sequence[int | None]) -> bool:
        if len(ins) > len(self.inputs) and not self.repeat_inputs:
            return False
        if any(p not in self.optional for p in range(len(ins), len(self.inputs))):  # left off the end
            return False
        if len(outs) < len(self.outputs) or (len(outs) > len(self.outputs) and not self.repeat_outputs):
            return False
        return all(self.admits("input", p, k) for p, k in enumerate(ins)) and all(
            self.admits("output", p, k) for p, k in enumerate(outs))


def _slot(token: str) -> frozenset[int]:
    return frozenset(LETTERS[letter] for letter in token.split("|"))


def _parse(text: str) -> Signature:
    left, right = text.split(">")
    ins, outs = left.split(), right.split()
    optional = frozenset(i for i, token in enumerate(ins) if token.endswith("?"))
    repeat_in = bool(ins) and ins[-1].endswith("*")
    repeat_out = outs[-1].endswith("*")
    return Signature(tuple(_slot(t.rstrip("?*")) for t in ins), tuple(_slot(t.rstrip("*")) for t in outs), optional,
                     repeat_in, repeat_out)


def _sigs(*patterns: str, types: str = "") -> tuple[Signature, ...]:
    """Signatures from patterns; with ``types``, one per type letter substituted for ``T``."""
    expanded = [p.replace("T", letter) for p in patterns for letter in types.split()] if types else list(patterns)
    return tuple(_parse(p) for p in expanded)


NUMERIC = "F U B S I L"
ANY = "F U B S I L Z"  # data-movement operators copy any of these
_QUANT = "F U B S"

#: The signatures of every builtin operator lastlayer accepts, by name.
SIGNATURES: dict[str, tuple[Signature, ...]] = {
    # element-wise on two (broadcast) inputs
    **{name: _sigs("T T > T", types=NUMERIC) for name in ("ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM")},
    "DIV": _sigs("T T > T", types="F U I"),
    "SQUARED_DIFFERENCE": _sigs("T T > T", types="F B I"),
    "POW": _sigs("T T > T", types="F I"),
    "PRELU": _sigs("T T > T", types="F U B"),
    # element-wise on one input
    **{name: _sigs("T > T", types=_QUANT) for name in ("RELU", "RELU6", "LOGISTIC", "TANH", "LEAKY_RELU",
                                                      "AVERAGE_POOL_2D", "MAX_POOL_2D")},
    **{name: _sigs("T > T", types="F U B") for name in ("RELU_N1_TO_1", "RELU_0_TO_1", "HARD_SWISH", "GELU",
                                                        "L2_NORMALIZATION", "LOG_SOFTMAX")},
    "ELU": _sigs("T > T", types="F B"),
    "EXP": _sigs("T > T", types="F B S"),
    "RSQRT": _sigs("T > T", types="F B S"),
    "ABS": _sigs("T > T", types="F B S I"),
    "NEG": _sigs("T > T", types="F B I L"),
    **{name: _sigs("F > F") for name in ("SQRT", "SQUARE", "LOG", "LOCAL_RESPONSE_NORMALIZATION")},
    "SOFTMAX": _sigs("F > F", "U > U|S", "B > B|S", "S > S"),
    "QUANTIZE": _sigs("F > U|B|S", "U|B > U|B", "S > B|S"),
    "DEQUANTIZE": _sigs("U|B|S|H > F"),
    "CAST": _sigs("F|H|U|B|S|I|L|Z > F|H|U|B|S|I|L|Z"),
    # convolutions and dense layers (int8 weights under float activations: dynamic-range "hybrid" models)
    "CONV_2D": _sigs("F F F? > F", "F B F? > F", "U U I? > U", "B B|N I? > B", "S B I|L? > S"),
    "DEPTHWISE_CONV_2D": _sigs("F F F > F", "F B F > F", "U U I > U", "B B|N I > B", "S B I|L > S"),
    "TRANSPOSE_CONV": _sigs("I F F F? > F", "I U U I? > U", "I B B I? > B", "I B S I|L? > S"),
    "FULLY_CONNECTED": _sigs("F F F? > F", "F U|B F? > F", "U U I? > U|S", "B B|N I? > B", "S B I|L? > S"),
    "BATCH_MATMUL": _sigs("F F > F", "F B > F", "B B > B", "S S > S"),
    # reductions (axes are INT32)
    **{name: _sigs("T I > T", types=NUMERIC) for name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN")},
    "REDUCE_PROD": _sigs("T I > T", types="F B S I L"),
    **{name: _sigs("F|U|B|S|I|L I|L > I|L") for name in ("ARG_MAX", "ARG_MIN")},
    # shapes and data movement
    "RESHAPE": _sigs("T I? > T", types=ANY),
    "SQUEEZE": _sigs("T > T", types=ANY),
    "EXPAND_DIMS": _sigs("T I|L > T", types=ANY),
    "TRANSPOSE": _sigs("T I > T", types=ANY),
    "CONCATENATION": _sigs("T* > T", types=ANY),
    "PACK": _sigs("T* > T", types=ANY),
    "UNPACK": _sigs("T > T*", types=ANY),
    "SPLIT": _sigs("I T > T*", types=ANY),
    "SPLIT_V": _sigs("T I|L I > T*", types=ANY),
    "SLICE": _sigs("T I|L I|L > T", types=ANY),
    "STRIDED_SLICE": _sigs("T I|L I|L I|L > T", types=ANY),
    "PAD": _sigs("T I|L > T", types=NUMERIC),
    "PADV2": _sigs("T I|L T > T", types=NUMERIC),
    "MIRROR_PAD": _sigs("T I|L > T", types=NUMERIC),
    "SPACE_TO_DEPTH": _sigs("T > T", types="F U B I L"),
    "DEPTH_TO_SPACE": _sigs("T > T", types="F U B I L"),
    "RESIZE_BILINEAR": _sigs("T I > T", types=_QUANT),
    "RESIZE_NEAREST_NEIGHBOR": _sigs("T I > T", types=_QUANT),
    "TILE": _sigs("T I|L > T", types=ANY),
    "GATHER": _sigs("T I|L > T", types=ANY),
    "BROADCAST_TO": _sigs("T I|L > T", types=ANY),
    "FILL": _sigs("I|L T > T", types=ANY),
    "SHAPE": _sigs("F|U|B|S|I|L|Z > I|L"),
    # the Edge TPU's recurrent layer, float or with int8 weights (input, 8 weights, 3 peepholes, 4 biases,
    # projection weights and bias, output and cell state, 4 layer-norm weights)
    "UNIDIRECTIONAL_SEQUENCE_LSTM": _sigs(
        "F W? W W W W? W W W W? W? W? F? F F F W? F? F F F? F? F? F? > F".replace("W", "F|B|U")),
}

#: Custom operators with a kernel in LiteRT's resolver that lastlayer checks, with their signatures.
CUSTOM_SIGNATURES: dict[str, tuple[Signature, ...]] = {
    "TFLite_Detection_PostProcess": _sigs("F|U F|U F|U > F F F F"),
}
#: Custom operators LiteRT's resolver or its XNNPACK delegate run, unchecked here: refused.
NATIVE_CUSTOM_OPERATORS = frozenset({"NumericVerify", "Mfcc", "AudioSpectrogram", "Convolution2DTransposeBias",
                                     "MaxPoolingWithArgmax2D", "MaxUnpooling2D"})


def _arity(signatures: Iterable[Signature]) -> Arity:
    low_in = high_in = low_out = high_out = None
    optional: set[int] = set()
    for sig in signatures:
        required = [p for p in range(len(sig.inputs)) if p not in sig.optional]
        needed = (max(required) + 1) if required else 0
        most = MANY if sig.repeat_inputs else len(sig.inputs)
        outs = (len(sig.outputs), MANY if sig.repeat_outputs else len(sig.outputs))
        low_in = needed if low_in is None else min(low_in, needed)
        high_in = most if high_in is None else max(high_in, most)
        low_out = outs[0] if low_out is None else min(low_out, outs[0])
        high_out = outs[1] if high_out is None else max(high_out, outs[1])
        optional |= sig.optional
    return Arity((low_in or 0, high_in or 0), (low_out or 0, high_out or 0), frozenset(optional))


#: Input/output counts of every operator lastlayer accepts (derived from the signatures).
OPERATOR_ARITY: dict[str, Arity] = {name: _arity(sigs) for name, sigs in SIGNATURES.items()}
CUSTOM_ARITY: dict[str, Arity] = {name: _arity(sigs) for name, sigs in CUSTOM_SIGNATURES.items()}


def type_names(kinds: Iterable[int]) -> str:
    names = sorted(TENSOR_TYPE_NAMES.get(k, str(k)) for k in kinds)
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


@functools.lru_cache(maxsize=4096)
def type_mismatch(name: str, ins: tuple[int | None, ...], outs: tuple[int | None, ...]) -> tuple[str, int, str] | None:
    """``None`` when some signature of ``name`` fits these operand types; else what to blame:
    ``(role, position, allowed types)`` for the first operand no remaining signature admits."""
    signatures = SIGNATURES.get(name) or CUSTOM_SIGNATURES.get(name)
    if not signatures or any(sig.fits(ins, outs) for sig in signatures):
        return None
    candidates = list(signatures)
    for role, kinds in (("input", ins), ("output", outs)):
        for position, kind in enumerate(kinds):
            admitting = [sig for sig in candidates if sig.admits(role, position, kind)]
            if not admitting:
                allowed = set().union(*(sig.slot(role, position) or () for sig in candidates))
                return role, position, type_names(allowed) if allowed else "no tensor"
            candidates = admitting
    return "output", len(outs), "more outputs"
