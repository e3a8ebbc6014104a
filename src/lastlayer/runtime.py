"""Run models with LiteRT: pick CPU (XNNPACK) or the Edge TPU, feed images, read scores.

:class:`Interpreter` wraps ``ai_edge_litert.interpreter.Interpreter`` with what every command
needs: device choice, quantizing pixels for uint8/int8/float32 inputs, dequantized outputs and
one-line errors. :func:`extract_embeddings` runs many image files through a model with decoding
overlapped with inference.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np
from ai_edge_litert import interpreter as litert
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import EdgeTpuError, ImageError, InferenceError, ModelError
from lastlayer.images import ImagePath, Size, load_resized
from lastlayer.model.io import load_model, model_to_bytes, read_model_bytes, verify_model_bytes
from lastlayer.model.names import EDGETPU_CUSTOM_CODE, custom_code

EDGETPU_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
ModelInput = Union[str, "os.PathLike[str]", bytes, schema.ModelT]


def edgetpu_library_name() -> str:
    """The Edge TPU runtime library for this operating system."""
    return EDGETPU_LIBRARIES.get(platform.system(), EDGETPU_LIBRARIES["Linux"])


def contains_edgetpu_op(model: schema.ModelT) -> bool:
    """True when any operator is the compiled ``edgetpu-custom-op``."""
    return any(custom_code(code) == EDGETPU_CUSTOM_CODE for code in (model.operatorCodes or []))


def load_edgetpu_delegate(model_name: str = "the model") -> litert.Delegate:
    """Load the Edge TPU delegate or raise :class:`EdgeTpuError` telling how to proceed."""
    library = edgetpu_library_name()
    advice = (
        f"{model_name} was compiled for the Edge TPU, but the Edge TPU runtime ({library}) {{}}; "
        "use the CPU build of the model (the same file without '_edgetpu'), or install the Edge TPU "
        "runtime (libedgetpu) and plug in the device"
    )
    try:
        # Probe with ctypes first: a failed load_delegate leaves a noisy half-built Delegate behind.
        ctypes.CDLL(library)
    except OSError:
        raise EdgeTpuError(advice.format("is not installed")) from None
    try:
        return litert.load_delegate(library)
    except (OSError, ValueError) as exc:
        raise EdgeTpuError(advice.format(f"could not open a device ({exc})")) from None


def _model_bytes_and_tree(model: ModelInput) -> tuple[bytes, schema.ModelT, str]:
    if isinstance(model, schema.ModelT):
        data = model_to_bytes(model)
        verify_model_bytes(data, "<edited model>")
        return data, model, "<edited model>"
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), load_model(bytes(model)), "<model bytes>"
    data = read_model_bytes(model)
    return data, load_model(data), str(model)


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
        model: a ``.tflite`` path, the model's bytes, or a ``ModelT``.
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
        data, tree, self.name = _model_bytes_and_tree(model)
        self.model_bytes = data
        self.uses_edgetpu = contains_edgetpu_op(tree)
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


def make_interpreter(model_path_or_content: ModelInput, device: str | None = None) -> litert.Interpreter:
    """PyCoral-compatible: a raw LiteRT interpreter, with the Edge TPU delegate only when needed.

    Unlike PyCoral's, it works on machines without an Edge TPU for CPU models. Call
    ``allocate_tensors()`` on the result as before.
    """
    del device  # kept for signature compatibility; one Edge TPU is used when needed
    return Interpreter(model_path_or_content).litert


def _prefetch(pool: ThreadPoolExecutor, paths: Sequence[ImagePath], size: Size, depth: int) -> Iterator[tuple[ImagePath, Future]]:
    """Yield (path, decoding future) in order while up to ``depth`` more decode in the background."""
    pending: list[tuple[ImagePath, Future]] = []
    items = iter(paths)
    for path in items:
        pending.append((path, pool.submit(load_resized, path, size)))
        if len(pending) >= depth:
            break
    try:
        while pending:
            current = pending.pop(0)
            nxt = next(items, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(load_resized, nxt, size)))
            yield current
    finally:
        for _, future in pending:
            future.cancel()


def extract_embeddings(
    interpreter: Interpreter,
    paths: Iterable[ImagePath],
    *,
    progress: bool = True,
    workers: int | None = None,
    description: str = "embedding",
    on_error: Callable[[ImagePath, ImageError], None] | None = None,
    latencies: list[float] | None = None,
) -> np.ndarray:
    """Run every image through ``interpreter``; return a float32 ``[n, output_size]`` array.

    Decoding and resizing run in a thread pool (Pillow releases the GIL) while the main thread
    invokes the model, so the interpreter is the bottleneck. A tqdm progress bar shows on stderr.
    An unreadable image raises :class:`ImageError`, unless ``on_error(path, error)`` is given:
    then it is called and that image's row is NaN. ``latencies`` collects each image's inference
    time (set input, invoke, read output) in seconds.
    """
    from tqdm.auto import tqdm

    paths = list(paths)
    result = np.empty((len(paths), interpreter.output_size), dtype=np.float32)
    workers = workers or max(1, min(4, (os.cpu_count() or 2) // 2))
    size = interpreter.input_size
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lastlayer-decode") as pool:
        images = _prefetch(pool, paths, size, depth=2 * workers + 2)
        bar = tqdm(images, total=len(paths), desc=description, unit="img", disable=not progress or len(paths) < 2, leave=False)
        for row, (path, future) in enumerate(bar):
            try:
                pixels = future.result()
            except ImageError as error:
                if on_error is None:
                    raise
                on_error(path, error)
                result[row] = np.nan
                continue
            start = time.perf_counter()
            result[row] = interpreter.run(pixels)
            if latencies is not None:
                latencies.append(time.perf_counter() - start)
    return result
