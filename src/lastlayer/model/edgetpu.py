"""Static Edge TPU compatibility check, following Coral's published model requirements.

The supported-operations table is data (:data:`OPERATOR_RULES`): each row is the TFLite operator,
the runtime versions it needs, the documented limits, and a check for the limits that can be read
from the graph. :func:`check_model` applies the table and the tensor rules (8-bit, static shapes,
at most 3 non-1 innermost dimensions) and says where the compiler would partition the graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.edgetpu_versions import LATEST_RUNTIME
from lastlayer.model.io import ModelSource, load_model
from lastlayer.model.names import EDGETPU_CUSTOM_CODE, as_text, operator_name, tensor_type_name
from lastlayer.model.tensors import constant_values

Check = Callable[["OpContext"], Optional[str]]


@dataclass(frozen=True)
class Limit:
    """One documented limit, valid for runtimes ``[since, until]``; ``check`` returns a violation or None."""

    text: str
    since: int = 0
    until: int = 10_000
    check: Check | None = None

    def applies(self, runtime: int) -> bool:
        return self.since <= runtime <= self.until


@dataclass(frozen=True)
class OperatorRule:
    name: str  # the Coral table's name
    since: int | None = 0  # minimum runtime version; None: listed in the newer table without a version
    limits: tuple[Limit, ...] = ()


@dataclass
class OpContext:
    """What a limit check may look at: the operator, its tensors and the model's constants."""

    model: schema.ModelT
    op: schema.OperatorT

    def tensor(self, index: int) -> schema.TensorT:
        return self.model.subgraphs[0].tensors[index]

    def shape(self, index: int) -> list[int]:
        return [int(d) for d in self.tensor(index).shape]

    def constant(self, index: int) -> np.ndarray | None:
        values = constant_values(self.model, self.tensor(index))
        return None if values is None else values.reshape(-1)

    @property
    def options(self) -> Any:
        return self.op.builtinOptions


def _no_fused_activation(ctx: OpContext) -> str | None:
    activation = getattr(ctx.options, "fusedActivationFunction", 0)
    return f"has a fused activation ({activation})" if activation else None


def _same_dilation(ctx: OpContext) -> str | None:
    x, y = getattr(ctx.options, "dilationWFactor", 1), getattr(ctx.options, "dilationHFactor", 1)
    return f"uses different x/y dilation ({x}, {y})" if x != y else None


def _no_dilation(ctx: OpContext) -> str | None:
    x, y = getattr(ctx.options, "dilationWFactor", 1), getattr(ctx.options, "dilationHFactor", 1)
    return f"is dilated ({x}, {y})" if (x, y) != (1, 1) else None


def _concat_constant_inputs(ctx: OpContext) -> str | None:
    constants = [c for c in (ctx.constant(int(t)) for t in ctx.op.inputs) if c is not None]
    if constants and (len(ctx.op.inputs) != 2 or any(np.any(c) for c in constants)):
        return "has a constant input that is not a single all-zero padding tensor"
    return None


def _fc_default_format_1d_output(ctx: OpContext) -> str | None:
    if getattr(ctx.options, "weightsFormat", 0):
        return "uses a non-default weights format"
    shape = ctx.shape(int(ctx.op.outputs[0]))
    return f"output {shape} is not one-dimensional" if int(np.prod(shape[:-1])) != 1 else None


def _axes(ctx: OpContext) -> list[int]:
    values = ctx.constant(int(ctx.op.inputs[1]))
    rank = len(ctx.shape(int(ctx.op.inputs[0])))
    return sorted({int(a) % rank for a in values}) if values is not None else []


def _mean_v12(ctx: OpContext) -> str | None:
    axes = _axes(ctx)
    return f"reduces axes {axes}; only x and/or y (1, 2) are supported" if not set(axes) <= {1, 2} else None


def _mean_v13(ctx: OpContext) -> str | None:
    axes = _axes(ctx)
    shape = ctx.shape(int(ctx.op.inputs[0]))
    if 0 in axes:
        return "reduces the batch dimension"
    if len(shape) - 1 in axes and shape[-1] % 4:
        return f"reduces z with size {shape[-1]}, not a multiple of 4"
    return None


def _sum_z_only(ctx: OpContext) -> str | None:
    axes = _axes(ctx)
    rank = len(ctx.shape(int(ctx.op.inputs[0])))
    return f"reduces axes {axes}; only the innermost dimension is supported" if axes != [rank - 1] else None


def _pad_rows(ctx: OpContext) -> np.ndarray | None:
    values = ctx.constant(int(ctx.op.inputs[1]))
    return None if values is None else values.reshape(-1, 2)


def _pad_no_batch(ctx: OpContext) -> str | None:
    rows = _pad_rows(ctx)
    return "pads the batch dimension" if rows is not None and np.any(rows[0]) else None


def _pad_xy_only(ctx: OpContext) -> str | None:
    rows = _pad_rows(ctx)
    return "pads dimensions other than x and y" if rows is not None and len(rows) == 4 and np.any(rows[3]) else None


def _softmax_1d(ctx: OpContext) -> str | None:
    shape = ctx.shape(int(ctx.op.inputs[0]))
    size = int(np.prod(shape))
    if size != shape[-1]:
        return f"input {shape} is not one-dimensional"
    return f"input has {size} elements (max 16000)" if size > 16000 else None


def _squeeze_leading_ones(ctx: OpContext) -> str | None:
    shape = ctx.shape(int(ctx.op.inputs[0]))
    inner = shape[next((i for i, d in enumerate(shape) if d != 1), len(shape)):]
    return f"input {shape} needs a relayout (a 1 after a dimension > 1)" if 1 in inner else None


def _strided_slice(ctx: OpContext) -> str | None:
    strides = ctx.constant(int(ctx.op.inputs[3])) if len(ctx.op.inputs) > 3 else None
    if strides is not None and np.any(strides != 1):
        return f"has strides {strides.tolist()} (only 1 is supported)"
    if getattr(ctx.options, "ellipsisMask", 0) or getattr(ctx.options, "newAxisMask", 0):
        return "uses ellipsis_mask or new_axis_mask"
    return None


def _axis_not_batch(ctx: OpContext) -> str | None:
    if ctx.op.builtinOptions is not None and hasattr(ctx.options, "axis"):
        axis = int(ctx.options.axis)
    else:  # SPLIT: the axis is input 0
        values = ctx.constant(int(ctx.op.inputs[0]))
        axis = int(values[0]) if values is not None else 1
    return "operates on the batch dimension" if axis == 0 else None


def _reduce_not_batch(ctx: OpContext) -> str | None:
    return "reduces the batch dimension" if 0 in _axes(ctx) else None


_NOTE_RESIZE = "Input/output is a 3-dimensional tensor; depending on sizes it may stay on the CPU to avoid precision loss."
OPERATOR_RULES: dict[str, OperatorRule] = {rule.name: rule for rule in [
    OperatorRule("ADD"), OperatorRule("SUB"), OperatorRule("MUL"), OperatorRule("MAXIMUM"), OperatorRule("MINIMUM"),
    OperatorRule("LOGISTIC"), OperatorRule("RELU"), OperatorRule("RELU6"), OperatorRule("RELU_N1_TO_1"), OperatorRule("TANH"),
    OperatorRule("L2_NORMALIZATION"), OperatorRule("SLICE"), OperatorRule("SPACE_TO_DEPTH"),
    OperatorRule("AVERAGE_POOL_2D", limits=(Limit("No fused activation function.", check=_no_fused_activation),)),
    OperatorRule("MAX_POOL_2D", limits=(Limit("No fused activation function.", check=_no_fused_activation),)),
    OperatorRule("CONCATENATION", limits=(
        Limit("No fused activation function.", check=_no_fused_activation),
        Limit("A constant input is allowed only as one of exactly 2 inputs, and all zeros (zero padding).", check=_concat_constant_inputs),
    )),
    OperatorRule("CONV_2D", limits=(Limit("Must use the same dilation in x and y dimensions.", check=_same_dilation),)),
    OperatorRule("DEPTHWISE_CONV_2D", limits=(
        Limit("Dilated conv kernels are not supported.", until=12, check=_no_dilation),
        Limit("Must use the same dilation in x and y dimensions.", since=13, check=_same_dilation),
    )),
    OperatorRule("EXPAND_DIMS", since=13),
    OperatorRule("FULLY_CONNECTED", limits=(
        Limit("Only the default format is supported for fully-connected weights. Output tensor is one-dimensional.",
              check=_fc_default_format_1d_output),
    )),
    OperatorRule("MEAN", limits=(
        Limit("No reduction in batch dimension. Supports reduction along x- and/or y-dimensions only.", until=12, check=_mean_v12),
        Limit("No reduction in batch dimension. If a z-reduction, the z-dimension must be multiple of 4.", since=13, check=_mean_v13),
    )),
    OperatorRule("PACK", since=13, limits=(Limit("No packing in batch dimension.", check=_axis_not_batch),)),
    OperatorRule("PAD", limits=(
        Limit("No padding in batch dimension. Supports padding along x- and/or y-dimensions only.", until=12,
              check=lambda ctx: _pad_no_batch(ctx) or _pad_xy_only(ctx)),
        Limit("No padding in batch dimension.", since=13, check=_pad_no_batch),
    )),
    OperatorRule("QUANTIZE", since=13),
    OperatorRule("RESHAPE", limits=(Limit("Certain reshapes might not be mapped for large tensor sizes."),)),
    OperatorRule("RESIZE_BILINEAR", limits=(Limit(_NOTE_RESIZE),)),
    OperatorRule("RESIZE_NEAREST_NEIGHBOR", limits=(Limit(_NOTE_RESIZE),)),
    OperatorRule("SOFTMAX", limits=(Limit("Supports only 1-D input tensor with a max of 16,000 elements.", check=_softmax_1d),)),
    OperatorRule("SPLIT", limits=(Limit("No splitting in batch dimension.", check=_axis_not_batch),)),
    OperatorRule("SQUEEZE", limits=(
        Limit("Supported only when input dimensions that are 1 are leading (no relayout needed).", until=12, check=_squeeze_leading_ones),
    )),
    OperatorRule("STRIDED_SLICE", limits=(
        Limit("Supported only when all strides are 1, with ellipsis_mask == 0 and new_axis_mask == 0.", check=_strided_slice),
    )),
    OperatorRule("SUM", since=13, limits=(Limit("Reduction in z-dimension only (innermost dimension).", check=_sum_z_only),)),
    OperatorRule("TRANSPOSE_CONV", since=13),
    # Listed only in the newer revision of Coral's table, whose text lost the runtime-version column.
    OperatorRule("UNIDIRECTIONAL_SEQUENCE_LSTM", since=None, limits=(Limit("Unidirectional LSTM only."),)),
    OperatorRule("PRELU", since=None, limits=(Limit("Alpha must be 1-dimensional (only the innermost dimension can be > 1)."),)),
    OperatorRule("REDUCE_MAX", since=None, limits=(Limit("Cannot operate on the batch dimension.", check=_reduce_not_batch),)),
    OperatorRule("REDUCE_MIN", since=None, limits=(Limit("Cannot operate on the batch dimension.", check=_reduce_not_batch),)),
    OperatorRule("RSQRT", since=None), OperatorRule("SQUARED_DIFFERENCE", since=None), OperatorRule("TRANSPOSE", since=None),
]}


@dataclass
class Finding:
    """One rule that fired: on an operator (``op``) or a tensor (``tensor``)."""

    rule: str
    message: str
    op: int | None = None
    tensor: int | None = None
    blocking: bool = True  # False for notes (float input/output conversions, version-dependent rows)


@dataclass
class CompatibilityReport:
    model: str
    runtime: int
    compiled: bool
    operators: int
    edgetpu_ops: int = 0
    first_cpu_op: int | None = None
    first_cpu_op_name: str | None = None
    cpu_ops_after_partition: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def fully_supported(self) -> bool:
        return not self.compiled and self.first_cpu_op is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fully_supported"] = self.fully_supported
        return data

    def to_text(self) -> str:
        lines = [f"{self.model}: {self.operators} operators, checked for Edge TPU runtime {self.runtime}"]
        if self.compiled:
            lines.append(f"already compiled for the Edge TPU: {self.edgetpu_ops} edgetpu-custom-op, "
                         f"{self.operators - self.edgetpu_ops} operator(s) on the CPU")
        elif self.first_cpu_op is None:
            lines.append("every operator and tensor meets the Edge TPU requirements: the whole graph can compile")
        else:
            after = self.cpu_ops_after_partition - 1
            rest = "only it, the last operator," if after == 0 else f"it and the {after} operator{'s' if after > 1 else ''} after it"
            lines.append(f"the compiler would partition at operator {self.first_cpu_op} ({self.first_cpu_op_name}): "
                         f"{rest} would run on the CPU")
        for f in self.findings:
            where = f"op {f.op}" if f.op is not None else f"tensor {f.tensor}" if f.tensor is not None else "model"
            lines.append(f"  {'x' if f.blocking else '-'} [{f.rule}] {where}: {f.message}")
        return "\n".join(lines)


def _tensor_findings(model: schema.ModelT, index: int, graph_io: set[int]) -> list[Finding]:
    tensor = model.subgraphs[0].tensors[index]
    name = as_text(tensor.name) or f"tensor {index} (unnamed)"
    found = []
    signature = [int(d) for d in tensor.shapeSignature] if tensor.shapeSignature is not None else None
    batch_only = signature is not None and signature[:1] == [-1] and all(d >= 0 for d in signature[1:])
    if signature is not None and any(d < 0 for d in signature) and (index in graph_io or not batch_only):
        # A dynamic batch inside the graph follows from the input's: the model-level finding names that cause.
        found.append(Finding("static-shapes", f"{name} has a dynamic shape {signature}", tensor=index))
    kind = tensor_type_name(tensor.type)
    has_data = constant_values(model, tensor) is not None
    shape = [int(d) for d in tensor.shape]
    if not has_data and len(shape) > 3 and any(d > 1 for d in shape[:-3]):  # weights are exempt: kernels are 4-D
        found.append(Finding("max-3-dims", f"{name} {shape} has a dimension > 1 outside the 3 innermost", tensor=index))
    if kind not in ("UINT8", "INT8") and not (kind in ("INT32", "INT64") and has_data):
        if index in graph_io and kind == "FLOAT32":
            found.append(Finding("8-bit", f"{name} is a float graph input/output: its conversion runs on the CPU", tensor=index, blocking=False))
        else:
            found.append(Finding("8-bit", f"{name} is {kind}; the Edge TPU needs 8-bit quantized tensors (int32 only for constants such as biases)",
                                 tensor=index))
    elif kind in ("UINT8", "INT8") and (tensor.quantization is None or tensor.quantization.scale is None
                                        or not len(tensor.quantization.scale)):
        found.append(Finding("8-bit", f"{name} is {kind} without quantization parameters", tensor=index))
    return found


def _operator_findings(ctx: OpContext, index: int, name: str, runtime: int) -> list[Finding]:
    rule = OPERATOR_RULES.get(name)
    if rule is None:
        return [Finding("supported-ops", f"{name} is not supported by the Edge TPU", op=index)]
    found = []
    if rule.since is None:
        found.append(Finding("runtime-version", f"{name} is listed only in the newer operator table (runtime version not stated)",
                             op=index, blocking=False))
    elif rule.since > runtime:
        return [Finding("runtime-version", f"{name} needs Edge TPU runtime {rule.since} or later", op=index)]
    for limit in rule.limits:
        if not limit.applies(runtime):
            continue
        problem = limit.check(ctx) if limit.check else None
        if problem:
            found.append(Finding("op-limits", f"{name} {problem} ({limit.text})", op=index))
        elif limit.check is None:
            found.append(Finding("op-limits", f"{name}: {limit.text}", op=index, blocking=False))
    return found


def _dynamic_batch(model: schema.ModelT) -> Finding | None:
    """One finding for inputs whose batch dimension is dynamic (shape signature -1), as Keras conversions leave them."""
    graph = model.subgraphs[0]
    for index in graph.inputs or []:
        tensor = graph.tensors[index]
        signature = [int(d) for d in tensor.shapeSignature] if tensor.shapeSignature is not None else []
        if signature[:1] == [-1]:
            static = [1] + [int(d) for d in tensor.shape[1:]]
            return Finding(
                "dynamic-batch",
                f"input {as_text(tensor.name)} has a dynamic batch dimension (shape signature {signature}): the Edge TPU compiler "
                "needs static shapes, so no operator can map to it. Convert with a fixed batch size of 1, e.g. in TensorFlow "
                f"tf.lite.TFLiteConverter.from_concrete_functions([tf.function(model).get_concrete_function("
                f"tf.TensorSpec({static}, tf.float32))], model), or a Keras Input(shape=..., batch_size=1)",
                tensor=int(index))
    return None


def check_model(source: ModelSource | schema.ModelT, runtime: int = LATEST_RUNTIME, name: str | None = None) -> CompatibilityReport:
    """Check a model against the Edge TPU requirements for ``runtime`` (13 and later, or 12 and earlier rows)."""
    model = source if isinstance(source, schema.ModelT) else load_model(source)
    label = name or (str(source) if not isinstance(source, (schema.ModelT, bytes, bytearray)) else "<model>")
    graph = model.subgraphs[0]
    names = [operator_name(model.operatorCodes[op.opcodeIndex]) for op in graph.operators or []]
    report = CompatibilityReport(model=label, runtime=runtime, compiled=EDGETPU_CUSTOM_CODE in names, operators=len(names))
    if len(model.subgraphs) > 1:
        report.findings.append(Finding("subgraphs", f"the model has {len(model.subgraphs)} subgraphs; only the first is checked", blocking=False))
    if report.compiled:
        report.edgetpu_ops = names.count(EDGETPU_CUSTOM_CODE)
        return report
    dynamic_batch = _dynamic_batch(model)
    if dynamic_batch is not None:
        report.findings.append(dynamic_batch)
    graph_io = {int(t) for t in graph.inputs} | {int(t) for t in graph.outputs}
    float_inputs = {int(t) for t in graph.inputs if graph.tensors[t].type == schema.TensorType.FLOAT32}
    for index, op in enumerate(graph.operators or []):
        ctx = OpContext(model, op)
        found = _operator_findings(ctx, index, names[index], runtime)
        for t in list(op.inputs) + list(op.outputs):
            if t >= 0:
                found.extend(_tensor_findings(model, int(t), graph_io))
        # A QUANTIZE of a float input / DEQUANTIZE to a float output stays on the CPU without partitioning.
        edge_conversion = (names[index] == "QUANTIZE" and int(op.inputs[0]) in float_inputs) or \
                          (names[index] == "DEQUANTIZE" and int(op.outputs[0]) in graph_io)
        if edge_conversion:
            found = [Finding("float-io", f"{names[index]} converts a float graph input/output on the CPU", op=index, blocking=False)]
        for finding in found:
            if finding not in report.findings:
                report.findings.append(finding)
        if report.first_cpu_op is None and any(f.blocking for f in found):
            report.first_cpu_op, report.first_cpu_op_name = index, names[index]
    if report.first_cpu_op is not None:
        report.cpu_ops_after_partition = len(names) - report.first_cpu_op
    return report
