"""Checks on uploaded photos: size, real image content, pixel count; never trusting names or types.

An upload is decoded from memory by lastlayer's one image decoder
(:func:`lastlayer.images.decode.decode_image_bytes`): the file name and the declared content type are
ignored (and never used as a path), the format must be one of :data:`FORMATS`, and the pixel
count is checked from the header *before* the pixels are decoded, so a small file that would
expand to gigapixels (a decompression bomb) is refused cheaply. This module only turns the
decoder's error kinds into HTTP statuses and words for the web page.
"""

from __future__ import annotations

import numpy as np

from lastlayer.errors import ImageError, LastLayerError
from lastlayer.images.decode import ImageTooLargeError, UnsupportedImageError, decode_image_bytes

FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "MPO"})  # MPO: multi-picture JPEG from phones
DEFAULT_MAX_PIXELS = 50_000_000  # a 48-megapixel phone photo passes
DECODE_SIDE = 448  # large JPEGs are decoded at a reduced scale keeping both sides >= this (the model wants 224)
_ACCEPTED = "upload a JPEG, PNG, GIF, BMP, WebP or TIFF image"


class UploadError(LastLayerError, ValueError):
    """An upload is refused; ``status`` is the HTTP status to answer with (400, 413 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, subject="upload")
        self.status = status


def decode_upload(data: bytes, *, label: str = "the upload", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The RGB pixels (HxWx3 uint8, upright) of an uploaded image, or :class:`UploadError`.

    Args:
        data: the file's bytes.
        label: how to name the file in messages (e.g. ``"photo 2"``; never the client's file name).
        max_pixels: the largest width x height accepted (413 above).
    """
    if not data:
        raise UploadError(f"{label} is empty; choose an image file", 400)
    try:
        return decode_image_bytes(data, name=label, max_pixels=max_pixels, formats=FORMATS, min_size=DECODE_SIDE)
    except ImageTooLargeError as exc:
        width, height = exc.size
        raise UploadError(f"{label} has {width}x{height} pixels, more than the {max_pixels:,} allowed; upload a smaller photo",
                          413) from None
    except UnsupportedImageError as exc:
        if exc.format is not None:
            raise UploadError(f"{label} is a {exc.format} file; {_ACCEPTED}", 415) from None
        raise UploadError(f"{label} is not an image this server can read; {_ACCEPTED}", 415) from None
    except ImageError:
        raise UploadError(f"{label} is a damaged or truncated image; upload it again or choose another", 400) from None
