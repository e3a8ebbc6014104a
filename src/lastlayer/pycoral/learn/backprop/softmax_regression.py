"""Last-layer backpropagation with PyCoral's interface; mirrors ``pycoral.learn.backprop.softmax_regression``.

:class:`SoftmaxRegression` wraps lastlayer's :class:`lastlayer.learn.softmax.SoftmaxRegression` and keeps
PyCoral's semantics: the weights are drawn at construction (``weight_scale * N(0, 1)``), and every
``train_with_sgd`` call continues from the current weights. ``serialize_model`` appends the trained
fully-connected + softmax layer to an embedding extractor, quantized as libcoral does.

Beyond PyCoral, none of which changes what ported code sees:

* ``reg`` is a real L2 penalty (PyCoral left it out of the gradient), and the output quantization
  comes from the trained layer's logits (PyCoral kept the range of every batch ever seen).
* ``np.random.seed`` makes runs reproducible (the initial weights and batches are drawn from a
  generator seeded from NumPy's global one), or pass ``seed=``.
* :meth:`~SoftmaxRegression.run_inference` gives the scores the saved model computes (PyCoral had none).
* Float64 data is accepted; out-of-range labels, NaN and quantized (integer) data raise with a message
  instead of writing out of bounds; ``data_val``/``labels_val`` may be left out.
* ``serialize_model`` also takes a classifier (cut at its embedding) and float or int8 extractors.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from lastlayer.errors import ModelError, TrainingError
from lastlayer.layer import OUTPUT_TYPES
from lastlayer.learn.softmax import SoftmaxRegression as _Learner
from lastlayer.model.export import output_type_of, write_head
from lastlayer.model.file import ModelFile
from lastlayer.model.zoo import open_model

ModelSource = Union[str, "os.PathLike[str]", bytes]


class SoftmaxRegression:
    """A fully-connected + softmax layer trained with SGD on embeddings.

    Args:
        feature_dim: size of the embeddings.
        num_classes: number of classes.
        weight_scale: standard deviation of the random initial weights.
        reg: L2 regularisation strength.
        seed: seeds the initial weights and the batch sampling (default: drawn from ``np.random``).

    Attributes:
        output_type: ``"uint8"`` (default, like PyCoral), ``"int8"`` or ``"float32"``: the output type
            of the model :meth:`serialize_model` will write (that of its extractor), so that
            :meth:`run_inference` computes what the saved file computes. Set it for an int8 or
            float extractor; :meth:`serialize_model` never changes it.
        model: the underlying :class:`lastlayer.learn.softmax.SoftmaxRegression`.
    """

    def __init__(self, feature_dim: Optional[int] = None, num_classes: Optional[int] = None, weight_scale: float = 0.01,
                 reg: float = 0.0, *, seed: Optional[int] = None) -> None:
        for name, value in (("feature_dim", feature_dim), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"SoftmaxRegression(): {name} must be an integer, got {value!r}")
        if feature_dim < 1 or num_classes < 2:
            raise TrainingError(f"feature_dim must be >= 1 and num_classes >= 2, got {feature_dim} and {num_classes}")
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        self.output_type = "uint8"
        self.model = _Learner(weight_scale=weight_scale, reg=reg, num_classes=int(num_classes), seed=seed)
        self.model.initialize(int(feature_dim))

    def train_with_sgd(self, data: Mapping[str, Any], num_iter: int, learning_rate: float, batch_size: int = 100,
                       print_every: int = 100) -> None:
        """Train for ``num_iter`` more mini-batch SGD steps.

        Args:
            data: ``{"data_train": [n, feature_dim] float array, "labels_train": [n] ints,
                "data_val": ..., "labels_val": ...}`` (the validation pair is optional here).
            num_iter: number of SGD steps (batches drawn with replacement).
            learning_rate: SGD step size.
            batch_size: samples per step.
            print_every: print loss and train/validation accuracy every this many steps (from step 0);
                0 or negative prints nothing.
        """
        X, y = data["data_train"], data["labels_train"]
        X_val, y_val = data.get("data_val"), data.get("labels_val")
        self.model.learning_rate, self.model.batch_size = learning_rate, batch_size
        self.model.partial_fit(np.asarray(X), np.asarray(y),
                               None if X_val is None else np.asarray(X_val), None if y_val is None else np.asarray(y_val),
                               num_iter=num_iter, print_every=print_every, log=lambda line: print(line, file=sys.stdout))

    def get_accuracy(self, mat_x: np.ndarray, labels: Union[Sequence[int], np.ndarray]) -> float:
        """Fraction (0..1) of rows of ``mat_x`` whose most likely class is the label."""
        return self.model.score(np.asarray(mat_x), labels)

    def run_inference(self, mat_x: np.ndarray) -> np.ndarray:
        """Class scores ``[n, num_classes]`` as the saved model computes them for :attr:`output_type`."""
        return self.model.saved_scores(np.asarray(mat_x), self.output_type)

    def serialize_model(self, in_model_path: ModelSource, *, labels: Optional[Sequence[str]] = None) -> bytes:
        """The extractor at ``in_model_path`` with the trained layer appended, as ``.tflite`` bytes.

        Args:
            in_model_path: the embedding extractor (path or bytes) whose outputs the layer was trained on.
            labels: optional class names stored in the model (lastlayer extension).

        Raises:
            ValueError: ``Failed to open file: <path>``, or the extractor does not fit the layer.
        """
        try:
            base = ModelFile.from_bytes(bytes(in_model_path)) if isinstance(in_model_path, (bytes, bytearray)) \
                else open_model(in_model_path)
        except (ModelError, OSError) as exc:
            name = "<model bytes>" if isinstance(in_model_path, (bytes, bytearray)) else os.fspath(in_model_path)
            raise ModelError(f"Failed to open file: {name} ({exc})", subject="model") from None
        written = output_type_of(base)
        if written != self.output_type and self.output_type in OUTPUT_TYPES:
            warnings.warn(f"{base.name} gives {written} outputs, so the saved model's scores are {written}, but run_inference "
                          f"computes {self.output_type} ones; set output_type = {written!r}", stacklevel=2)
        return write_head(base, self.model.export(labels))
