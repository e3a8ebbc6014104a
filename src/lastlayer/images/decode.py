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
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Collection, Iterator, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from lastlayer.errors import ImageError

Size = Tuple[int, int]  # (width, height)
ImagePath = Union[str, "os.PathLike[str]"]


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


class ImageTooLargeError(ImageError):
    """An image has more pixels than allowed; ``size`` is its (width, height) as its header gives it, ``limit`` the limit."""

    def __init__(self, message: str, size: Size, limit: int) -> None:
        super().__init__(message)
        self.size, self.limit = size, limit


class UnsupportedImageError(ImageError):
    """Not an image Pillow can read (``format`` is ``None``), or one of a format the caller does not accept."""

    def __init__(self, message: str, image_format: str | None = None) -> None:
        super().__init__(message)
        self.format = image_format


def _megapixels(pixels: float) -> str:
    return f"{pixels / 1e6:.4g} MP"


def _too_large(name: str, limit: int, size: Size) -> ImageTooLargeError:
    shown = f"{size[0]} x {size[1]} = {_megapixels(size[0] * size[1])}"
    return ImageTooLargeError(f"{name}: image too large ({shown}, limit {_megapixels(limit)}); shrink it, or raise the limit "
                              f"(lastlayer.images.decode.MAX_PIXELS or ${MAX_PIXELS_ENV})", size, limit)


def _check_size(name: str, image: Image.Image, limit: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{name} has no pixels ({width} x {height}); remove or replace the file")
    if width * height > limit:
        raise _too_large(name, limit, (width, height))


class _BeyondPillowGuard(Exception):
    """Pillow refused an image as a decompression bomb, before lastlayer's own (maybe higher) limit was checked."""


_PILLOW_LIMIT_LOCK = threading.Lock()


@contextmanager
def _pillow_guard_lifted() -> Iterator[None]:
    """Run the block with Pillow's global decompression-bomb limit off (lastlayer checks its own limit from the header).

    Only for an image Pillow refused: the global is lifted under a lock and restored after this one decode.
    """
    with _PILLOW_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


_ORIENTATION = 0x0112  # EXIF tag; values 2..8 need a flip or rotation to view upright
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
_DRAFT_FORMATS = frozenset({"JPEG"})
# Bytes per pixel Pillow stores an image of a mode in (every other mode: 4), and the modes that must be converted
# (to the mode given, at full size) before Image.reduce can average them.
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_REDUCED_AS = {"1": "L", "P": "RGBA", "PA": "RGBA", "I;16": "I", "I;16L": "I", "I;16B": "I", "I;16N": "I"}
# Bytes per pixel of the source Pillow's WebP decoder holds beyond the image: libwebp's two canvases and a frame copy.
_DECODER_BYTES = {"WEBP": 13}


def decode_memory(image: Image.Image, source_size: Size) -> int:
    """About how many bytes decoding ``image`` (opened, after any draft) takes at its peak; ``source_size``: its size in the file.

    The image in its mode, plus its conversion before :func:`reduce_factor`'s box reduction (a palette or 16-bit
    image), plus the premultiplied copy Pillow reduces an image with alpha through, plus what the decoder keeps:
    the WebP decoder's canvases, a progressive JPEG's DCT coefficients of the whole picture (2 bytes each).
    """
    pixels = image.size[0] * image.size[1]
    total = _STORED_BYTES.get(image.mode, 4) * pixels
    reduced_mode = _reduced_mode(image)
    if reduced_mode != image.mode:
        total += _STORED_BYTES.get(reduced_mode, 4) * pixels
    if reduced_mode in ("RGBA", "LA"):
        total += 4 * pixels
    source_pixels = source_size[0] * source_size[1]
    total += _DECODER_BYTES.get(str(image.format), 0) * source_pixels
    components = getattr(image, "layer", None) or []  # a JPEG's (id, h, v, table) per colour component
    if image.format in ("JPEG", "MPO") and image.info.get("progressive") and components:
        most = max(h * v for _, h, v, _ in components)
        total += int(2 * source_pixels * sum(h * v for _, h, v, _ in components) / most)
    return total


def reduce_factor(size: Size, min_size: int) -> int:
    """The whole factor an image of ``size`` can be box-reduced by keeping both sides >= ``2 * min_size`` (1: none).

    Twice ``min_size``: a box average is cruder than a JPEG's DCT scaling, so it keeps enough pixels that the
    final (antialiased) resize looks as it would from the full image (Pillow's ``reducing_gap=2``).
    """
    return max(1, min(size) // (2 * min_size))


def _reduced_mode(image: Image.Image) -> str:
    """The mode ``image`` is box-reduced in: its own, or the one it must be converted to first."""
    if image.mode == "P" and "transparency" not in image.info:
        return "RGB"
    return _REDUCED_AS.get(image.mode, image.mode)


def _reduced(image: Image.Image, min_size: int | None) -> Image.Image:
    """``image`` (loaded) box-reduced by :func:`reduce_factor` in its own mode (a palette or 16-bit one converted first)."""
    factor = reduce_factor(image.size, min_size) if min_size else 1
    if factor < 2:
        return image
    mode = image.mode
    if _reduced_mode(image) != mode:
        image = image.convert(_reduced_mode(image))
    reduced = image.reduce(factor)
    return reduced.convert(mode) if mode.startswith("I;16") else reduced  # 16-bit again: to_rgb scales it by 65535


class ImageMemoryError(ImageTooLargeError):
    """Decoding an image would take more memory than allowed (``memory`` and ``budget`` in bytes)."""

    def __init__(self, message: str, size: Size, limit: int, memory: int, budget: int) -> None:
        super().__init__(message, size, limit)
        self.memory, self.budget = memory, budget


@dataclass(frozen=True)
class DecodePlan:
    """What decoding an image will cost, read from its header: the format, its size, the size it is decoded at
    (smaller for a JPEG decoded at a reduced scale) and the bytes of memory the decode takes at its peak."""

    format: str
    size: Size
    decoded_size: Size
    memory: int

    @property
    def decoded_pixels(self) -> int:
        return self.decoded_size[0] * self.decoded_size[1]


@contextmanager
def _opened(source: ImagePath | bytes, name: str, limit: int, min_size: int | None, formats: Collection[str] | None,
            draft_formats: Collection[str], max_memory: int | None) -> Iterator[tuple[Image.Image, DecodePlan]]:
    """The image opened and checked from its header (format, pixels, memory), at its draft scale, with its plan."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # between Pillow's warning and error: ours decides
        try:
            opened = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        except Image.DecompressionBombError:
            raise _BeyondPillowGuard from None
    with opened:
        if formats is not None and opened.format not in formats:
            raise UnsupportedImageError(f"{name} is a {opened.format} image, which is not accepted here", opened.format)
        _check_size(name, opened, limit)
        opened.seek(0)
        source_size = opened.size
        if min_size and opened.format in draft_formats:
            opened.draft("RGB", (min_size, min_size))
        plan = DecodePlan(str(opened.format), source_size, opened.size, decode_memory(opened, source_size))
        if max_memory is not None and plan.memory > max_memory:
            raise ImageMemoryError(f"{name}: decoding this {source_size[0]} x {source_size[1]} {plan.format} image takes about "
                                   f"{plan.memory / 2**20:.0f} MiB, more than the {max_memory / 2**20:.0f} MiB allowed; "
                                   "shrink it or save it as JPEG", source_size, limit, plan.memory, max_memory)
        yield opened, plan


def _decode(source: ImagePath | bytes, name: str, limit: int, min_size: int | None, size: Size | None, as_array: bool,
            formats: Collection[str] | None, draft_formats: Collection[str], max_memory: int | None = None,
            plan_only: bool = False) -> Image.Image | np.ndarray | DecodePlan:
    """:func:`_decoded` with Pillow's own guard in force (:class:`_BeyondPillowGuard` when it refuses the image)."""
    with _opened(source, name, limit, min_size, formats, draft_formats, max_memory) as (opened, plan):
        if plan_only:
            return plan
        upright = _UPRIGHT.get(opened.getexif().get(_ORIENTATION, 1))
        opened.load()
        image = _reduced(opened, min_size)  # before any copy: the full-size pixels are freed with the file
        if upright is not None:
            image = image.transpose(upright)
        image = to_rgb(image)
        if size is not None:
            return resize_image(image, size)
        if as_array:
            return np.asarray(image, dtype=np.uint8)
        return image.copy() if image is opened else image  # closing the file releases ``opened``'s pixels


def _decoded(source: ImagePath | bytes, *, name: str | None = None, min_size: int | None = None, size: Size | None = None,
             as_array: bool = False, limit: int | None = None, formats: Collection[str] | None = None,
             draft_formats: Collection[str] = _DRAFT_FORMATS, max_memory: int | None = None,
             plan_only: bool = False) -> Image.Image | np.ndarray | DecodePlan:
    """The one image decoder: a file or bytes, upright, RGB; with ``size`` resized while the file is open.

    Returns an ``Image`` (or an HxWx3 uint8 array with ``size`` or ``as_array``). An image without an
    EXIF rotation is used as decoded, not copied. The pixel count is checked from the header before
    any pixel is decoded (``limit``, default :func:`max_pixels`); ``formats`` limits the
    accepted Pillow formats; a JPEG of a format in ``draft_formats`` is decoded at a reduced scale
    keeping both sides at least ``min_size``, any other image is box-reduced after decoding (see
    :func:`reduce_factor`) before it is converted or copied. ``max_memory`` refuses an image whose
    decode would take more bytes (:func:`decode_memory`); ``plan_only`` returns the
    :class:`DecodePlan` without decoding. Every failure is an :class:`ImageError` naming ``name``
    (default: the path): :class:`ImageTooLargeError` (:class:`ImageMemoryError`),
    :class:`UnsupportedImageError`, or a plain one for a missing, unreadable, damaged or truncated image.
    """
    label = name if name is not None else str(source if not isinstance(source, bytes) else "the image")
    arguments = (source, label, max_pixels() if limit is None else limit, min_size, size, as_array, formats, draft_formats,
                 max_memory, plan_only)
    try:
        try:
            return _decode(*arguments)
        except _BeyondPillowGuard:
            with _pillow_guard_lifted():
                return _decode(*arguments)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"image file {label} does not exist; check the path") from None
    except IsADirectoryError:
        raise ImageError(f"image path {label} is a folder; pass image files") from None
    except UnidentifiedImageError:
        raise UnsupportedImageError(f"{label} is not a readable image (unknown or corrupt format); remove or replace the file") from None
    except PermissionError:
        raise ImageError(f"cannot read image {label}: permission denied; check the file's permissions") from None
    except MemoryError:
        raise ImageError(f"not enough memory to decode image {label}; shrink it") from None
    except Exception as exc:  # noqa: BLE001  (any decoder failure on untrusted bytes is a bad image, never a crash)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageError(f"cannot decode image {label} ({reason}); the file is corrupt or truncated, remove or replace it") from None


def load_image(path: ImagePath, min_size: int | None = None) -> Image.Image:
    """Open an image file as an upright RGB ``PIL.Image`` (first frame for animations).

    With ``min_size``, a large JPEG is decoded at a reduced scale (Pillow's draft mode) that still
    keeps both sides at least ``min_size`` pixels: much faster for camera photos. An image larger
    than :func:`max_pixels` is refused from its header, before decoding. Every failure is an
    :class:`ImageError` naming the file.
    """
    return _decoded(path, min_size=min_size)  # type: ignore[return-value]


def decode_image_bytes(data: bytes, *, name: str = "the image", max_pixels: int | None = None,
                       formats: Collection[str] | None = None, min_size: int | None = None,
                       max_memory: int | None = None) -> np.ndarray:
    """The upright RGB pixels (HxWx3 uint8) of an image held in memory, e.g. an upload.

    ``name`` is how messages call it; ``formats`` the Pillow formats accepted (default: any);
    ``max_pixels`` the largest width x height (default :func:`max_pixels`), checked from the header;
    with ``min_size`` a JPEG (or MPO) is decoded at a reduced scale keeping both sides >= it, any other
    image box-reduced keeping both sides >= twice it; ``max_memory``: the most bytes the decode may take
    (:class:`ImageMemoryError` above, from the header). Failures are :class:`ImageError`:
    :class:`ImageTooLargeError`, :class:`UnsupportedImageError` or plain.
    """
    if not data:
        raise ImageError(f"{name} is empty")
    return _decoded(bytes(data), name=name, min_size=min_size, as_array=True, limit=max_pixels, formats=formats,  # type: ignore[return-value]
                    draft_formats=("JPEG", "MPO"), max_memory=max_memory)


def plan_image_bytes(data: bytes, *, name: str = "the image", max_pixels: int | None = None,
                     formats: Collection[str] | None = None, min_size: int | None = None,
                     max_memory: int | None = None) -> DecodePlan:
    """What :func:`decode_image_bytes` with the same arguments will cost (:class:`DecodePlan`), read from the header
    alone, with the same checks and errors; nothing is decoded."""
    if not data:
        raise ImageError(f"{name} is empty")
    return _decoded(bytes(data), name=name, min_size=min_size, limit=max_pixels, formats=formats,  # type: ignore[return-value]
                    draft_formats=("JPEG", "MPO"), max_memory=max_memory, plan_only=True)


def resize_image(image: Image.Image, size: Size) -> np.ndarray:
    """Resize to ``size`` = (width, height) and return an HxWx3 uint8 array."""
    if image.size != tuple(size):
        image = image.resize(tuple(size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def load_resized(path: ImagePath, size: Size) -> np.ndarray:
    """Load ``path`` and resize it for a model with input ``size`` = (width, height).

    The same pixels as ``resize_image(load_image(path, max(size)), size)``, with one copy fewer.
    """
    return _decoded(path, min_size=max(size), size=size)  # type: ignore[return-value]


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
