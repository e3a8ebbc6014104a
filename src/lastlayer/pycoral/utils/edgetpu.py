"""Interpreters for CPU and Edge TPU models; mirrors ``pycoral.utils.edgetpu``.

:func:`make_interpreter` returns a plain ``ai_edge_litert.interpreter.Interpreter`` (the successor of
``tflite_runtime``), so every adapter and every ``interpreter.*`` call of a ported script works.
Unlike PyCoral it loads the Edge TPU delegate only when the model holds ``edgetpu-custom-op``: CPU
models run on hosts without an Edge TPU or its runtime (PYCORAL.md section 9, item 17). A missing
runtime or device raises :class:`EdgeTpuUnavailableError`, a ``ValueError`` like the one
``load_delegate`` raised in PyCoral, whose message says how to proceed.

Not provided: ``invoke_with_dmabuffer`` (Linux DMA buffers of the Coral Dev Board);
:func:`supports_dmabuf` answers ``False``.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Optional, Union

import numpy as np
from ai_edge_litert import interpreter as litert

from lastlayer.errors import EdgeTpuError, ModelError, ModelNotFoundError
from lastlayer.model.zoo import open_model
from lastlayer.runtime import delegate as runtime_delegate
from lastlayer.runtime.delegate import edgetpu_library_name

ModelSource = Union[str, "os.PathLike[str]", bytes]


class EdgeTpuUnavailableError(EdgeTpuError, ValueError):
    """The Edge TPU runtime (libedgetpu) or device is not available (a ``ValueError``, as in PyCoral)."""


def _runtime_library() -> Optional[ctypes.CDLL]:
    return runtime_delegate.edgetpu_runtime()


def load_edgetpu_delegate(options: Optional[dict[str, Any]] = None) -> Any:
    """Load the Edge TPU delegate; ``options`` as in PyCoral, e.g. ``{"device": "usb:0"}``."""
    try:
        return runtime_delegate.load_edgetpu_delegate(options=options)
    except runtime_delegate.EdgeTpuUnavailable as exc:  # PyCoral's wording, which ported code may match
        if not exc.installed:
            raise EdgeTpuUnavailableError(
                f"Failed to load delegate from {exc.library}: the Edge TPU runtime is not installed; install libedgetpu "
                "(https://coral.ai/software/#edgetpu-runtime) or use the CPU build of the model (without '_edgetpu')") from None
        raise EdgeTpuUnavailableError(f"Failed to load delegate from {exc.library} ({exc.reason}); plug in the Edge TPU, "
                                      "check the device name, or use the CPU build of the model") from None


def make_interpreter(model_path_or_content: ModelSource, device: Optional[str] = None, delegate: Any = None) -> litert.Interpreter:
    """A LiteRT interpreter for a model file path or the model's bytes (tensors not yet allocated).

    Args:
        model_path_or_content: a ``.tflite`` path (or a known model name, found as the CLI finds it)
            or the model as ``bytes``. Either way it is validated before LiteRT's native code sees it.
        device: which Edge TPU for a compiled model: ``":<N>"``, ``"usb"``, ``"usb:<N>"``, ``"pci"``,
            ``"pci:<N>"``; ignored for CPU models.
        delegate: an already loaded Edge TPU delegate to use instead of loading one.
    """
    try:
        model = open_model(model_path_or_content)
    except ModelNotFoundError as exc:  # LiteRT's wording, which PyCoral passed on
        raise ModelError(f"Could not open '{os.fspath(model_path_or_content)}': {exc}", subject="model") from None
    delegates = None
    if delegate is not None:
        delegates = [delegate]
    elif model.edgetpu:
        delegates = [load_edgetpu_delegate({"device": device} if device else None)]
    return litert.Interpreter(model_content=model.data, experimental_delegates=delegates)


def run_inference(interpreter: Any, input_data: Union[bytes, np.ndarray]) -> None:
    """Fill input 0 with a flat buffer of raw input bytes (``bytes`` or an ndarray) and ``invoke()``.

    The buffer must hold exactly the input tensor's bytes (e.g. an RGB image already resized).
    """
    detail = interpreter.get_input_details()[0]
    if isinstance(input_data, int):
        raise ValueError("DMA buffers are not supported here; pass the input as bytes or a NumPy array")
    raw = np.frombuffer(input_data, dtype=np.uint8) if isinstance(input_data, (bytes, bytearray)) \
        else np.ascontiguousarray(input_data).view(np.uint8).reshape(-1)
    dtype, shape = np.dtype(detail["dtype"]), [int(d) for d in detail["shape"]]
    expected = int(np.prod(shape)) * dtype.itemsize
    if raw.size != expected:
        raise ValueError(f"Input buffer size {raw.size} does not match the input tensor size {expected} "
                         f"({shape} {dtype.name}); resize the input to the model's input size")
    interpreter.set_tensor(detail["index"], raw.view(dtype).reshape(shape))
    interpreter.invoke()


class _Device(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("path", ctypes.c_char_p)]


def list_edge_tpus() -> list[dict[str, str]]:
    """The Edge TPUs the runtime sees: ``[{"type": "usb" | "pci", "path": ...}]``; empty without libedgetpu."""
    library = _runtime_library()
    if library is None:
        return []
    count = ctypes.c_size_t(0)
    library.edgetpu_list_devices.restype = ctypes.POINTER(_Device)
    library.edgetpu_list_devices.argtypes = [ctypes.POINTER(ctypes.c_size_t)]
    devices = library.edgetpu_list_devices(ctypes.byref(count))
    result = [{"type": "pci" if devices[i].type == 0 else "usb", "path": (devices[i].path or b"").decode()}
              for i in range(count.value)]
    if devices:
        library.edgetpu_free_devices.argtypes = [ctypes.POINTER(_Device)]
        library.edgetpu_free_devices(devices)
    return result


def get_runtime_version() -> str:
    """The Edge TPU runtime's version string; raises :class:`EdgeTpuUnavailableError` without libedgetpu."""
    library = _runtime_library()
    if library is None:
        raise EdgeTpuUnavailableError(f"the Edge TPU runtime ({edgetpu_library_name()}) is not installed; "
                                      "install libedgetpu to use an Edge TPU")
    library.edgetpu_version.restype = ctypes.c_char_p
    return library.edgetpu_version().decode()


def set_verbosity(verbosity: int) -> bool:
    """Set the Edge TPU runtime's log verbosity; ``False`` when the runtime is not installed."""
    library = _runtime_library()
    if library is None:
        return False
    library.edgetpu_verbosity(ctypes.c_int(int(verbosity)))
    return True


def supports_dmabuf(interpreter: Any) -> bool:
    """Whether the interpreter can take DMA buffers: never here."""
    return False
