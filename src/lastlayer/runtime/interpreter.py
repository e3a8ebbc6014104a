"""Run one model with LiteRT on the CPU (XNNPACK) or the Edge TPU: feed images, read scores.

:class:`Interpreter` wraps ``ai_edge_litert.interpreter.Interpreter`` with what every command
needs: device choice, quantizing pixels for uint8/int8/float32 inputs, dequantized outputs and
one-line errors.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Iterator, Union

import numpy as np
from ai_edge_litert import interpreter as litert
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import EdgeTpuError, InferenceError, ModelError
from lastlayer.images import ImagePath, Size, load_resized
from lastlayer.model.file import ModelFile
from lastlayer.runtime.delegate import load_edgetpu_delegate

ModelInput = Union[ModelFile, str, "os.PathLike[str]", bytes, schema.ModelT]


def as_model_file(model: ModelInput) -> ModelFile:
    """``model`` as a :class:`ModelFile` (opened from a path or bytes, or packed from a tree, once)."""
    if isinstance(model, ModelFile):
        return model
    if isinstance(model, schema.ModelT):
        return ModelFile.from_tree(model)
    if isinstance(model, (bytes, bytearray)):
        return ModelFile.from_bytes(bytes(model))
    return ModelFile.read(model)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Hide LiteRT's native INFO lines (e.g. "Created TensorFlow Lite XNNPACK delegate") on fd 2.

    Errors still arrive as Python exceptions, so nothing a user needs is lost.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class Interpreter:
    """A ready-to-run model on the CPU or the Edge TPU.

    Args:
        model: a :class:`~lastlayer.model.file.ModelFile` (preferred: opened once), a ``.tflite``
            path, the model's bytes, or a ``ModelT``.
        num_threads: CPU threads for XNNPACK; default: all cores.
        device: ``"auto"`` (Edge TPU when the model holds ``edgetpu-custom-op``), ``"cpu"``.
        input_mean, input_std: pixel normalisation the model was trained with, ``(p - mean) / std``.
            The defaults (128, 128) match PyCoral and give raw pixels for the usual uint8 models.
        preserve_all_tensors: keep intermediate tensors readable (slower; for debugging and tests).
    """

    def __init__(
        self,
        model: ModelInput,
        *,
        num_threads: int | None = None,
        device: str = "auto",
        input_mean: float = 128.0,
        input_std: float = 128.0,
        preserve_all_tensors: bool = False,
    ) -> None:
        self.model = as_model_file(model)
        self.name = self.model.name
        self.model_bytes = data = self.model.data
        self.uses_edgetpu = self.model.edgetpu
        if self.uses_edgetpu and device == "cpu":
            raise EdgeTpuError(f"{self.name} was compiled for the Edge TPU and cannot run on the CPU; use its CPU build")
        delegates = [load_edgetpu_delegate(self.name)] if self.uses_edgetpu else None
        self.num_threads = num_threads or os.cpu_count() or 1
        self.input_mean, self.input_std = float(input_mean), float(input_std)
        try:
            with _native_stderr_silenced(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")  # asked for explicitly
                self.litert = litert.Interpreter(
                    model_content=data,
                    experimental_delegates=delegates,
                    num_threads=self.num_threads,
                    experimental_preserve_all_tensors=preserve_all_tensors,
                )
                self.litert.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise InferenceError(f"cannot prepare {self.name}: {_first_line(exc)}") from None
        self.input_details = self.litert.get_input_details()
        self.output_details = self.litert.get_output_details()
        if len(self.input_details) != 1:
            raise ModelError(f"{self.name} has {len(self.input_details)} inputs; lastlayer needs a model with one image input")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input_details[0]["shape"])

    @property
    def input_size(self) -> Size:
        """(width, height) of the image input; raises if the input is not ``[1, H, W, C]``."""
        shape = self.input_shape
        if len(shape) != 4 or shape[0] != 1:
            raise ModelError(f"{self.name} input has shape {list(shape)}; an image model needs [1, height, width, channels]")
        return shape[2], shape[1]

    @property
    def output_size(self) -> int:
        """Number of values in output 0 (classes for a classifier, features for an extractor)."""
        return int(np.prod(self.output_details[0]["shape"]))

    def quantize_input(self, pixels: np.ndarray) -> np.ndarray:
        """Map uint8 RGB pixels to the input tensor's dtype and quantization."""
        detail = self.input_details[0]
        dtype = detail["dtype"]
        if dtype == np.float32:
            return ((pixels.astype(np.float32) - self.input_mean) / self.input_std).astype(np.float32)
        scale, zero_point = detail["quantization"]
        info = np.iinfo(dtype)
        # A uint8 input quantized exactly like the normalisation takes the raw pixels (PyCoral's rule).
        offset = 128 if dtype == np.int8 else 0
        if abs(scale * self.input_std - 1) < 1e-5 and abs(self.input_mean - (zero_point + offset)) < 1e-5:
            return pixels.astype(dtype, copy=False) if offset == 0 else (pixels.astype(np.int16) - offset).astype(dtype)
        values = (pixels.astype(np.float32) - self.input_mean) / (self.input_std * scale) + zero_point
        return np.clip(np.round(values), info.min, info.max).astype(dtype)

    def set_image(self, pixels: np.ndarray) -> None:
        """Set input 0 from an HxWx3 uint8 array already resized to :attr:`input_size`."""
        expected = self.input_shape[1:]
        if tuple(pixels.shape) != expected:
            raise ModelError(f"{self.name} expects an image of shape {list(expected)}, got {list(pixels.shape)}")
        self.litert.set_tensor(self.input_details[0]["index"], self.quantize_input(pixels)[np.newaxis])

    def invoke(self) -> None:
        try:
            self.litert.invoke()
        except (RuntimeError, ValueError) as exc:
            raise InferenceError(f"running {self.name} failed: {_first_line(exc)}") from None

    def raw_output(self, index: int = 0) -> np.ndarray:
        """Output ``index`` as stored (quantized for uint8/int8 models), flattened."""
        return self.litert.get_tensor(self.output_details[index]["index"]).reshape(-1)

    def output(self, index: int = 0) -> np.ndarray:
        """Output ``index`` dequantized to float32, flattened."""
        detail = self.output_details[index]
        values = self.raw_output(index)
        if values.dtype in (np.uint8, np.int8, np.int16, np.int32):
            scale, zero_point = detail["quantization"]
            if scale:
                return (scale * (values.astype(np.float32) - zero_point)).astype(np.float32)
        return values.astype(np.float32)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Set the image, invoke, and return the dequantized output 0."""
        self.set_image(pixels)
        self.invoke()
        return self.output()

    def run_file(self, path: ImagePath) -> np.ndarray:
        """Load, resize and run one image file; return the dequantized output 0."""
        return self.run(load_resized(path, self.input_size))


