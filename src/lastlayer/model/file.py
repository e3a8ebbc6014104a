"""A model opened once: its name, bytes, normalised object tree, kind and labels, passed along everywhere.

Every command and API entry point opens a model through :meth:`ModelFile.read` (or
:func:`lastlayer.model.zoo.open_model`, which first finds it) and hands the :class:`ModelFile` to the
interpreter, the checks, the head writers and the label reader, so a file is read, verified and
parsed exactly once. What kind of model it is, and where its parts are, is found once, by looking at
the graph (never by catching exceptions), and kept with it (:attr:`ModelFile.analysis`), as is its
embedding extractor (:attr:`ModelFile.extractor`).
"""

from __future__ import annotations

import copy
import enum
import os
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Union

from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.io import load_model, model_to_bytes, read_file
from lastlayer.model.names import EDGETPU_CUSTOM_CODE, custom_code

if TYPE_CHECKING:
    from lastlayer.model.analysis import ModelAnalysis


class ModelKind(str, enum.Enum):
    """What a model is, as far as lastlayer is concerned."""

    CLASSIFIER = "classifier"  # its output comes from a class layer (FC / 1x1 conv), maybe via softmax: can be cut
    EXTRACTOR = "extractor"  # one [1, D] or [1, 1, 1, D] output, not from a class layer or softmax
    IMPRINTING = "imprinting"  # Coral's imprinting structure (L2Norm, Conv, Mul, Reshape, Softmax)
    OTHER = "other"  # anything else (detection, segmentation, several outputs ...)


class LabelsWarning(UserWarning):
    """A model's embedded labels could not be read; class ids are shown instead."""


@dataclass(frozen=True, eq=False)
class ModelFile:
    """One verified, parsed model.

    Attributes:
        name: how to call it in messages (its path, or the name given for bytes).
        data: the file's bytes, exactly as read.
        tree: the flatbuffers object tree (``ModelT``) with index lists as plain ``list[int]``.
            Treat it as read-only; edit :meth:`copy_tree` instead.
    """

    name: str
    data: bytes
    tree: schema.ModelT

    @classmethod
    def read(cls, path: Union[str, os.PathLike[str]]) -> ModelFile:
        """Read and verify ``path``."""
        data, name = read_file(path)
        return cls(name, data, load_model(data, source=name))

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<model bytes>") -> ModelFile:
        """Verify and parse model bytes, naming them ``name`` in messages."""
        data = bytes(data)
        return cls(name, data, load_model(data, source=name))

    @classmethod
    def from_tree(cls, tree: schema.ModelT, name: str = "<edited model>") -> ModelFile:
        """Pack an edited tree once, verify the bytes, and keep both."""
        data = model_to_bytes(tree)
        return cls(name, data, load_model(data, source=name))

    def copy_tree(self) -> schema.ModelT:
        """A deep copy of the tree, free to edit."""
        return copy.deepcopy(self.tree)

    @property
    def path(self) -> Path:
        return Path(self.name)

    @cached_property
    def edgetpu(self) -> bool:
        """True when the model holds the compiled ``edgetpu-custom-op``."""
        return any(custom_code(code) == EDGETPU_CUSTOM_CODE for code in self.tree.operatorCodes or [])

    @cached_property
    def analysis(self) -> ModelAnalysis:
        """What the model is and where its parts are (:class:`~lastlayer.model.analysis.ModelAnalysis`), found once."""
        from lastlayer.model.analysis import analyse

        return analyse(self)

    @property
    def kind(self) -> ModelKind:
        """What the model is: a classifier, an extractor, Coral's imprinting model, or other."""
        return self.analysis.kind

    @cached_property
    def extractor(self) -> ModelFile:
        """The model's embedding extractor, made once: itself, a classifier cut at its class layer's input, or an
        imprinting model without its head (a :class:`~lastlayer.errors.ModelError` for anything else)."""
        from lastlayer.model.analysis import extractor_file

        return extractor_file(self)

    @cached_property
    def labels(self) -> dict[int, str] | None:
        """Labels stored in the model (metadata entry or appended zip), or ``None``.

        Labels that are present but unreadable give a :class:`LabelsWarning` naming the model.
        """
        from lastlayer.model.labels import EmbeddedLabelsError, embedded_labels

        try:
            return embedded_labels(self.tree, self.data)
        except EmbeddedLabelsError as exc:
            warnings.warn(f"{self.name}: {exc}; showing class ids instead", LabelsWarning, stacklevel=2)
            return None

    def label_list(self, count: int) -> list[str] | None:
        """The labels as a list of ``count`` names (ids as text where missing), or ``None`` without labels."""
        table = self.labels
        if not table:
            return None
        return [table.get(i, str(i)) for i in range(count)]
