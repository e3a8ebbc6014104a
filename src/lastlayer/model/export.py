"""Write a trained head into a model, and read one back: the only place heads meet model files.

A head arrives as a :class:`~lastlayer.layer.DenseLayer` (plain arrays). With ``normalize_input``
it becomes Coral's imprinting structure (``L2_NORMALIZATION -> CONV_2D -> MUL -> RESHAPE ->
SOFTMAX``, readable by PyCoral); otherwise ``FULLY_CONNECTED -> SOFTMAX`` after the embedding.
Labels, the learner's state and the unknown rule (see :mod:`lastlayer.model.unknown`) are stored in
the model's metadata, and so is the input normalisation
(TFLite ``NormalizationOptions``), so that lastlayer and other readers of the metadata feed the
learned model as the base was fed.

The output keeps the type of the base model's output (see :func:`original_output_type`) unless
another is asked for: a DEQUANTIZE or QUANTIZE after the head converts it.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.layer import DenseLayer
from lastlayer.model import imprinting as structure
from lastlayer.model.analysis import imprinting_structure, output_type_name
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.heads import OUTPUT_TYPES, append_dense_softmax_head, check_extractor, convert_output
from lastlayer.model.io import model_to_bytes
from lastlayer.model.labels import set_embedded_labels
from lastlayer.model.names import as_text
from lastlayer.model.normalization import Normalization, input_normalization
from lastlayer.model.surgery import CutPoint, class_layer_parameters
from lastlayer.model.tflite_metadata import write_input_normalization
from lastlayer.model.unknown import store_unknown_rule


def extractor_tree(model: ModelFile) -> tuple[schema.ModelT, CutPoint | None]:
    """A copy of ``model``'s embedding extractor, free to edit, and where a classifier was cut (``None`` otherwise).

    The extractor is :attr:`ModelFile.extractor <lastlayer.model.file.ModelFile.extractor>` (an extractor as
    it is, a classifier cut at the input of its class layer, an imprinting model without its head), made once.
    """
    return model.extractor.copy_tree(), model.analysis.class_layer


def extractor_model(model: ModelFile) -> ModelFile:
    """``model``'s embedding extractor (``model`` itself when it already is one): the same object every time."""
    return model.extractor


def output_type_of(model: ModelFile) -> str:
    """The type a dense head after ``model``'s embedding computes in (the extractor's output type).

    The saved model's output type may differ (see :func:`original_output_type`); this one decides how
    the head's weights and logits are quantized.
    """
    found = model.analysis.embedding if model.kind is ModelKind.EXTRACTOR else None
    return str((found or check_extractor(model.extractor.tree, model.name)).dtype)


def original_output_type(model: ModelFile) -> str:
    """The output type a model learned on ``model`` keeps: ``uint8``, ``int8`` or ``float32``.

    A classifier or imprinting model: the type of its output. An embedding extractor has no class
    output, so its input type stands in for it: uint8-in (Coral's) extractors give uint8 scores, int8-in
    ones int8, and float-in ones float32 (also full-integer extractors with float I/O). Anything else:
    the extractor's output type.
    """
    return model.analysis.output_type or output_type_of(model)


def write_head(base: ModelFile, layer: DenseLayer, *, output_type: str | None = None,
               normalization: Normalization | None = None) -> bytes:
    """``base``'s extractor with ``layer`` appended, as ``.tflite`` bytes; ``base`` is not changed.

    ``output_type`` (``uint8``, ``int8``, ``float32``; ``None``: :func:`original_output_type`) is the
    saved model's output type. A dense head computes in the extractor's output type and an imprinting
    head in uint8 (Coral's layout); a DEQUANTIZE or QUANTIZE converts to ``output_type`` when it differs.
    ``normalization`` (default: :func:`~lastlayer.model.normalization.input_normalization` of ``base``)
    is stored as the input's ``NormalizationOptions`` in the model's TFLite metadata.
    """
    if layer.weights.ndim != 2 or layer.bias.shape != (layer.num_classes,) or layer.num_classes < 1:
        raise ModelError(f"a head needs weights [C, D] and bias [C], got {list(layer.weights.shape)} and {list(layer.bias.shape)}")
    if output_type is not None and output_type not in OUTPUT_TYPES:
        raise ModelError(f"output type {output_type!r} is not one of {', '.join(OUTPUT_TYPES)}", subject="output_type")
    output_type = output_type or original_output_type(base)
    tree = _imprinting_tree(base, layer, output_type) if layer.normalize_input else _dense_tree(base, layer)
    convert_output(tree, output_type)
    if layer.labels:
        set_embedded_labels(tree, list(layer.labels))
    store_unknown_rule(tree, layer.unknown, base.name)  # None drops a rule the base carried: it was for other classes
    chosen = normalization or input_normalization(base)
    write_input_normalization(tree, chosen.mean, chosen.std)
    return model_to_bytes(tree)


def _dense_tree(base: ModelFile, layer: DenseLayer) -> schema.ModelT:
    tree, _ = extractor_tree(base)
    weights = np.asarray(layer.weights, dtype=np.float32) * np.float32(layer.scale)
    append_dense_softmax_head(tree, weights, np.asarray(layer.bias, np.float32), layer.logit_range, source=base.name)
    return tree


def _imprinting_tree(base: ModelFile, layer: DenseLayer, output_type: str) -> schema.ModelT:
    if base.kind is ModelKind.IMPRINTING:
        tree, info = base.copy_tree(), base.analysis.imprinting  # the copy has the same structure
    else:
        tree, _ = extractor_tree(base)
        info = structure.validate(structure.build(tree, layer.scale, base.name), base.name)
    if info.output_op is not None and output_type_name(tree.subgraphs[0].tensors[tree.subgraphs[0].outputs[0]]) != output_type:
        info = structure.drop_output_conversion(tree, info)  # another output type was asked for: converted anew
    if info.embedding_dim != layer.dim:
        raise ModelError(f"{base.name} gives {info.embedding_dim}-d embeddings but the head has {layer.dim}-d rows; "
                         "use the extractor the head was trained with")
    if abs(info.scale_factor - layer.scale) > 1e-6 * max(1.0, layer.scale):
        info = structure.set_scale_factor(tree, info, layer.scale)
    norms = {int(k): float(v) for k, v in layer.state.get("norms", {}).items()}
    structure.write_classes(tree, info, np.asarray(layer.weights, dtype=np.float32), norms)
    structure.write_state(tree, {**layer.state, "scale": float(layer.scale)})
    return tree


def read_imprinting_layer(model: ModelFile) -> DenseLayer:
    """The classes stored in an imprinting model: rows, norms and shots (lastlayer's state or PyCoral's
    description), labels and ``s``."""
    info = imprinting_structure(model)  # PyCoral's message when it has none
    rows = structure.class_rows(model.tree, info)
    state = structure.read_state(model.tree) or {}
    if not state.get("norms"):
        state["norms"] = {str(k): v for k, v in structure.parse_description(as_text(model.tree.description)).items()}
    labels = model.label_list(len(rows)) or [str(i) for i in range(len(rows))]
    return DenseLayer(weights=rows.astype(np.float32), bias=np.zeros(len(rows), np.float32), scale=info.scale_factor,
                      normalize_input=True, logit_range=(-info.scale_factor, info.scale_factor), labels=labels, state=state)


# A class layer can become fixed imprinted rows only if it already ranks classes by cosine:
# equal row norms and no bias (then logit = |w| |x| cos). These bounds allow rounding noise only.
_MAX_NORM_RATIO = 1.1
_MAX_RELATIVE_BIAS = 0.05


def cosine_class_rows(model: ModelFile) -> tuple[np.ndarray, list[str]]:
    """A classifier's class-layer rows, L2-normalised ``[C, D]``, and its labels, if the layer is a cosine classifier.

    Otherwise a :class:`ModelError` says why its classes cannot be kept.
    """
    if model.kind is ModelKind.EXTRACTOR:
        raise ModelError(f"{model.name} is an embedding extractor: it has no classes to keep", subject="keep_classes")
    point = model.analysis.class_layer
    if model.kind is not ModelKind.CLASSIFIER or point is None:
        raise ModelError(f"{model.name} has no class layer whose classes could be kept", subject="keep_classes")
    weights, bias = class_layer_parameters(model.tree, point)
    norms = np.linalg.norm(weights, axis=1)
    median = float(np.median(norms))
    if norms.min() <= 1e-5 or norms.max() / norms.min() > _MAX_NORM_RATIO or np.abs(bias).max() > _MAX_RELATIVE_BIAS * median:
        raise ModelError(
            f"{model.name}: its classes cannot be kept as imprinted classes because its class layer is not a cosine classifier "
            f"(row norms {norms.min():.2f}..{norms.max():.2f}, biases up to {np.abs(bias).max():.2f}), so imprinted classes "
            "would outrank them; imprint without keeping its classes, or start from a Coral L2-norm imprinting model",
            subject="keep_classes")
    labels = model.label_list(len(weights)) or [str(i) for i in range(len(weights))]
    return weights / norms[:, None], labels
