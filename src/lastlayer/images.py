"""Decode any Pillow-readable image into the RGB pixels a model wants.

Handles EXIF orientation, the first frame of animations, transparency (composited on white),
grayscale, CMYK, palette and 16-bit images. Resizing stretches to the model's input size with
bilinear (antialiased) filtering, the same for training and inference so the two always match.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lastlayer.errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
)
Size = Tuple[int, int]  # (width, height)
ImagePath = Union[str, "os.PathLike[str]"]


def is_image_file(path: ImagePath) -> bool:
    """True when the file name has a common image extension (the content is not checked)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow image mode to 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
        image = Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) / (high - low) * 255.0 if high > low else np.zeros_like(pixels)
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "LASTLAYER_MAX_PIXELS"
MAX_PIXELS: int | None = None
"""The largest image (width x height) lastlayer decodes; ``None``: ``$LASTLAYER_MAX_PIXELS``, else 100 MP.

The size is read from the file's header before any pixel is decoded, so a huge image costs no memory.
"""


def max_pixels() -> int:
    """The pixel limit in force: :data:`MAX_PIXELS`, else ``$LASTLAYER_MAX_PIXELS``, else 100 megapixels."""
    if MAX_PIXELS is not None:
        return int(MAX_PIXELS)
    configured = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    try:
        return int(float(configured)) if configured else DEFAULT_MAX_PIXELS
    except ValueError:
        return DEFAULT_MAX_PIXELS


def _megapixels(pixels: float) -> str:
    return f"{pixels / 1e6:.4g} MP"


def _too_large(path: ImagePath, limit: int, size: Size | None = None, pixels: int | None = None) -> ImageError:
    shown = f"{size[0]} x {size[1]} = {_megapixels(size[0] * size[1])}" if size else _megapixels(pixels or 0)
    return ImageError(f"{path}: image too large ({shown}, limit {_megapixels(limit)}); shrink it, or raise the limit "
                      f"(lastlayer.images.MAX_PIXELS or ${MAX_PIXELS_ENV})")


def _check_size(path: ImagePath, image: Image.Image, limit: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{path} has no pixels ({width} x {height}); remove or replace the file")
    if width * height > limit:
        raise _too_large(path, limit, (width, height))


def _open_lazily(path: ImagePath, limit: int) -> Image.Image:
    """``Image.open`` (header only), with Pillow's own decompression-bomb guard kept from firing below ``limit``."""
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # lastlayer enforces its own, configurable limit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError:
            raise _too_large(path, limit, _header_size(path)) from None


_PILLOW_LIMIT_LOCK = threading.Lock()


def _header_size(path: ImagePath) -> Size:
    """The (width, height) in the header of an image Pillow refused as a decompression bomb (no pixel is decoded)."""
    with _PILLOW_LIMIT_LOCK:  # serialised, so the global is always restored to the value before
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as opened:
                return opened.size
        finally:
            Image.MAX_IMAGE_PIXELS = saved


_ORIENTATION = 0x0112  # EXIF tag; values 2..8 need a flip or rotation to view upright


def _decoded(path: ImagePath, min_size: int | None, size: Size | None) -> Image.Image | np.ndarray:
    """Decode ``path`` upright as RGB; with ``size``, resize it while the file is open and return the pixels.

    An image without an EXIF rotation is used as decoded, not copied: with ``size`` the resize is
    the only copy, without it the decoded image is detached from the file once.
    """
    limit = max_pixels()
    try:
        with _open_lazily(path, limit) as opened:
            _check_size(path, opened, limit)
            opened.seek(0)
            if min_size and opened.format == "JPEG":
                opened.draft("RGB", (min_size, min_size))
            if opened.getexif().get(_ORIENTATION, 1) in range(2, 9):
                image = ImageOps.exif_transpose(opened)
            else:
                image = opened  # exif_transpose would only copy it
            image.load()
            image = to_rgb(image)
            if size is not None:
                return resize_image(image, size)
            return image.copy() if image is opened else image  # closing the file releases ``opened``'s pixels
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"image file {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise ImageError(f"image path {path} is a folder; pass image files") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not a readable image (unknown or corrupt format); remove or replace the file") from None
    except PermissionError:
        raise ImageError(f"cannot read image {path}: permission denied; check the file's permissions") from None
    except MemoryError:
        raise ImageError(f"not enough memory to decode image {path}; shrink it") from None
    except Exception as exc:  # noqa: BLE001  (any decoder failure on untrusted bytes is a bad image, never a crash)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageError(f"cannot decode image {path} ({reason}); the file is corrupt or truncated, remove or replace it") from None


def load_image(path: ImagePath, min_size: int | None = None) -> Image.Image:
    """Open an image file as an upright RGB ``PIL.Image`` (first frame for animations).

    With ``min_size``, a large JPEG is decoded at a reduced scale (Pillow's draft mode) that still
    keeps both sides at least ``min_size`` pixels: much faster for camera photos. An image larger
    than :func:`max_pixels` is refused from its header, before decoding. Every failure is an
    :class:`ImageError` naming the file.
    """
    return _decoded(path, min_size, None)  # type: ignore[return-value]


def resize_image(image: Image.Image, size: Size) -> np.ndarray:
    """Resize to ``size`` = (width, height) and return an HxWx3 uint8 array."""
    if image.size != tuple(size):
        image = image.resize(tuple(size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def load_resized(path: ImagePath, size: Size) -> np.ndarray:
    """Load ``path`` and resize it for a model with input ``size`` = (width, height).

    The same pixels as ``resize_image(load_image(path, max(size)), size)``, with one copy fewer.
    """
    return _decoded(path, max(size), size)  # type: ignore[return-value]


def resize_array(pixels: np.ndarray, size: Size) -> np.ndarray:
    """Resize an HxWx3 uint8 RGB array (e.g. a camera frame) to ``size`` = (width, height).

    Gives exactly ``resize_image(Image.fromarray(pixels), size)``: the same bilinear (antialiased)
    Pillow filter as for image files, so a model taught from files sees frames the same way. An
    input that already has the requested size is returned as is (made C-contiguous when needed).
    """
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        shape = list(getattr(pixels, "shape", ()))
        dtype = getattr(pixels, "dtype", type(pixels).__name__)
        raise ImageError(f"resize_array needs an HxWx3 uint8 RGB array, got shape {shape} of {dtype}; convert the frame first")
    height, width = pixels.shape[:2]
    pixels = np.ascontiguousarray(pixels)
    if (width, height) == tuple(size):
        return pixels
    return resize_image(Image.fromarray(pixels), size)  # uint8 HxWx3 -> mode "RGB"


def encode_jpeg(image: np.ndarray | Image.Image, quality: int) -> bytes:
    """JPEG bytes of an HxWx3 uint8 RGB array or a Pillow image (converted to RGB)."""
    picture = Image.fromarray(image) if isinstance(image, np.ndarray) else image.convert("RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
