"""A model's unknown rule: its metadata entry, and the in-memory copy of the model that also outputs what the rule reads.

A model lastlayer writes may carry a metadata entry ``lastlayer_unknown`` holding JSON
``{"tensor": name, "index": i, "rule": {...}}``: the embedding tensor the head reads (the input of
Coral's L2Norm for an imprinting head, of the class layer for a dense one) and the rule, as the
learner serialised it (:meth:`lastlayer.learn.unknown.UnknownRule.to_dict`; this module knows no
learning). The graph in the file is unchanged, so LiteRT, PyCoral and every other reader get
output 0, the scores, as before. lastlayer runs its own copy with that tensor added as a second
graph output (:func:`expose_tensors`) and applies the rule to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.model.file import ModelFile
from lastlayer.model.imprinting import find_structure
from lastlayer.model.metadata import read_metadata, remove_metadata, write_metadata
from lastlayer.model.names import as_text
from lastlayer.model.surgery import cut, locate_embedding

UNKNOWN_METADATA_NAME = "lastlayer_unknown"


@dataclass(frozen=True)
class StoredRule:
    """An unknown rule as a model stores it: the tensor it reads (index, name, values) and the rule's data."""

    tensor: int
    name: str
    size: int
    rule: dict[str, Any]


def head_input_tensor(model: schema.ModelT) -> int | None:
    """The embedding tensor a head reads: the L2Norm input of Coral's imprinting structure, else the class layer's input."""
    structure = find_structure(model)
    if structure is not None:
        return int(model.subgraphs[0].operators[structure.l2norm_op].inputs[0])
    point = locate_embedding(model)
    return None if point is None else int(point.tensor)


def unknown_rule_entry(model: schema.ModelT, rule: Mapping[str, Any], source: str = "the model") -> bytes:
    """The metadata entry (JSON bytes) storing ``rule`` for the tensor ``model``'s head reads.

    For writers that store the entry themselves (e.g. as one of :attr:`lastlayer.layer.AppendedClasses.metadata`
    under :data:`UNKNOWN_METADATA_NAME`); the tensor is found again by its name if its index moves.
    """
    index = head_input_tensor(model)
    if index is None:
        raise ModelError(f"{source} has no class layer whose input an unknown rule could read", subject="model")
    name = as_text(model.subgraphs[0].tensors[index].name)
    try:
        text = json.dumps({"tensor": name, "index": index, "rule": dict(rule)}, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"the unknown rule for {source} cannot be stored: {exc}") from None
    return text.encode("utf-8")


def store_unknown_rule(model: schema.ModelT, rule: Mapping[str, Any] | None, source: str = "the model") -> None:
    """Store ``rule`` (JSON-able) for the tensor the head reads, in place; ``None`` removes a stored rule."""
    if rule is None:
        remove_metadata(model, UNKNOWN_METADATA_NAME)
        return
    write_metadata(model, UNKNOWN_METADATA_NAME, unknown_rule_entry(model, rule, source))


def read_unknown_rule(model: ModelFile) -> StoredRule | None:
    """The rule ``model`` stores, or ``None``; a damaged entry is a :class:`ModelError` naming the file."""
    data = read_metadata(model.tree, UNKNOWN_METADATA_NAME)
    if data is None:
        return None
    fix = "write the model again, or turn the unknown answer off"
    try:
        entry = json.loads(data.decode("utf-8"))
        name, index, rule = entry["tensor"], entry["index"], entry["rule"]
        if not isinstance(name, str) or not isinstance(index, int) or not isinstance(rule, dict):
            raise TypeError("wrong types")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{model.name}: its unknown rule (metadata '{UNKNOWN_METADATA_NAME}') is damaged ({exc}); {fix}",
                         subject="model") from None
    tensors = model.tree.subgraphs[0].tensors or []
    if not (0 <= index < len(tensors) and as_text(tensors[index].name) == name):
        matches = [i for i, tensor in enumerate(tensors) if as_text(tensor.name) == name]
        if len(matches) != 1:
            raise ModelError(f"{model.name}: its unknown rule reads tensor {name!r}, which the model does not have (once); {fix}",
                             subject="model")
        index = matches[0]
    return StoredRule(index, name, int(np.prod(tensors[index].shape)), rule)


def rule_input_model(model: ModelFile) -> ModelFile | None:
    """``model`` cut at the tensor the unknown rule of a head written on it reads, when its extractor ends elsewhere;
    else ``None`` (the extractor's output is that tensor).

    Coral's imprinting model is the one such case: its extractor ends at the L2Norm output (unit
    vectors quantized in steps of 1/128), while the rule reads the L2Norm input, what it was derived on.
    """
    structure = model.analysis.imprinting
    if structure is None:
        return None
    tensor = int(model.tree.subgraphs[0].operators[structure.l2norm_op].inputs[0])  # what head_input_tensor finds
    return ModelFile.from_tree(cut(model.copy_tree(), tensor, model.name), f"{model.name} (the input of its L2Norm)")


def expose_tensors(model: ModelFile, tensors: Sequence[int]) -> ModelFile:
    """A copy of ``model`` with ``tensors`` (subgraph 0 indices) appended to its outputs, named as ``model``.

    Output 0 stays what it was; the file ``model`` came from is not touched.
    """
    tree = model.copy_tree()
    graph = tree.subgraphs[0]
    outputs = [int(i) for i in graph.outputs]
    graph.outputs = outputs + [int(i) for i in tensors if int(i) not in outputs]
    tree.signatureDefs = None  # a signature lists the outputs; the copy has more
    return ModelFile.from_tree(tree, model.name)
