"""The Edge TPU delegate: which library to load on this OS, and a clear error when it is missing."""

from __future__ import annotations

import ctypes
import platform

from ai_edge_litert import interpreter as litert

from lastlayer.errors import EdgeTpuError

EDGETPU_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


def edgetpu_library_name() -> str:
    """The Edge TPU runtime library for this operating system."""
    return EDGETPU_LIBRARIES.get(platform.system(), EDGETPU_LIBRARIES["Linux"])


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


