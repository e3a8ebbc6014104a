"""The Edge TPU delegate: which library to load on this OS, one loader, and a clear error when it is missing.

:func:`load_edgetpu_delegate` serves the interpreter and PyCoral's ``make_interpreter`` /
``load_edgetpu_delegate`` (:mod:`lastlayer.pycoral.utils.edgetpu`, which words the error as
PyCoral did). :func:`edgetpu_runtime` opens the runtime library itself, for the device queries.
"""

from __future__ import annotations

import ctypes
import platform
from typing import Any

from ai_edge_litert import interpreter as litert

from lastlayer.errors import EdgeTpuError

EDGETPU_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


class EdgeTpuUnavailable(EdgeTpuError):
    """The Edge TPU runtime is not installed (``installed`` False) or could not open a device (``reason`` says why)."""

    def __init__(self, message: str, *, library: str, installed: bool, reason: str = "") -> None:
        super().__init__(message)
        self.library, self.installed, self.reason = library, installed, reason


def edgetpu_library_name() -> str:
    """The Edge TPU runtime library for this operating system."""
    return EDGETPU_LIBRARIES.get(platform.system(), EDGETPU_LIBRARIES["Linux"])


def edgetpu_runtime() -> ctypes.CDLL | None:
    """The Edge TPU runtime library, opened, or ``None`` when it is not installed."""
    try:
        return ctypes.CDLL(edgetpu_library_name())
    except OSError:
        return None


def load_edgetpu_delegate(model_name: str = "the model", options: dict[str, Any] | None = None) -> litert.Delegate:
    """Load the Edge TPU delegate (``options`` as in PyCoral, e.g. ``{"device": "usb:0"}``).

    Raises :class:`EdgeTpuUnavailable` (an :class:`EdgeTpuError`) telling how to proceed with ``model_name``.
    """
    library = edgetpu_library_name()
    advice = (
        f"{model_name} was compiled for the Edge TPU, but the Edge TPU runtime ({library}) {{}}; "
        "use the CPU build of the model (the same file without '_edgetpu'), or install the Edge TPU "
        "runtime (libedgetpu) and plug in the device"
    )
    if edgetpu_runtime() is None:  # probe first: a failed load_delegate leaves a noisy half-built Delegate behind
        raise EdgeTpuUnavailable(advice.format("is not installed"), library=library, installed=False)
    try:
        return litert.load_delegate(library, options or {})
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgeTpuUnavailable(advice.format(f"could not open a device ({exc})"), library=library, installed=True,
                                 reason=reason) from None
