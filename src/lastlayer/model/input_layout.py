"""The layout of an image input: channels last (``[1, H, W, C]``) or first (``[1, C, H, W]``), RGB or grey.

Channels-first is read from the shape alone: a 3 or a 1 in dimension 1 and not in dimension 3
(PyTorch exports ``[1, 3, H, W]``). Pixels handed around by lastlayer are always ``HxWx3`` uint8 RGB;
:meth:`InputLayout.arrange` turns them into what the tensor holds (luminance for one channel, the
way Pillow's ``"L"`` mode computes it, and transposed for channels-first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lastlayer.errors import ModelError

NHWC, NCHW = "NHWC", "NCHW"
_CHANNELS = (1, 3)


@dataclass(frozen=True)
class InputLayout:
    """Where height, width and channels are in an image input tensor of shape ``[1, ...]``."""

    layout: str  # NHWC or NCHW
    height: int
    width: int
    channels: int  # 3 (RGB) or 1 (grey)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as every resize in lastlayer takes it."""
        return self.width, self.height

    @property
    def channels_first(self) -> bool:
        return self.layout == NCHW

    def describe(self) -> str:
        colour = "RGB" if self.channels == 3 else "grey"
        return f"{self.layout} {colour} {self.width}x{self.height}"

    def arrange(self, values: np.ndarray) -> np.ndarray:
        """``HxWxC`` values (already per-channel converted) as the ``[1, ...]`` tensor, without copying NHWC."""
        if self.channels_first:
            values = np.transpose(values, (2, 0, 1))
        return np.ascontiguousarray(values)[np.newaxis]


def image_layout(shape: Sequence[int], source: str = "the model") -> InputLayout:
    """The :class:`InputLayout` of an input tensor shape, or a :class:`ModelError` saying it is no image input."""
    dims = [int(d) for d in shape]
    if len(dims) != 4 or dims[0] != 1:
        raise ModelError(f"{source} input has shape {dims}; an image model needs [1, height, width, channels] "
                         "or [1, channels, height, width]", subject="model")
    if dims[1] in _CHANNELS and dims[3] not in _CHANNELS:
        return InputLayout(NCHW, dims[2], dims[3], dims[1])
    if dims[3] not in _CHANNELS:
        raise ModelError(f"{source} input has shape {dims} with {dims[3]} channels; lastlayer feeds RGB (3) or grey (1) images",
                         subject="model")
    return InputLayout(NHWC, dims[1], dims[2], dims[3])


def to_luminance(pixels: np.ndarray) -> np.ndarray:
    """``HxWx3`` uint8 RGB -> ``HxWx1`` uint8 grey, exactly as Pillow's ``convert("L")`` (ITU-R 601-2 luma)."""
    rgb = pixels.astype(np.uint32)
    grey = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return grey.astype(np.uint8)[..., np.newaxis]
