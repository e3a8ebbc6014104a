"""What is kept of an image: its unit embedding (the extractor on one interpreter, with lanes for frames in flight), and a thumbnail."""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from lastlayer.errors import TrainingError
from lastlayer.images.decode import encode_jpeg, load_image, load_resized, resize_array
from lastlayer.learn.cosine import unit_rows
from lastlayer.model.export import extractor_model
from lastlayer.model.file import ModelFile
from lastlayer.model.normalization import Normalization
from lastlayer.runtime import Interpreter
from lastlayer.runtime.lanes import Lanes

THUMBNAIL_SIZE = 96
UNIT_TOLERANCE = 1e-4  # a float32 unit vector's norm is 1 within 1e-6


class Embedder:
    """The unit embedding of an image (array of any size, a frame with ``.pixels``, or an image file).

    Args:
        model: an extractor, or a classifier or imprinted model (cut at its embedding).
        normalization: how pixels are fed to the model.
        num_threads: CPU threads of the interpreter.

    :meth:`embed` runs on the embedder's own interpreter, or on ``lane`` ``0 .. lanes - 1``: single-threaded
    clones on a multi-core CPU, so that several frames are embedded at once from different threads.
    """

    def __init__(self, model: ModelFile, normalization: Normalization, num_threads: int | None = None) -> None:
        self.interpreter = Interpreter(extractor_model(model), num_threads=num_threads, normalization=normalization)
        self.input_size = self.interpreter.input_size
        self.dim = self.interpreter.output_size
        self._lanes = Lanes(self.interpreter, threading.Lock())

    @property
    def lanes(self) -> int:
        """How many embeddings may run at the same time (``embed(..., lane=i)`` from different threads)."""
        return len(self._lanes)

    def pixels(self, image: Any) -> np.ndarray:
        """Model-sized RGB pixels from an array (any size), a frame (``.pixels``) or an image file."""
        if hasattr(image, "pixels"):
            image = image.pixels
        if isinstance(image, np.ndarray):
            return resize_array(image, self.input_size)
        return load_resized(image, self.input_size)

    def embed(self, image: Any, *, lane: int | None = None, unit: bool = True) -> np.ndarray:
        """The unit embedding (float64 ``[D]``) of one image (``unit=False``: as the extractor gives it);
        ``lane``: see the class docstring."""
        vector = self._lanes.run(self.pixels(image), lane)[np.newaxis].astype(np.float64)
        return (unit_rows(vector) if unit else vector)[0]

    def units(self, images: Sequence[Any], known: Sequence[np.ndarray | None] | None = None, *, unit: bool = True) -> np.ndarray:
        """The unit embeddings ``[n, D]`` of the images: ``known[i]`` when given (e.g. from the image's
        prediction), else embedded here. ``unit=False``: the embeddings as the extractor gives them; a known
        one of norm 1 (a unit embedding, from before a state started keeping its model's classes) is made again."""
        given = list(known) if known is not None else [None] * len(images)
        if len(given) != len(images) or any(vector is not None and np.shape(vector) != (self.dim,) for vector in given):
            raise TrainingError(f"give one embedding of {self.dim} values (or None) per image", subject="class")
        if not unit:
            given = [None if vector is not None and abs(float(np.linalg.norm(vector)) - 1.0) < UNIT_TOLERANCE else vector
                     for vector in given]
        vectors = np.stack([self.embed(image, unit=unit) if vector is None else np.asarray(vector, np.float64)
                            for image, vector in zip(images, given)])
        return unit_rows(vectors) if unit else vectors


def thumbnail(image: Any) -> bytes | None:
    """A small JPEG of the image for review (``None`` if it cannot be made)."""
    from PIL import Image

    try:
        if hasattr(image, "pixels"):
            image = image.pixels
        picture = Image.fromarray(np.asarray(image, dtype=np.uint8)) if isinstance(image, np.ndarray) else load_image(image)
        # box-reduced by a whole factor first, then bilinear: a third of the default's time, alike at 96 px
        picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.BILINEAR, reducing_gap=1.0)
        return encode_jpeg(picture, quality=80)
    except (OSError, ValueError, TypeError):
        return None
