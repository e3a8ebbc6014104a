"""A model analysed once: what it is and where its parts are, found on first use and kept with its ModelFile.

:attr:`ModelFile.analysis <lastlayer.model.file.ModelFile.analysis>` is a frozen :class:`ModelAnalysis`
(its kind, Coral's imprinting structure, the class layer and the embedding feeding it, an extractor's
output, the output type, whether classes were appended after a classifier's own), and
:attr:`ModelFile.extractor <lastlayer.model.file.ModelFile.extractor>` its embedding extractor, cut
once. The jobs, the head writers and PyCoral's engine read these instead of searching the graph again,
so a train job on a classifier cuts it once and an imprint job finds the imprinting structure once.
What the analysis cannot fail on lives here; what may be damaged (labels, the stored unknown rule, a
kept class layer's state) is read where it is used, so that opening a model never fails on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.heads import Embedding, extractor_output
from lastlayer.model.imprinting import ImprintingGraph, extractor_part, find_structure, validate
from lastlayer.model.keep import appended_operators
from lastlayer.model.names import tensor_type_name
from lastlayer.model.surgery import CutPoint, cut, locate_embedding

_TYPE_NAMES = {"UINT8": "uint8", "INT8": "int8", "FLOAT32": "float32"}


@dataclass(frozen=True)
class ModelAnalysis:
    """What lastlayer needs to know about a model's graph, found once.

    Attributes:
        kind: what the model is (:class:`~lastlayer.model.file.ModelKind`).
        imprinting: where Coral's imprinting parts are (an ``IMPRINTING`` model), else ``None``.
        class_layer: a classifier's class layer and the embedding feeding it (where it is cut), else ``None``.
        embedding: an extractor's output a head attaches to (an ``EXTRACTOR``), else ``None``.
        output_type: the type a model learned on this one keeps (``uint8``, ``int8``, ``float32``) when the
            graph says it: a classifier's or imprinting model's output, an extractor's input; else ``None``
            (then the extractor's output type stands in, see :func:`lastlayer.model.export.original_output_type`).
        appended_classes: the model holds classes appended after its own (:mod:`lastlayer.model.keep`).
    """

    kind: ModelKind
    imprinting: ImprintingGraph | None = None
    class_layer: CutPoint | None = None
    embedding: Embedding | None = None
    output_type: str | None = None
    appended_classes: bool = False


def output_type_name(tensor: schema.TensorT) -> str | None:
    """``uint8``, ``int8`` or ``float32`` for a tensor of that type, else ``None``."""
    return _TYPE_NAMES.get(tensor_type_name(tensor.type))


def analyse(model: ModelFile) -> ModelAnalysis:
    """The analysis of ``model`` (use :attr:`ModelFile.analysis <lastlayer.model.file.ModelFile.analysis>`, which keeps it)."""
    tree = model.tree
    graph = tree.subgraphs[0] if tree.subgraphs else schema.SubGraphT()
    imprinting = find_structure(tree)
    # A class layer behind the output (through softmax, reshape, quantize...) makes a classifier,
    # even when the last op is a QUANTIZE as in TF2 full-integer models.
    class_layer = None if imprinting is not None else locate_embedding(tree)
    embedding = None if imprinting is not None or class_layer is not None else extractor_output(tree)
    if imprinting is not None:
        kind = ModelKind.IMPRINTING
    elif class_layer is not None:
        kind = ModelKind.CLASSIFIER
    else:
        kind = ModelKind.EXTRACTOR if embedding is not None else ModelKind.OTHER
    output_type = None
    if kind in (ModelKind.CLASSIFIER, ModelKind.IMPRINTING) and len(graph.outputs or []) == 1:
        output_type = output_type_name(graph.tensors[graph.outputs[0]])
    elif kind is ModelKind.EXTRACTOR and len(graph.inputs or []) == 1:
        output_type = output_type_name(graph.tensors[graph.inputs[0]])
    return ModelAnalysis(kind, imprinting, class_layer, embedding, output_type, appended_operators(tree))


def imprinting_structure(model: ModelFile) -> ImprintingGraph:
    """Coral's imprinting structure of ``model``, or PyCoral's validation message as a :class:`ModelError`."""
    return model.analysis.imprinting or validate(model.tree, model.name)


def extractor_file(model: ModelFile) -> ModelFile:
    """``model``'s embedding extractor (use :attr:`ModelFile.extractor <lastlayer.model.file.ModelFile.extractor>`, which keeps it).

    An extractor is itself, a classifier is cut at the input of its class layer, an imprinting model
    loses its head (cut at the L2Norm output).
    """
    inputs = len(model.tree.subgraphs[0].inputs or []) if model.tree.subgraphs else 0
    if inputs != 1:  # said before anything is cut or announced: the one thing wrong with such a model
        raise ModelError(f"{model.name} has {inputs} inputs; lastlayer needs a model with one image input", subject="model")
    analysis = model.analysis
    if analysis.kind is ModelKind.EXTRACTOR:
        return model
    if analysis.kind is ModelKind.CLASSIFIER:
        tree = cut(model.copy_tree(), analysis.class_layer.tensor, model.name)  # type: ignore[union-attr]
    elif analysis.kind is ModelKind.IMPRINTING:
        tree = extractor_part(model.tree, analysis.imprinting)  # type: ignore[arg-type]
    else:
        raise ModelError(f"{model.name} is neither an embedding extractor nor a classifier whose class layer lastlayer can find; "
                         "cut it at its embedding tensor first (see 'lastlayer inspect')", subject="model")
    return ModelFile.from_tree(tree, f"{model.name} (embedding extractor)")
