"""A small, readable view of a model: operators, tensors, quantization, buffers, metadata.

The view is plain dataclasses (``to_dict`` for JSON, ``to_text`` for people), built once from a
``ModelT``; it never changes the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.io import ModelSource, load_model
from lastlayer.model.names import EDGETPU_CUSTOM_CODE, as_text, builtin_code, operator_name, tensor_type_name


@dataclass
class Quantization:
    """Quantization of one tensor; several scales mean per-axis quantization on ``axis``."""

    scale: list[float]
    zero_point: list[int]
    axis: int = 0

    @property
    def per_axis(self) -> bool:
        return len(self.scale) > 1


@dataclass
class TensorInfo:
    index: int
    name: str
    shape: list[int]
    dtype: str
    quantization: Quantization | None
    buffer: int
    buffer_bytes: int
    shape_signature: list[int] | None = None

    @property
    def is_constant(self) -> bool:
        return self.buffer_bytes > 0

    @property
    def is_dynamic(self) -> bool:
        return bool(self.shape_signature) and any(d < 0 for d in self.shape_signature)


@dataclass
class OperatorInfo:
    index: int
    name: str
    builtin_code: int
    version: int
    inputs: list[int]
    outputs: list[int]

    @property
    def is_edgetpu(self) -> bool:
        return self.name == EDGETPU_CUSTOM_CODE


@dataclass
class SubgraphView:
    name: str
    inputs: list[int]
    outputs: list[int]
    tensors: list[TensorInfo]
    operators: list[OperatorInfo]


@dataclass
class GraphView:
    """What ``lastlayer inspect`` shows."""

    version: int
    description: str
    subgraphs: list[SubgraphView]
    buffer_count: int
    constant_bytes: int
    metadata: dict[str, int] = field(default_factory=dict)

    @property
    def main(self) -> SubgraphView:
        return self.subgraphs[0]

    @property
    def has_edgetpu_op(self) -> bool:
        return any(op.is_edgetpu for sg in self.subgraphs for op in sg.operators)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["has_edgetpu_op"] = self.has_edgetpu_op
        return data

    def to_text(self) -> str:
        lines = [
            f"TFLite schema version {self.version}; description: {self.description!r}",
            f"{len(self.subgraphs)} subgraph(s), {self.buffer_count} buffers, {self.constant_bytes:,} bytes of constants",
        ]
        if self.metadata:
            lines.append("metadata: " + ", ".join(f"{name} ({size:,} bytes)" for name, size in self.metadata.items()))
        for number, sg in enumerate(self.subgraphs):
            lines.append(f"subgraph {number} {sg.name!r}: {len(sg.operators)} operators, {len(sg.tensors)} tensors")
            for label, ids in (("input", sg.inputs), ("output", sg.outputs)):
                for tid in ids:
                    lines.append(f"  {label:6} {_tensor_line(sg.tensors[tid])}")
            for op in sg.operators:
                mark = "  [Edge TPU]" if op.is_edgetpu else ""
                lines.append(f"  op {op.index:3} {op.name} v{op.version}{mark}")
                for tid in op.inputs:
                    if tid >= 0:
                        lines.append(f"         in  {_tensor_line(sg.tensors[tid])}")
                for tid in op.outputs:
                    lines.append(f"         out {_tensor_line(sg.tensors[tid])}")
        return "\n".join(lines)


def _tensor_line(t: TensorInfo) -> str:
    text = f"#{t.index} {t.name} {t.dtype}{t.shape}"
    q = t.quantization
    if q is not None:
        if q.per_axis:
            text += f" per-axis({len(q.scale)} scales, axis {q.axis})"
        else:
            text += f" q(scale={q.scale[0]:.6g}, zero={q.zero_point[0]})"
    if t.is_constant:
        text += f" const {t.buffer_bytes:,} B"
    return text


def _quantization(q: schema.QuantizationParametersT | None) -> Quantization | None:
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    zero = q.zeroPoint if q.zeroPoint is not None else np.zeros(len(q.scale), dtype=np.int64)
    return Quantization(
        scale=[float(s) for s in q.scale], zero_point=[int(z) for z in zero], axis=int(q.quantizedDimension)
    )


def _buffer_size(model: schema.ModelT, index: int) -> int:
    if not model.buffers or index >= len(model.buffers):
        return 0
    buffer = model.buffers[index]
    return len(buffer.data) if buffer.data is not None else int(buffer.size or 0)


def _tensor_info(model: schema.ModelT, index: int, tensor: schema.TensorT) -> TensorInfo:
    signature = tensor.shapeSignature
    return TensorInfo(
        index=index,
        name=as_text(tensor.name),
        shape=[int(d) for d in (tensor.shape if tensor.shape is not None else [])],
        dtype=tensor_type_name(tensor.type),
        quantization=_quantization(tensor.quantization),
        buffer=int(tensor.buffer),
        buffer_bytes=_buffer_size(model, int(tensor.buffer)),
        shape_signature=[int(d) for d in signature] if signature is not None and len(signature) else None,
    )


def _subgraph_view(model: schema.ModelT, sg: schema.SubGraphT) -> SubgraphView:
    op_codes = model.operatorCodes or []
    operators = []
    for index, op in enumerate(sg.operators or []):
        code = op_codes[op.opcodeIndex]
        operators.append(
            OperatorInfo(
                index=index,
                name=operator_name(code),
                builtin_code=builtin_code(code),
                version=int(code.version),
                inputs=[int(i) for i in (op.inputs if op.inputs is not None else [])],
                outputs=[int(i) for i in (op.outputs if op.outputs is not None else [])],
            )
        )
    return SubgraphView(
        name=as_text(sg.name),
        inputs=[int(i) for i in (sg.inputs if sg.inputs is not None else [])],
        outputs=[int(i) for i in (sg.outputs if sg.outputs is not None else [])],
        tensors=[_tensor_info(model, i, t) for i, t in enumerate(sg.tensors or [])],
        operators=operators,
    )


def view_of(model: schema.ModelT) -> GraphView:
    """Build the readable view of a loaded ``ModelT``."""
    buffers = model.buffers or []
    return GraphView(
        version=int(model.version),
        description=as_text(model.description),
        subgraphs=[_subgraph_view(model, sg) for sg in (model.subgraphs or [])],
        buffer_count=len(buffers),
        constant_bytes=sum(_buffer_size(model, i) for i in range(len(buffers))),
        metadata={as_text(m.name): _buffer_size(model, m.buffer) for m in (model.metadata or [])},
    )


def inspect_model(source: ModelSource | schema.ModelT) -> GraphView:
    """Load ``source`` (path, bytes or ``ModelT``) and return its :class:`GraphView`."""
    model = source if isinstance(source, schema.ModelT) else load_model(source)
    return view_of(model)


@dataclass
class Feeding:
    """How lastlayer feeds a model and what it gives back: what ``inspect`` shows above the graph.

    ``input_type`` / ``output_type`` are ``None`` for a model without graph inputs / outputs (it can be
    inspected, not run).
    """

    input_type: str | None
    input_shape: list[int]
    layout: str | None  # e.g. "NCHW RGB 224x224"; None when the input is no image
    output_type: str | None
    output_shape: list[int]
    normalization: dict[str, Any]
    normalization_text: str
    input_count: int = 1
    output_count: int = 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["normalization_text"]
        return data

    def to_text(self) -> str:
        if self.input_type is None:
            given = "none (the model has no graph input: lastlayer cannot feed it)"
        else:
            layout = f" ({self.layout})" if self.layout else " (not an image input)"
            more = f"; {self.input_count - 1} more input(s) lastlayer does not feed" if self.input_count > 1 else ""
            given = f"{self.input_type}{self.input_shape}{layout}{more}"
        taken = "none" if self.output_type is None else f"{self.output_type}{self.output_shape}" + (
            f"; {self.output_count - 1} more output(s)" if self.output_count > 1 else "")
        return "\n".join([f"input:  {given}", f"output: {taken}", f"normalisation: {self.normalization_text}"])


def feeding_of(model: Any) -> Feeding:
    """The :class:`Feeding` of a :class:`~lastlayer.model.file.ModelFile` (its first input and output)."""
    from lastlayer.errors import LastLayerError
    from lastlayer.model.input_layout import image_layout
    from lastlayer.model.normalization import input_normalization

    graph = model.tree.subgraphs[0]
    inputs, outputs = list(graph.inputs or []), list(graph.outputs or [])
    first_in = graph.tensors[inputs[0]] if inputs else None
    first_out = graph.tensors[outputs[0]] if outputs else None
    layout: str | None = None
    if first_in is not None:
        try:
            layout = image_layout(first_in.shape, model.name).describe()
        except LastLayerError:
            layout = None
    normalization = input_normalization(model)
    return Feeding(input_type=None if first_in is None else tensor_type_name(first_in.type).lower(),
                   input_shape=[] if first_in is None else [int(d) for d in first_in.shape], layout=layout,
                   output_type=None if first_out is None else tensor_type_name(first_out.type).lower(),
                   output_shape=[] if first_out is None else [int(d) for d in first_out.shape],
                   normalization=normalization.to_dict(), normalization_text=normalization.describe(),
                   input_count=len(inputs), output_count=len(outputs))
