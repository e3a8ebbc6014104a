"""The model's structure: buffers, operator codes, metadata, tensors, graph indices and operator order.

:class:`Checker` walks the ``ModelT`` tree once; the operator, quantization and control-flow rules
are mixed in from their own modules.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.model.names import (
    BUILTIN_OPERATOR_NAMES,
    TENSOR_TYPE_NAMES,
    as_text,
    builtin_code,
    operator_name,
    tensor_type_name,
)
from lastlayer.model.validate.common import ELEMENT_BYTES, HINT, MAX_ELEMENTS, MAX_RANK, T, ints, length
from lastlayer.model.validate.memory import MemoryChecks
from lastlayer.model.validate.operators import OperatorChecks
from lastlayer.model.validate.quantization import QuantizationChecks
from lastlayer.model.validate.scales import ScaleChecks
from lastlayer.model.validate.shapes import ShapeChecks
from lastlayer.model.validate.signatures import (
    CUSTOM_SIGNATURES,
    GRAPH_INPUT_TYPES,
    GRAPH_OUTPUT_TYPES,
    SIGNATURES,
    type_names,
)


class Checker(OperatorChecks, QuantizationChecks, ScaleChecks, ShapeChecks, MemoryChecks):
    """One validation of one model; :meth:`run` raises :class:`ModelError` at the first problem."""

    # ----------------------------------------------------------------- whole model
    def run(self) -> list[list[list[int]]]:
        """Check the model; return the shapes LiteRT will compute, by subgraph and tensor."""
        if not self.subgraphs:
            raise ModelError(f"{self.source} is not a valid TFLite model: it has no subgraph (no graph to run); {HINT}")
        self.check_buffers()
        self.check_codes()
        derived = []
        for number, graph in enumerate(self.subgraphs):
            self.check_subgraph(number, graph)
            derived.append(self.derived)
        if not length(self.subgraphs[0].outputs):
            raise ModelError(f"{self.source} is not a valid TFLite model: its main graph has no outputs; {HINT}")
        self.check_calls()
        self.check_metadata()
        return derived

    def check_buffers(self) -> None:
        for index, buffer in enumerate(self.buffers):
            if buffer is None:
                continue
            offset, size = int(buffer.offset or 0), int(buffer.size or 0)
            if offset < 0 or size < 0:
                self.fail(f"buffer {index}", f"negative offset/size ({offset}, {size})")
            if offset > 1 and self.file_size is not None and offset + size > self.file_size:
                self.fail(f"buffer {index}", f"its data ({size} bytes at offset {offset}) lies past the end of the file ({self.file_size} bytes)")

    def check_codes(self) -> None:
        self.code_names = [operator_name(code) for code in self.codes]
        for index, code in enumerate(self.codes):
            value = builtin_code(code)
            if value not in BUILTIN_OPERATOR_NAMES:
                self.fail(f"operator code {index}", f"unknown builtin operator {value}")
            if int(code.deprecatedBuiltinCode) < 0:
                self.fail(f"operator code {index}", f"negative builtin code {int(code.deprecatedBuiltinCode)}")
            if int(code.version) < 1:
                self.fail(f"operator code {index} ({operator_name(code)})", f"version {int(code.version)} (must be 1 or more)")
            if value == schema.BuiltinOperator.CUSTOM:
                self.check_text(f"operator code {index} (custom)", code.customCode)

    def check_metadata(self) -> None:
        for entry in self.model.metadata or []:
            self.check_text("metadata", entry.name)
            if not 0 <= int(entry.buffer) < max(len(self.buffers), 1):
                self.fail(f"metadata {entry.name!r}", f"buffer index {int(entry.buffer)} out of range (model has {len(self.buffers)} buffers)")
        for index in ints(self.model.metadataBuffer):
            if not 0 <= index < len(self.buffers):
                self.fail("metadata buffer list", f"buffer index {index} out of range (model has {len(self.buffers)} buffers)")
        for signature in self.model.signatureDefs or []:
            sub = int(signature.subgraphIndex)
            if not 0 <= sub < len(self.subgraphs):
                self.fail("signature", f"subgraph index {sub} out of range ({len(self.subgraphs)} subgraphs)")
            count = length(self.subgraphs[sub].tensors)
            self.check_text("signature", signature.signatureKey)
            for entry in list(signature.inputs or []) + list(signature.outputs or []):
                self.check_text("signature", entry.name)
                if not 0 <= int(entry.tensorIndex) < count:
                    self.fail(f"signature of subgraph {sub}", f"tensor index {int(entry.tensorIndex)} out of range ({count} tensors)")

    def check_subgraph(self, number: int, graph: schema.SubGraphT) -> None:
        tensors = graph.tensors or []
        count = len(tensors)
        where = f"subgraph {number}"
        self.check_text(where, graph.name)
        self.shapes: list[list[int]] = []
        constants = {index for index, tensor in enumerate(tensors) if self.check_tensor((where, "tensor", index), tensor)}
        inputs, outputs = ints(graph.inputs), ints(graph.outputs)
        for label, ids in (("input", inputs), ("output", outputs)):
            for tid in ids:
                if not 0 <= tid < count:
                    self.fail(where, f"graph {label} tensor index {tid} out of range ({count} tensors)")
        if number == 0:
            self.check_graph_io_types(where, inputs, outputs, tensors)
        produced: dict[int, int] = {}
        op_io: list[tuple[list[int], list[int]]] = []
        names: list[str] = []
        operands: list[tuple[list[int], list[int]]] = []  # with the omitted inputs (-1), by position
        operators = graph.operators or []
        for op_index, op in enumerate(operators):
            op_where = (where, "operator", op_index)
            name, ins, outs = self.check_operator(op_where, op, tensors)
            for tid in outs:
                if tid in produced:
                    self.fail((*op_where, f"({name})"), f"output tensor {tid} is already written by operator {produced[tid]}")
                if tid in constants:
                    self.fail((*op_where, f"({name})"), f"output tensor {tid} is a constant")
                produced[tid] = op_index
            op_io.append(([t for t in ins if t >= 0], outs))
            operands.append((ins, outs))
            names.append(name)
        for op_index, (ins, _) in enumerate(op_io):
            for tid in ins:
                if produced.get(tid, -1) >= op_index:
                    self.fail(f"{where} operator {op_index}",
                              f"reads tensor {tid} before operator {produced[tid]} computes it (operators out of order or a cycle)")
        graph_inputs = set(inputs)
        for tid in outputs:
            if tid not in produced and tid not in graph_inputs and tid not in constants:
                self.fail(where, f"graph output tensor {tid} is computed by no operator")
        known: dict[int, list[int] | None] = {}  # values of small integer tensors, for shape arithmetic
        self.derived = list(self.shapes)
        for op_index, (op, name, (ins, outs)) in enumerate(zip(operators, names, operands)):
            if name in SIGNATURES or name in CUSTOM_SIGNATURES:  # the operators whose kernels lastlayer checks
                op_where = (where, "operator", op_index, f"({name})")
                self.check_operator_scales(op_where, name, ins, outs, tensors)
                self.check_shapes(op_where, name, self.custom_options(op) if name in CUSTOM_SIGNATURES else op.builtinOptions,
                                  ins, outs, tensors, known)
        self.check_memory(number, graph, op_io, constants)

    def check_graph_io_types(self, where: str, inputs: list[int], outputs: list[int], tensors: Sequence[schema.TensorT]) -> None:
        """The main graph takes and gives what a classifier or an extractor can: numbers lastlayer can feed and read."""
        for label, ids, allowed, what in (("input", inputs, GRAPH_INPUT_TYPES, "lastlayer feeds images as"),
                                          ("output", outputs, GRAPH_OUTPUT_TYPES, "a classifier or extractor gives")):
            for position, tid in enumerate(ids):
                kind = int(tensors[tid].type)
                if kind not in allowed:
                    self.fail(where, f"graph {label} {position} (tensor {tid} {as_text(tensors[tid].name)!r}) is "
                                     f"{tensor_type_name(kind)}; {what} {type_names(allowed)}")

    def check_text(self, where: str, value: Any) -> None:
        if isinstance(value, (bytes, bytearray)):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                self.fail(where, f"its name {bytes(value)[:40]!r} is not valid UTF-8")

    def check_tensor(self, where: str, tensor: schema.TensorT) -> bool:
        """Check one tensor; return whether it is a constant. (The hot loop: kept lean.)"""
        name = tensor.name
        if isinstance(name, (bytes, bytearray)):
            self.check_text(where, name)
        kind = int(tensor.type)
        widths = ELEMENT_BYTES.get(kind)
        if widths is None and kind not in TENSOR_TYPE_NAMES:
            self.fail(where, f"unknown tensor type {kind}")
        shape = tensor.shape
        shape = shape.tolist() if isinstance(shape, np.ndarray) else ints(shape)
        if shape and (len(shape) > MAX_RANK or min(shape) < 0):
            if len(shape) > MAX_RANK:
                self.fail(where, f"rank {len(shape)} (at most {MAX_RANK} is supported)")
            self.fail(where, f"negative dimension in shape {shape}")
        if tensor.shapeSignature is not None and len(tensor.shapeSignature):
            signature = ints(tensor.shapeSignature)
            if len(signature) != len(shape):
                self.fail(where, f"shape signature {signature} has another rank than shape {shape}")
            if min(signature) < -1:
                self.fail(where, f"invalid dimension in shape signature {signature}")
        elements = math.prod(shape)
        if elements > MAX_ELEMENTS:
            self.fail(where, f"shape {shape} has {elements:,} elements (more than 2^31)")
        buffer = int(tensor.buffer)
        if not 0 <= buffer < len(self.sizes):  # (buffer 0 is accepted in a model without buffers: no data)
            self.fail(where, f"buffer index {buffer} out of range (model has {len(self.buffers)} buffers)")
        size = self.sizes[buffer]
        if size and tensor.sparsity is None:
            if kind == T.STRING:
                self.check_strings(where, buffer, elements)
            elif widths is None:
                self.fail(where, f"{TENSOR_TYPE_NAMES[kind]} tensor cannot be a constant")
            elif size != elements * widths[0] and not any(size == math.ceil(elements * w) for w in widths):
                self.fail(where, f"constant buffer {buffer} holds {size:,} bytes, but a {TENSOR_TYPE_NAMES[kind]} tensor of shape {shape} needs "
                                 f"{math.ceil(elements * widths[-1]):,}")
        if widths is not None and elements * widths[-1] > MAX_ELEMENTS:
            self.fail(where, f"shape {shape} needs more than 2 GB")
        if tensor.quantization is not None:
            self.check_quantization(where, tensor, kind, shape)
        if tensor.sparsity is not None:
            self.check_sparsity(where, tensor.sparsity, len(shape))
        if tensor.externalBuffer and not 0 < int(tensor.externalBuffer) <= length(self.model.externalBuffers):
            self.fail(where, f"external buffer {int(tensor.externalBuffer)} out of range")
        self.shapes.append(shape)
        return size > 0

    def check_strings(self, where: str, buffer: int, elements: int) -> None:
        data = self.constant(buffer)
        if data is None or len(data) < 4:
            self.fail(where, "string constant shorter than its header")
        count = int(np.frombuffer(data[:4].tobytes(), dtype="<i4")[0])
        if count != elements or 4 * (count + 2) > len(data):
            self.fail(where, f"string constant header says {count} strings for {elements} elements in {len(data)} bytes")
        offsets = np.frombuffer(data[4 : 4 * (count + 2)].tobytes(), dtype="<i4")
        if offsets[0] != 4 * (count + 2) or np.any(np.diff(offsets) < 0) or offsets[-1] > len(data):
            self.fail(where, "string constant offsets are out of order or past its end")

    def check_sparsity(self, where: str, sparsity: Any, rank: int) -> None:
        order = ints(sparsity.traversalOrder)
        blocks = ints(sparsity.blockMap)
        if sorted(order) != list(range(len(order))) or len(order) < rank or len(order) != length(sparsity.dimMetadata):
            self.fail(where, "inconsistent sparsity parameters")
        if any(not 0 <= b < rank for b in blocks) or len(order) != rank + len(blocks):
            self.fail(where, "inconsistent sparsity block map")

    # ----------------------------------------------------------------- one operator
