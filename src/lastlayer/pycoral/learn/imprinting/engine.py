"""Weight imprinting with PyCoral's interface; mirrors ``pycoral.learn.imprinting.engine``.

:class:`ImprintingEngine` keeps PyCoral's names, signatures, rules, exception types and messages, over
lastlayer's pieces: the model is opened once as a :class:`~lastlayer.model.file.ModelFile`, the
classes live in an :class:`~lastlayer.learn.imprinting.ImprintingHead` with PyCoral's plain-sum
semantics (``normalize_examples=False``) and :func:`~lastlayer.model.export.write_head` writes
Coral's structure, metadata text included, so models go both ways between PyCoral and lastlayer.

Beyond PyCoral, none of which changes what ported code sees:

* ``model_path`` may also be any embedding extractor or classifier (no L2Norm): the imprinting
  structure is built on it (cut at its embedding for a classifier). With ``keep_classes`` an ordinary
  classifier keeps its own class layer as it is and the new classes are appended after its classes
  (:mod:`lastlayer.learn.keep`, :mod:`lastlayer.model.keep`): :meth:`~ImprintingEngine.serialize_extractor_model`
  is then the classifier cut at its embedding, and :meth:`~ImprintingEngine.serialize_model` the
  classifier with the new classes (the original model itself while there are none). A cosine
  classifier's classes become fixed imprinted rows, as in Coral's model. A model that has an L2Norm is
  treated as Coral's prototype and validated with PyCoral's rules.
* :meth:`~ImprintingEngine.serialize_extractor_model` really removes the head (PyCoral only re-pointed
  the output, so the head still ran).
* A negative ``class_id`` raises (undefined behaviour in PyCoral); quantized (integer) embeddings are
  refused with a message saying to dequantize them.
* ``model_path`` may be the model's bytes.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np

from lastlayer.errors import ModelError, TrainingError
from lastlayer.jobs.keep import appends_classes, open_kept_head
from lastlayer.learn.imprinting import DEFAULT_SCALE, ImprintingHead
from lastlayer.learn.keep import KeepClassesHead
from lastlayer.model import imprinting as structure
from lastlayer.model.analysis import imprinting_structure
from lastlayer.model.export import cosine_class_rows, extractor_model, extractor_tree, read_imprinting_layer, write_head
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.keep import write_appended_classes
from lastlayer.model.names import operator_name
from lastlayer.model.zoo import open_model

ModelSource = Union[str, "os.PathLike[str]", bytes]


def _open(model_path: ModelSource) -> ModelFile:
    try:
        if isinstance(model_path, (bytes, bytearray)):
            return ModelFile.from_bytes(bytes(model_path))
        return open_model(model_path)
    except (ModelError, OSError) as exc:
        name = "<model bytes>" if isinstance(model_path, (bytes, bytearray)) else os.fspath(model_path)
        raise ModelError(f"Failed to open file: {name} ({exc})", subject="model") from None


def _has_l2norm(model: ModelFile) -> bool:
    graph = model.tree.subgraphs[0] if model.tree.subgraphs else None
    codes = model.tree.operatorCodes
    return graph is not None and any(operator_name(codes[op.opcodeIndex]) == "L2_NORMALIZATION" for op in graph.operators)


class ImprintingEngine:
    """Teach a model new classes from embeddings, without backpropagation.

    Args:
        model_path: Coral's L2-norm imprinting model (``*_l2norm_quant[_edgetpu].tflite``) or one
            lastlayer wrote; also any embedding extractor or classifier (see the module docstring).
        keep_classes: keep the model's classes. Classes imprinted before (listed in the model's
            metadata) stay trainable; the others are fixed base classes.

    Raises:
        ValueError: ``Failed to open file: <path>`` or the imprinting model's validation message.
    """

    def __init__(self, model_path: ModelSource, keep_classes: bool = False) -> None:
        model = _open(model_path)
        self._extractor: bytes | None = None
        self._head: ImprintingHead | KeepClassesHead
        if appends_classes(model, keep_classes):
            self._model = model
            self._head = open_kept_head(model)[0]
            self._embedding_dim = self._head.embedding_dim
            return
        if model.kind is not ModelKind.IMPRINTING and not _has_l2norm(model) \
                and model.kind in (ModelKind.EXTRACTOR, ModelKind.CLASSIFIER):
            self._model, self._head = self._build_on(model, keep_classes)
        else:
            info = imprinting_structure(model)  # PyCoral's rules and messages
            self._model = model
            if keep_classes:
                self._head = ImprintingHead.from_layer(read_imprinting_layer(model))
                self._head.normalize_examples = False
            else:
                self._head = ImprintingHead(scale=info.scale_factor, normalize_examples=False)
        self._embedding_dim = imprinting_structure(self._model).embedding_dim

    @staticmethod
    def _build_on(model: ModelFile, keep_classes: bool) -> tuple[ModelFile, ImprintingHead]:
        """Coral's structure appended to an extractor (or a cut classifier), and a head with its kept classes."""
        head = ImprintingHead(scale=DEFAULT_SCALE, normalize_examples=False)
        if keep_classes:
            rows, labels = cosine_class_rows(model)  # raises saying why the classes cannot be kept
            head.add_base_classes(rows, labels)
        tree, _ = extractor_tree(model)
        structure.build(tree, DEFAULT_SCALE, model.name)
        return ModelFile.from_tree(tree, model.name), head

    @property
    def embedding_dim(self) -> int:
        """Size of the embeddings :meth:`train` takes (the L2Norm output's last dimension; a kept classifier's embedding)."""
        return self._embedding_dim

    @property
    def num_classes(self) -> int:
        """Number of classes, kept base classes included."""
        return self._head.num_classes

    def serialize_extractor_model(self) -> bytes:
        """The model up to the L2Norm output (a kept classifier's embedding): run it on an image and pass its
        (dequantized) output to :meth:`train`."""
        if self._extractor is None:
            self._extractor = extractor_model(self._model).data
        return self._extractor

    def train(self, embedding: np.ndarray, class_id: int) -> None:
        """Add one embedding of shape ``(embedding_dim,)`` to class ``class_id``.

        ``class_id`` is a class imprinted before (also in an earlier session, with ``keep_classes``)
        or :attr:`num_classes` to start a new class.

        Raises:
            RuntimeError: ``Invalid weights array shape.``, ``Cannot change the base model classes not
                trained with imprinting method!``, ``The class index of a new category is too large!``,
                or a negative class id.
        """
        shape = np.shape(embedding)
        if shape != (self._embedding_dim,):
            raise TrainingError(f"Invalid weights array shape. Expected ({self._embedding_dim},), got {shape}.")
        if isinstance(class_id, (bool, np.bool_)) or not isinstance(class_id, (int, np.integer)):
            raise TrainingError(f"class id {class_id!r} is not an integer")
        self._head.add(np.asarray(embedding), int(class_id))

    def serialize_model(self) -> bytes:
        """The model with one row per class, as ``.tflite`` bytes.

        Raises:
            RuntimeError: ``Model is not trained.`` when there are no classes.
        """
        if isinstance(self._head, KeepClassesHead):
            if self._head.num_classes == self._head.base_classes:
                return self._model.data  # nothing added: the classifier as it was
            return write_appended_classes(self._model, self._head.export())
        if self._head.num_classes == 0:
            raise TrainingError("Model is not trained.")
        return write_head(self._model, self._head.export())
