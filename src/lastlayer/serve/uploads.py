"""Checks on uploaded photos: size, real image content, pixel count; never trusting names or types.

An upload is decoded with Pillow from memory: the file name and the declared content type are
ignored (and never used as a path), the format must be one of :data:`FORMATS`, and the pixel
count is checked from the header *before* the pixels are decoded, so a small file that would
expand to gigapixels (a decompression bomb) is refused cheaply.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lastlayer.errors import LastLayerError
from lastlayer.images import to_rgb

FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "MPO"})  # MPO: multi-picture JPEG from phones
DEFAULT_MAX_PIXELS = 50_000_000  # a 48-megapixel phone photo passes
DECODE_SIDE = 448  # large JPEGs are decoded at a reduced scale keeping both sides >= this (the model wants 224)


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
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                if opened.format not in FORMATS:
                    raise UploadError(f"{label} is a {opened.format} file; upload a JPEG, PNG, GIF, BMP, WebP or TIFF image", 415)
                width, height = opened.size
                if width * height > max_pixels:
                    raise UploadError(f"{label} has {width}x{height} pixels, more than the {max_pixels:,} allowed; "
                                      "upload a smaller photo", 413)
                opened.seek(0)
                if opened.format in ("JPEG", "MPO"):
                    opened.draft("RGB", (DECODE_SIDE, DECODE_SIDE))
                image = ImageOps.exif_transpose(opened)
                image.load()
                return np.asarray(to_rgb(image), dtype=np.uint8)
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"{label} has more than the {max_pixels:,} pixels allowed; upload a smaller photo", 413) from None
    except UnidentifiedImageError:
        raise UploadError(f"{label} is not an image this server can read; upload a JPEG, PNG, GIF, BMP, WebP or TIFF image", 415) from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise UploadError(f"{label} is a damaged or truncated image; upload it again or choose another", 400) from None
