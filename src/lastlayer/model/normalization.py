"""How a model wants its pixels: the input normalisation ``(pixel - mean) / std``, decided in one place.

:func:`input_normalization` decides, for one :class:`~lastlayer.model.file.ModelFile`, in this order:

1. **option**: a mean and/or std given by the caller (one value, or one per channel); a value not
   given comes from the rules below;
2. **metadata**: the ``NormalizationOptions`` of the input in the model's TFLite metadata (Model
   Maker, MediaPipe, and every model lastlayer writes);
3. **input quantization**: a quantized input (or a float input whose first operator is a QUANTIZE)
   whose quantization covers clearly a pixel range: 0..255 (e.g. scale 1, zero point 0) means raw
   pixels, ``mean 0, std 1``; 0..1 means ``mean 0, std 255``;
4. **default**: PyCoral's ``mean 128, std 128`` (raw pixels for the usual uint8 models quantized
   with scale 1/128, zero point 128). A float input on the default is checked once on its first
   images by :class:`DegenerateOutputCheck`, which warns when its embeddings hardly differ.

The result is a :class:`Normalization` that says its source and why, for ``inspect`` and reports.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import LastLayerError
from lastlayer.model.file import ModelFile
from lastlayer.model.input_layout import image_layout
from lastlayer.model.names import operator_name
from lastlayer.model.tflite_metadata import read_input_normalization

OPTION, METADATA, QUANTIZATION, DEFAULT = "option", "metadata", "input quantization", "default"
DEFAULT_MEAN, DEFAULT_STD = 128.0, 128.0
Values = Union[float, Sequence[float]]

# A quantized input "clearly" covers a pixel range when both ends of the float range it implies are
# within this share of the range's width of 0..255 (or 0..1).
_RANGE_TOLERANCE = 0.02
_PIXEL_RANGES = (((0.0, 255.0), (0.0, 1.0), "0..255: raw pixels"), ((0.0, 1.0), (0.0, 255.0), "0..1: pixels / 255"))


class NormalizationError(LastLayerError, ValueError):
    """A normalisation that cannot be used (wrong number of values, a zero std...)."""


class NormalizationWarning(UserWarning):
    """A float extractor's embeddings hardly differ across different images: its normalisation is probably wrong."""


@dataclass(frozen=True)
class Normalization:
    """``(pixel - mean) / std`` per channel (one value applies to every channel), and where it came from.

    Attributes:
        mean, std: one value, or one per input channel.
        source: ``"option"``, ``"metadata"``, ``"input quantization"`` or ``"default"``.
        reason: one phrase saying why (shown by ``inspect``).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    reason: str = ""

    def per_channel(self, channels: int, name: str = "the model") -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` as float32 arrays of ``channels`` values, or a :class:`NormalizationError`."""
        out = []
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise NormalizationError(f"{name} takes {channels}-channel images but the input {label} has {len(values)} values "
                                         f"({_text(values)}); give one value or {channels}", subject="normalization")
            out.append(np.broadcast_to(np.asarray(values, dtype=np.float32), (channels,)).copy())
        return out[0], out[1]

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "source": self.source, "reason": self.reason}

    def describe(self) -> str:
        """E.g. ``mean 127.5, std 127.5 (metadata: NormalizationOptions of the input)``."""
        return f"mean {_text(self.mean)}, std {_text(self.std)} ({self.source}" + (f": {self.reason})" if self.reason else ")")


def _text(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def as_values(values: Values | str | None, label: str = "value") -> tuple[float, ...] | None:
    """One number, a sequence, or ``"a,b,c"`` text as a tuple of finite floats (``None`` stays ``None``)."""
    if values is None:
        return None
    if isinstance(values, str):
        parts = [p.strip() for p in values.split(",")]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise NormalizationError(f"input {label} {values!r} is not a number or a comma-separated list of numbers",
                                     subject="normalization") from None
    result = tuple(float(v) for v in np.atleast_1d(np.asarray(values, dtype=np.float64)).reshape(-1))
    if not result or not all(math.isfinite(v) for v in result):
        raise NormalizationError(f"input {label} must be finite numbers, got {list(result)}", subject="normalization")
    return result


def _input_tensor(tree: schema.ModelT) -> schema.TensorT | None:
    graph = tree.subgraphs[0] if tree.subgraphs else None
    if graph is None or len(graph.inputs or []) != 1:
        return None
    return graph.tensors[graph.inputs[0]]


def input_quantization(tree: schema.ModelT) -> tuple[float, int, bool, str] | None:
    """``(scale, zero_point, unsigned, where)`` of the input's per-tensor quantization, or ``None`` for a float input.

    A float input consumed by a QUANTIZE (full-integer models with float I/O) has the QUANTIZE's output
    quantization: that is the range the model was calibrated on.
    """
    graph = tree.subgraphs[0] if tree.subgraphs else None
    tensor = _input_tensor(tree)
    if tensor is None:
        return None
    where = "input"
    if tensor.type == schema.TensorType.FLOAT32:
        index = int(graph.inputs[0])
        consumers = [op for op in graph.operators or [] if index in [int(i) for i in op.inputs]]
        if len(consumers) != 1 or operator_name(tree.operatorCodes[consumers[0].opcodeIndex]) != "QUANTIZE":
            return None
        tensor, where = graph.tensors[consumers[0].outputs[0]], "QUANTIZE after the float input"
    if tensor.type not in (schema.TensorType.UINT8, schema.TensorType.INT8):
        return None
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) != 1 or q.zeroPoint is None or len(q.zeroPoint) != 1:
        return None
    return float(q.scale[0]), int(q.zeroPoint[0]), tensor.type == schema.TensorType.UINT8, where


def _from_quantization(tree: schema.ModelT) -> Normalization | None:
    found = input_quantization(tree)
    if found is None:
        return None
    scale, zero_point, unsigned, where = found
    low, high = (0, 255) if unsigned else (-128, 127)
    implied = (scale * (low - zero_point), scale * (high - zero_point))
    for (lo, hi), (mean, std), meaning in _PIXEL_RANGES:
        width = hi - lo
        if abs(implied[0] - lo) <= _RANGE_TOLERANCE * width and abs(implied[1] - hi) <= _RANGE_TOLERANCE * width:
            reason = f"{where} (scale {scale:g}, zero point {zero_point}) covers {meaning}"
            return Normalization((mean,), (std,), QUANTIZATION, reason)
    return None


def automatic_normalization(model: ModelFile) -> Normalization:
    """The normalisation from the model alone: metadata, else input quantization, else the default."""
    tree = model.tree
    found = read_input_normalization(tree)
    if found is not None:
        return Normalization(tuple(found[0]), tuple(found[1]), METADATA, "NormalizationOptions of the input in the TFLite metadata")
    by_quantization = _from_quantization(tree)
    if by_quantization is not None:
        return by_quantization
    tensor = _input_tensor(tree)
    is_float = tensor is not None and tensor.type == schema.TensorType.FLOAT32
    reason = "PyCoral's; a float input without metadata, checked on the first images" if is_float else "PyCoral's"
    return Normalization((DEFAULT_MEAN,), (DEFAULT_STD,), DEFAULT, reason)


def input_normalization(model: ModelFile, mean: Values | str | None = None, std: Values | str | None = None) -> Normalization:
    """The normalisation to feed ``model`` with: ``mean`` / ``std`` when given, else decided from the model.

    See the module docstring for the order. A value given for one of the two takes the other from the
    model. Values are checked against the input's channels and ``std`` must not be zero.
    """
    chosen_mean, chosen_std = as_values(mean, "mean"), as_values(std, "std")
    auto = automatic_normalization(model)
    if chosen_mean is None and chosen_std is None:
        result = auto
    else:
        given = " and ".join(label for label, v in (("mean", chosen_mean), ("std", chosen_std)) if v is not None)
        reason = f"{given} given" + ("" if chosen_mean is not None and chosen_std is not None else f"; the {auto.source} for the rest")
        result = Normalization(chosen_mean or auto.mean, chosen_std or auto.std, OPTION, reason)
    if any(s == 0 for s in result.std):
        raise NormalizationError(f"an input std of 0 would divide by zero ({_text(result.std)}); give a non-zero std",
                                 subject="normalization")
    tensor = _input_tensor(model.tree)
    if tensor is not None:
        try:
            channels = image_layout(tensor.shape, model.name).channels
        except LastLayerError:
            return result  # not an image input: the interpreter says so when it is fed
        result.per_channel(channels, model.name)
    return result


# --- the check of a float model fed with the default ---------------------------------------------

# The ratio of the embeddings' relative spread to the images' relative spread, measured on the test
# corpus (tests/model/test_normalization.py; 8 photos: mixed flowers, one flower class, the sample images):
# float MobileNet v1/v2 extractors (the shared models with dequantized weights) fed correctly 1.13-1.65,
# fed 127.5x too small values 0.06-0.47; small synthetic extractors 0.88-1.1 and 0.005-0.016.
DEGENERATE_RATIO = 0.7
CHECK_IMAGES = 8
_MIN_IMAGE_SPREAD = 0.05  # images this alike (a still camera) say nothing about the model


def relative_spread(rows: np.ndarray) -> float:
    """Root-mean-square distance of the rows from their mean, over the mean row's norm (plus the spread)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    centre = rows.mean(axis=0)
    spread = float(np.sqrt(np.mean(np.sum((rows - centre) ** 2, axis=1))))
    return spread / (float(np.linalg.norm(centre)) + spread + 1e-12)


class DegenerateOutputCheck:
    """Watches an extractor's first :data:`CHECK_IMAGES` images and warns once if its embeddings hardly differ.

    ``observe(pixels, output)`` after each run; it keeps a small copy of each and stops looking after the check.
    """

    def __init__(self, name: str, images: int = CHECK_IMAGES) -> None:
        self.name, self.images = name, images
        self.done = False
        self.ratio: float | None = None
        self._pixels: list[np.ndarray] = []
        self._outputs: list[np.ndarray] = []

    def observe(self, pixels: np.ndarray, output: np.ndarray) -> None:
        if self.done:
            return
        small = np.asarray(pixels, dtype=np.float32)[::4, ::4].reshape(-1)
        self._pixels.append(small)
        self._outputs.append(np.asarray(output, dtype=np.float64).reshape(-1).copy())
        if len(self._pixels) < self.images:
            return
        image_spread = relative_spread(np.stack(self._pixels))
        output_spread = relative_spread(np.stack(self._outputs))
        self._pixels, self._outputs = [], []
        self.recall(output_spread, image_spread)

    @property
    def spreads(self) -> tuple[float, float] | None:
        """(embedding spread, image spread) once the check ran on images that differ; else ``None``."""
        return getattr(self, "_spreads", None)

    def recall(self, output_spread: float, image_spread: float) -> None:
        """Conclude the check from measured spreads (also from an earlier run's, kept beside cached embeddings)."""
        self.done = True
        if image_spread < _MIN_IMAGE_SPREAD:
            return
        self._spreads = (float(output_spread), float(image_spread))
        self.ratio = output_spread / image_spread
        if self.ratio < DEGENERATE_RATIO:
            warnings.warn(
                f"{self.name}: the embeddings of {self.images} different images hardly differ (spread {output_spread:.2g} against "
                f"the images' {image_spread:.2g}): the model probably expects other input values than (pixel - 128) / 128; "
                "give the input mean and std it was trained with (mean 0 and std 1 for models that take 0..255 pixels)",
                NormalizationWarning, stacklevel=3)
