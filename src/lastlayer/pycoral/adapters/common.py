"""Input and output tensors of a LiteRT interpreter; mirrors ``pycoral.adapters.common``.

Works on the raw interpreter :func:`lastlayer.pycoral.utils.edgetpu.make_interpreter` returns (an
``ai_edge_litert.interpreter.Interpreter``), exactly like PyCoral's functions on a
``tflite_runtime`` interpreter: ``input_tensor`` is a view of the interpreter's own buffer, so
``set_input`` writes into it without a copy.
"""

from __future__ import annotations

from typing import Any, Callable, Tuple

import numpy as np

Size = Tuple[int, int]


def output_tensor(interpreter: Any, i: int) -> np.ndarray:
    """Output tensor ``i`` (a view of the interpreter's data, as stored: quantized models give integers)."""
    return interpreter.tensor(interpreter.get_output_details()[i]["index"])()


def input_details(interpreter: Any, key: str) -> Any:
    """One entry (``"shape"``, ``"dtype"``, ``"quantization"``, ``"index"`` ...) of input 0's details."""
    return interpreter.get_input_details()[0][key]


def input_size(interpreter: Any) -> Size:
    """``(width, height)`` of input 0, which must have the shape ``[1, height, width, channels]``."""
    _, height, width, _ = input_details(interpreter, "shape")
    return int(width), int(height)


def input_tensor(interpreter: Any) -> np.ndarray:
    """Input 0 without its batch dimension, ``[height, width, channels]``: a writable view."""
    return interpreter.tensor(input_details(interpreter, "index"))()[0]


def set_input(interpreter: Any, data: Any) -> None:
    """Copy ``data`` (a PIL image or an ``[height, width, channels]`` array of the input size) into input 0."""
    input_tensor(interpreter)[:, :] = data


def set_resized_input(interpreter: Any, size: Size, resize: Callable[[Size], Any]) -> tuple[Any, tuple[float, float]]:
    """Fit an image of ``size`` = (width, height) into input 0 keeping its aspect ratio.

    ``resize((w, h))`` must return the image resized to ``(w, h)`` (e.g. ``lambda s: img.resize(s, Image.LANCZOS)``).
    The image goes into the top-left corner and the rest of the tensor is zero. Returns
    ``(resized image, (scale, scale))`` where ``scale`` maps original to tensor coordinates.
    """
    width, height = input_size(interpreter)
    w, h = size
    scale = min(width / w, height / h)
    w, h = int(w * scale), int(h * scale)
    tensor = input_tensor(interpreter)
    tensor.fill(0)
    channels = tensor.shape[-1]
    result = resize((w, h))
    tensor[:h, :w] = np.reshape(result, (h, w, channels))
    return result, (scale, scale)
