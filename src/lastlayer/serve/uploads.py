"""Checks on uploaded photos: size, real image content, pixels and memory; never trusting names or types.

An upload is decoded from memory by lastlayer's one image decoder
(:func:`lastlayer.images.decode.decode_image_bytes`): the file name and the declared content type are
ignored (and never used as a path), and the format must be one of :data:`FORMATS`. Memory is bounded
by design, whatever the photos hold:

* every photo is checked from its header before any pixel is decoded: at most ``max_pixels``, and at
  most :data:`MAX_DECODE_MEMORY` bytes to decode (:func:`~lastlayer.images.decode.decode_memory`: a
  small WebP file of 50 megapixels needs 800 MiB in Pillow, a JPEG of the same size a few);
* a request decodes at most :data:`MAX_REQUEST_PIXELS` in all (checked from the headers of all its
  photos first), so one request cannot keep the CPU busy for minutes;
* a photo is decoded straight to the size it is used at (a JPEG at a reduced scale, anything else
  box-reduced right after decoding): both sides at least :data:`DECODE_SIDE`, so what is kept of a
  request is small whatever the source resolution;
* decodes that together would take more than :data:`MAX_DECODE_MEMORY` wait for each other
  (:data:`DECODE_GATE`, one per process), so concurrent requests do not add up.

This module turns the decoder's error kinds into HTTP statuses and words for the web page.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np

from lastlayer.errors import ImageError, LastLayerError
from lastlayer.images.decode import (
    DecodePlan,
    ImageMemoryError,
    ImageTooLargeError,
    UnsupportedImageError,
    decode_image_bytes,
    plan_image_bytes,
)

FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "MPO"})  # MPO: multi-picture JPEG from phones
DEFAULT_MAX_PIXELS = 50_000_000  # a 48-megapixel phone photo passes
DECODE_SIDE = 448  # photos are decoded keeping both sides >= this (the model wants 224)
MAX_DECODE_MEMORY = 240 * 2**20  # bytes one decode may take: a 49-megapixel RGB PNG, TIFF or BMP passes
MAX_REQUEST_PIXELS = 200_000_000  # pixels one request may decode in all (after a JPEG's reduced scale)
_ACCEPTED = "upload a JPEG, PNG, GIF, BMP, WebP or TIFF image"


class UploadError(LastLayerError, ValueError):
    """An upload is refused; ``status`` is the HTTP status to answer with (400, 413 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, subject="upload")
        self.status = status


class DecodeGate:
    """Lets decodes run at once only while their memory (bytes, from :class:`DecodePlan`) fits ``capacity``.

    A decode larger than the capacity runs alone; a small one (a camera frame) never waits for
    another small one.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._cond = threading.Condition()

    @contextmanager
    def reserved(self, memory: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self.in_use == 0 or self.in_use + memory <= self.capacity)
            self.in_use += memory
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= memory
                self._cond.notify_all()


DECODE_GATE = DecodeGate(MAX_DECODE_MEMORY)


def _refusal(error: ImageError, label: str, max_pixels: int) -> UploadError:
    """The upload error (status and words) for a decoder error about the photo called ``label``."""
    if isinstance(error, ImageMemoryError):
        width, height = error.size
        return UploadError(f"{label} ({width}x{height} pixels) would take about {error.memory / 2**20:.0f} MiB to decode, more "
                           f"than the {error.budget / 2**20:.0f} MiB one photo may use; upload it as a JPEG or smaller", 413)
    if isinstance(error, ImageTooLargeError):
        width, height = error.size
        return UploadError(f"{label} has {width}x{height} pixels, more than the {max_pixels:,} allowed; upload a smaller photo", 413)
    if isinstance(error, UnsupportedImageError):
        if error.format is not None:
            return UploadError(f"{label} is a {error.format} file; {_ACCEPTED}", 415)
        return UploadError(f"{label} is not an image this server can read; {_ACCEPTED}", 415)
    return UploadError(f"{label} is a damaged or truncated image; upload it again or choose another", 400)


def decode_uploads(blobs: Sequence[bytes], *, max_pixels: int = DEFAULT_MAX_PIXELS, labels: Sequence[str] | None = None,
                   request_pixels: int = MAX_REQUEST_PIXELS) -> list[np.ndarray]:
    """The RGB pixels (HxWx3 uint8, upright, reduced: see the module docstring) of every uploaded image, or
    :class:`UploadError` for the first one refused (nothing is decoded when any header is refused).

    Args:
        blobs: the files' bytes.
        max_pixels: the largest width x height of one photo (413 above).
        labels: how to name each file in messages (default ``"photo N"``, or ``"the photo"`` for one;
            never the client's file name).
        request_pixels: the most pixels the request may decode in all (413 above).
    """
    if labels is None:
        labels = [f"photo {number}" for number in range(1, len(blobs) + 1)] if len(blobs) > 1 else ["the photo"]
    plans: list[DecodePlan] = []
    for data, label in zip(blobs, labels):
        if not data:
            raise UploadError(f"{label} is empty; choose an image file", 400)
        try:
            plans.append(plan_image_bytes(data, name=label, max_pixels=max_pixels, formats=FORMATS, min_size=DECODE_SIDE,
                                          max_memory=MAX_DECODE_MEMORY))
        except ImageError as error:
            raise _refusal(error, label, max_pixels) from None
    total = sum(plan.decoded_pixels for plan in plans)
    if total > request_pixels:
        raise UploadError(f"the {len(plans)} photos would decode to {total / 1e6:.0f} megapixels in all, more than the "
                          f"{request_pixels / 1e6:.0f} one request may; send fewer at a time (or JPEGs)", 413)
    images = []
    for data, label, plan in zip(blobs, labels, plans):
        try:
            with DECODE_GATE.reserved(plan.memory):
                images.append(decode_image_bytes(data, name=label, max_pixels=max_pixels, formats=FORMATS, min_size=DECODE_SIDE,
                                                 max_memory=MAX_DECODE_MEMORY))
        except ImageError as error:
            raise _refusal(error, label, max_pixels) from None
    return images


def decode_upload(data: bytes, *, label: str = "the upload", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The RGB pixels (HxWx3 uint8, upright, reduced) of one uploaded image, or :class:`UploadError` (see :func:`decode_uploads`)."""
    return decode_uploads([data], max_pixels=max_pixels, labels=[label])[0]
