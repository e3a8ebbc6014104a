"""Run one model with LiteRT on the CPU (XNNPACK) or the Edge TPU: feed images, read scores.

:class:`Interpreter` wraps ``ai_edge_litert.interpreter.Interpreter`` with what every command
needs: device choice, the input normalisation decided per model, quantizing pixels for
uint8/int8/float32 inputs laid out channels last or first (RGB or grey), dequantized outputs and
one-line errors.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from typing import Iterator, Union

import numpy as np
from ai_edge_litert import interpreter as litert
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import EdgeTpuError, InferenceError, ModelError
from lastlayer.images.decode import ImagePath, Size, load_resized
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.input_layout import InputLayout, image_layout, to_luminance
from lastlayer.model.normalization import DEFAULT, DegenerateOutputCheck, Normalization, Values, input_normalization
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
    from lastlayer.model.zoo import open_model  # a known name is found as the CLI finds it

    return open_model(model)


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


def _prepare_hint(message: str) -> str:
    """What to do when LiteRT cannot prepare a model, from what it said."""
    lowered = message.lower()
    if "custom op" in lowered or "unresolved" in lowered or "didn't find op" in lowered:
        return "the model needs an operator this LiteRT build does not have; export it with builtin operators only"
    return "re-export the model, or check it with 'lastlayer inspect'"


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity mask (``taskset``, cgroups cpusets) where the OS has one."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13+: the affinity-aware count
    if counter is not None:
        return max(1, counter() or 1)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class _OutputWatch:
    """The wrong-normalisation check of an interpreter, fed by every run of it and of its clones (one at a time)."""

    def __init__(self, check: DegenerateOutputCheck) -> None:
        self.check = check
        self._lock = threading.Lock()

    def observe(self, pixels: np.ndarray, output: np.ndarray) -> None:
        if self.check.done:  # after the first images: nothing more to do, and no lock taken
            return
        with self._lock:
            self.check.observe(pixels, output)


class Interpreter:
    """A ready-to-run model on the CPU or the Edge TPU.

    Args:
        model: a :class:`~lastlayer.model.file.ModelFile` (preferred: opened once), a ``.tflite``
            path, the model's bytes, or a ``ModelT``.
        num_threads: CPU threads for XNNPACK; default: the cores this process may use (:func:`usable_cores`).
        device: ``"auto"`` (Edge TPU when the model holds ``edgetpu-custom-op``), ``"cpu"``.
        input_mean, input_std: pixel normalisation ``(p - mean) / std``: one value or one per
            channel (a sequence or ``"a,b,c"``). ``None`` (the default) decides from the model: its
            TFLite metadata, else its input quantization, else PyCoral's (128, 128); see
            :func:`lastlayer.model.normalization.input_normalization`.
        normalization: an already decided :class:`~lastlayer.model.normalization.Normalization`
            (e.g. decided on a classifier and used for its cut extractor); overrides the two above.
        preserve_all_tensors: keep intermediate tensors readable (slower; for debugging and tests).
        extra_outputs: indices of intermediate tensors (subgraph 0) to read with every image, e.g.
            the embedding an unknown rule needs. lastlayer then runs an in-memory copy of the model
            with them as extra graph outputs (the file is not touched), and :meth:`run` /
            :meth:`output` return output 0 followed by each of them, flattened into one vector of
            :attr:`output_size` values (:attr:`output_sizes` says where each part starts).

    Images are always handed in as ``HxWx3`` uint8 RGB; channels-first (``[1, C, H, W]``) and grey
    (one channel) inputs are transposed / converted when the tensor is set.
    """

    def __init__(
        self,
        model: ModelInput,
        *,
        num_threads: int | None = None,
        device: str = "auto",
        input_mean: Values | str | None = None,
        input_std: Values | str | None = None,
        normalization: Normalization | None = None,
        preserve_all_tensors: bool = False,
        extra_outputs: tuple[int, ...] = (),
    ) -> None:
        self.model = as_model_file(model)
        self.device = device
        self.preserve_all_tensors = preserve_all_tensors
        self.name = self.model.name
        self.extra_outputs = tuple(int(i) for i in extra_outputs)
        running = self.model
        if self.extra_outputs:
            from lastlayer.model.unknown import expose_tensors

            running = expose_tensors(self.model, self.extra_outputs)
        self.model_bytes = data = running.data
        self.uses_edgetpu = self.model.edgetpu
        if self.uses_edgetpu and device == "cpu":
            raise EdgeTpuError(f"{self.name} was compiled for the Edge TPU and cannot run on the CPU; use its CPU build")
        delegates = [load_edgetpu_delegate(self.name)] if self.uses_edgetpu else None
        self.num_threads = num_threads or usable_cores()
        self.normalization = normalization or input_normalization(self.model, input_mean, input_std)
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
            raise InferenceError(f"cannot prepare {self.name}: {_first_line(exc)}; {_prepare_hint(str(exc))}") from None
        self.input_details = self.litert.get_input_details()
        self.output_details = self.litert.get_output_details()
        if len(self.input_details) != 1:
            raise ModelError(f"{self.name} has {len(self.input_details)} inputs; lastlayer needs a model with one image input")
        self._layout: InputLayout | None = None
        self._watch: _OutputWatch | None = None
        if self.normalization.source == DEFAULT and self.input_details[0]["dtype"] == np.float32 \
                and self.model.kind is ModelKind.EXTRACTOR:
            self._watch = _OutputWatch(DegenerateOutputCheck(self.name))

    def clone(self, num_threads: int | None = None) -> Interpreter:
        """A second, independent interpreter of the same model, fed the same way (e.g. one per core in a pool).

        It shares the model bytes and the decided normalisation but has its own tensors, so the two can
        run at the same time in different threads (LiteRT releases the GIL while invoking). It also
        shares the degenerate-output check: the first images run on either feed it. An Edge TPU model
        has one device: run it from one interpreter instead of cloning it.
        """
        twin = Interpreter(self.model, num_threads=num_threads or self.num_threads, device=self.device,
                           normalization=self.normalization, preserve_all_tensors=self.preserve_all_tensors,
                           extra_outputs=self.extra_outputs)
        twin._watch = self._watch
        return twin

    @property
    def degenerate_check(self) -> DegenerateOutputCheck | None:
        """The pending check of the first images' embeddings (float extractors fed by the default), or ``None``.

        Every :meth:`run` of this interpreter or its clones feeds it; an embedding cache may conclude it
        from an earlier run's measurement (``recall``) and keep its ``spreads``.
        """
        check = self._watch.check if self._watch is not None else None
        return check if check is not None and not check.done else None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input_details[0]["shape"])

    @property
    def layout(self) -> InputLayout:
        """Where height, width and channels are in the image input (raises if it is no image input)."""
        if self._layout is None:
            self._layout = image_layout(self.input_shape, self.name)
        return self._layout

    @property
    def input_size(self) -> Size:
        """(width, height) of the image input, channels last or first; raises if the input is no image."""
        return self.layout.size

    @property
    def input_mean(self) -> tuple[float, ...]:
        return self.normalization.mean

    @property
    def input_std(self) -> tuple[float, ...]:
        return self.normalization.std

    @property
    def cache_key(self) -> bytes:
        """What decides this interpreter's outputs for an image: the model bytes and how pixels are fed."""
        fed = f"|{self.normalization.mean}|{self.normalization.std}|{self.layout.describe()}"
        return self.model_bytes + fed.encode()

    @property
    def output_size(self) -> int:
        """Number of values in output 0 (classes for a classifier, features for an extractor), plus those of
        the ``extra_outputs`` when there are any (what :meth:`run` returns)."""
        return sum(self.output_sizes)

    @property
    def output_sizes(self) -> list[int]:
        """Values in output 0 and in each extra output, in the order :meth:`run` returns them."""
        count = 1 + len(self.extra_outputs) if self.extra_outputs else 1
        return [int(np.prod(detail["shape"])) for detail in self.output_details[:count]]

    def quantize_input(self, pixels: np.ndarray) -> np.ndarray:
        """Map ``HxWxC`` uint8 pixels (C = the input's channels) to the input tensor's dtype and quantization."""
        detail = self.input_details[0]
        dtype = detail["dtype"]
        mean, std = self.normalization.per_channel(pixels.shape[-1], self.name)
        if dtype == np.float32:
            return ((pixels.astype(np.float32) - mean) / std).astype(np.float32)
        scale, zero_point = detail["quantization"]
        info = np.iinfo(dtype)
        offset = 128 if dtype == np.int8 else 0
        # Within one quantization step of the raw pixels (shifted by -128 for int8), the raw pixels are fed,
        # as PyCoral and TFLite's task library do for quantized inputs.
        low = (0.0 - mean) / (std * scale) + zero_point
        high = (255.0 - mean) / (std * scale) + zero_point
        if scale and np.all(np.abs(low - (0 - offset)) <= 1 + 1e-6) and np.all(np.abs(high - (255 - offset)) <= 1 + 1e-6):
            return pixels.astype(dtype, copy=False) if offset == 0 else (pixels.astype(np.int16) - offset).astype(dtype)
        values = (pixels.astype(np.float32) - mean) / (std * scale) + zero_point
        return np.clip(np.round(values), info.min, info.max).astype(dtype)

    def input_tensor(self, pixels: np.ndarray) -> np.ndarray:
        """The input tensor for ``HxWx3`` uint8 RGB pixels: grey if the input has one channel, normalised, laid out."""
        layout = self.layout
        expected = (layout.height, layout.width, 3)
        if tuple(pixels.shape) != expected:
            raise ModelError(f"{self.name} expects an image of shape {list(expected)}, got {list(pixels.shape)}")
        if layout.channels == 1:
            pixels = to_luminance(pixels)
        return layout.arrange(self.quantize_input(pixels))

    def set_image(self, pixels: np.ndarray) -> None:
        """Set input 0 from an HxWx3 uint8 RGB array already resized to :attr:`input_size`."""
        self.litert.set_tensor(self.input_details[0]["index"], self.input_tensor(pixels))

    def invoke(self) -> None:
        try:
            self.litert.invoke()
        except (RuntimeError, ValueError) as exc:
            raise InferenceError(f"running {self.name} failed: {_first_line(exc)}") from None

    def raw_output(self, index: int = 0) -> np.ndarray:
        """Output ``index`` as stored (quantized for uint8/int8 models), flattened."""
        return self.litert.get_tensor(self.output_details[index]["index"]).reshape(-1)

    def output(self, index: int | None = None) -> np.ndarray:
        """Output ``index`` dequantized to float32, flattened; by default output 0 followed by the extra outputs."""
        if index is None:
            if not self.extra_outputs:
                return self.output(0)
            return np.concatenate([self.output(i) for i in range(1 + len(self.extra_outputs))])
        detail = self.output_details[index]
        values = self.raw_output(index)
        if values.dtype in (np.uint8, np.int8, np.int16, np.int32):
            scale, zero_point = detail["quantization"]
            if scale:
                return (scale * (values.astype(np.float32) - zero_point)).astype(np.float32)
        return values.astype(np.float32)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Set the image, invoke, and return the dequantized output 0 (and the extra outputs, see ``extra_outputs``)."""
        self.set_image(pixels)
        self.invoke()
        result = self.output()
        if self._watch is not None:
            self._watch.observe(pixels, result)
        return result

    def run_file(self, path: ImagePath) -> np.ndarray:
        """Load, resize and run one image file; return what :meth:`run` returns."""
        return self.run(load_resized(path, self.input_size))
