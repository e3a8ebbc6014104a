"""TensorFlow Lite's own model metadata (the ``TFLITE_METADATA`` entry): the input normalisation in it.

Model Maker, MediaPipe and TFLite's metadata writers store a ``ModelMetadata`` flatbuffer (file
identifier ``M001``) in the metadata entry ``TFLITE_METADATA``. Its input tensor's process units may
hold ``NormalizationOptions`` (``mean``, ``std``: one value, or one per channel): the model expects
``(pixel - mean) / std``. This module reads that, and writes it into models lastlayer saves, with the
generated schema module (:mod:`lastlayer.model.metadata_schema_py_generated`), never by hand.

lastlayer's own entries (``labels``, ``lastlayer_imprinting``) are separate metadata entries and are
not touched here.
"""

from __future__ import annotations

from typing import Sequence

import flatbuffers
from ai_edge_litert import schema_py_generated as schema

from lastlayer.model import metadata_schema_py_generated as meta
from lastlayer.model.metadata import read_metadata, write_metadata
from lastlayer.model.names import as_text

TFLITE_METADATA_NAME = "TFLITE_METADATA"
METADATA_FILE_IDENTIFIER = b"M001"
# The metadata parser version that introduced NormalizationOptions (readers refuse newer-than-known files).
MIN_PARSER_VERSION = "1.0.0"


def read_model_metadata(model: schema.ModelT) -> meta.ModelMetadataT | None:
    """The model's ``ModelMetadata``, or ``None`` when it has none or it cannot be parsed."""
    data = read_metadata(model, TFLITE_METADATA_NAME)
    if not data or len(data) < 8 or data[4:8] != METADATA_FILE_IDENTIFIER:
        return None
    try:
        return meta.ModelMetadataT.InitFromPackedBuf(data, 0)
    except Exception:  # the pure-Python reader raises assorted errors on damaged buffers
        return None


def _normalization_unit(tensor: meta.TensorMetadataT | None) -> meta.NormalizationOptionsT | None:
    for unit in (tensor.processUnits if tensor is not None else None) or []:
        if unit.optionsType == meta.ProcessUnitOptions.NormalizationOptions and unit.options is not None:
            return unit.options
    return None


def _input_tensor_metadata(metadata: meta.ModelMetadataT | None) -> meta.TensorMetadataT | None:
    subgraphs = metadata.subgraphMetadata if metadata is not None else None
    if not subgraphs or not subgraphs[0].inputTensorMetadata:
        return None
    return subgraphs[0].inputTensorMetadata[0]


def read_input_normalization(model: schema.ModelT) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` of the first input's ``NormalizationOptions``, or ``None`` without usable ones.

    Empty lists, a zero or non-finite std, or mismatched lengths (neither 1 nor equal) count as none.
    """
    options = _normalization_unit(_input_tensor_metadata(read_model_metadata(model)))
    if options is None or options.mean is None or options.std is None:
        return None
    mean, std = [float(v) for v in options.mean], [float(v) for v in options.std]
    if not mean or not std or (len(mean) != len(std) and 1 not in (len(mean), len(std))):
        return None
    if any(not (abs(s) > 0 and abs(s) < float("inf")) for s in std) or any(m != m or abs(m) == float("inf") for m in mean):
        return None
    return mean, std


def _normalization_process_unit(mean: Sequence[float], std: Sequence[float]) -> meta.ProcessUnitT:
    options = meta.NormalizationOptionsT()
    options.mean, options.std = [float(v) for v in mean], [float(v) for v in std]
    unit = meta.ProcessUnitT()
    unit.optionsType, unit.options = meta.ProcessUnitOptions.NormalizationOptions, options
    return unit


def _image_input_metadata(old: meta.TensorMetadataT | None, name: str) -> meta.TensorMetadataT:
    tensor = meta.TensorMetadataT()
    tensor.name = as_text(old.name) if old is not None and old.name else name
    tensor.description = old.description if old is not None else "Input image to be classified."
    content = meta.ContentT()
    content.contentPropertiesType = meta.ContentProperties.ImageProperties
    image = meta.ImagePropertiesT()
    image.colorSpace = meta.ColorSpaceType.RGB
    content.contentProperties = image
    tensor.content = old.content if old is not None and old.content is not None else content
    tensor.stats = old.stats if old is not None else None
    return tensor


def _scores_output_metadata(name: str) -> meta.TensorMetadataT:
    tensor = meta.TensorMetadataT()
    tensor.name = name
    tensor.description = "Probabilities of the classes (labels in the model's 'labels' metadata entry)."
    content = meta.ContentT()
    content.contentPropertiesType = meta.ContentProperties.FeatureProperties
    content.contentProperties = meta.FeaturePropertiesT()
    tensor.content = content
    return tensor


def write_input_normalization(model: schema.ModelT, mean: Sequence[float], std: Sequence[float], *,
                              name: str = "lastlayer classifier") -> None:
    """Store ``(mean, std)`` as the input's ``NormalizationOptions`` in a fresh ``TFLITE_METADATA``, in place.

    The model name, description, and the input tensor's name, content and stats of existing metadata
    are kept; its associated files are dropped (they lived in a zip that a rewritten model no longer
    carries), and the output is described as class scores (the model has a new head).
    """
    old = read_model_metadata(model)
    old_input = _input_tensor_metadata(old)
    graph = model.subgraphs[0]
    tensor = _image_input_metadata(old_input, as_text(graph.tensors[graph.inputs[0]].name) if graph.inputs else "image")
    tensor.processUnits = [_normalization_process_unit(mean, std)]
    subgraph = meta.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [tensor]
    subgraph.outputTensorMetadata = [_scores_output_metadata(as_text(graph.tensors[t].name)) for t in graph.outputs or []]
    metadata = meta.ModelMetadataT()
    metadata.name = old.name if old is not None and old.name else name
    metadata.description = old.description if old is not None else None
    metadata.version = old.version if old is not None else None
    metadata.author = old.author if old is not None else None
    metadata.license = old.license if old is not None else None
    metadata.subgraphMetadata = [subgraph]
    metadata.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(1024)
    builder.Finish(metadata.Pack(builder), METADATA_FILE_IDENTIFIER)
    write_metadata(model, TFLITE_METADATA_NAME, bytes(builder.Output()))
