"""Models that once crashed lastlayer (or LiteRT under it), regenerated from the real shared models.

No model bytes are stored: each case is a deterministic edit of a shared model's object tree, of a
seed built from them (``fuzz/seeds.py``: float networks, models lastlayer writes) or of a tree built
from nothing, so the files are rebuilt on every run. Each case says which error the loader must now
give instead of a crash (or ``None`` when the model is valid and every command must handle it).

    python fuzz/regressions.py --models ../shared/models --out /tmp/regressions   # write the files
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from ai_edge_litert import schema_py_generated as schema

if __package__ in (None, ""):  # run as a script: make ``fuzz`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz.mutate import pack, parse, wrap_in_loop  # noqa: E402
from fuzz.seeds import SEEDS  # noqa: E402

V1_SMALL = "mobilenet_v1_0.25_128_quant.tflite"
HEAD = "mobilenet_quant_v1_224_head_layers.tflite"
EDGETPU = "mobilenet_v1_1.0_224_quant_embedding_extractor_edgetpu.tflite"
V2 = "mobilenet_v2_1.0_224_quant.tflite"
EXTRACTOR = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
FLOAT_V3 = "float:v3_block_nchw.tflite"
FLOAT_V1 = "float:mobilenet_v1_0.25_128.tflite"
PTQ = "tf2_mobilenet_v2_1.0_224_ptq.tflite"
TRAIN_FLOAT32 = "written:train_float32_on_float_extractor.tflite"
TRAIN_UINT8 = "written:train_float32_on_uint8_extractor.tflite"
ISSUE = "issue 26 (fuzz campaign)"
Edit = Callable[[schema.ModelT], None]
T = schema.TensorType


@dataclass(frozen=True)
class Regression:
    """One crashing model: the shared model or seed it starts from (``None``: built from nothing), the edit,
    the error the loader gives now (a regular expression; ``None``: it loads, and no command may crash on
    it) and where it was found."""

    name: str
    model: Optional[str]
    edit: Edit
    expect: Optional[str]
    found: str


def _ops(model: schema.ModelT, name: str) -> list[schema.OperatorT]:
    codes = [i for i, c in enumerate(model.operatorCodes) if max(c.builtinCode, c.deprecatedBuiltinCode) == getattr(schema.BuiltinOperator, name)]
    return [op for op in model.subgraphs[0].operators if op.opcodeIndex in codes]


def _version_only(model: schema.ModelT) -> None:
    model.version = 3


def _depthwise_without_bias(model: schema.ModelT) -> None:
    op = _ops(model, "DEPTHWISE_CONV_2D")[0]
    op.inputs = [int(t) for t in op.inputs[:2]]


def _depthwise_bias_omitted(model: schema.ModelT) -> None:
    op = _ops(model, "DEPTHWISE_CONV_2D")[0]
    op.inputs = [int(op.inputs[0]), int(op.inputs[1]), -1]


def _input_list_55_minus1_8(model: schema.ModelT) -> None:
    model.subgraphs[0].operators[0].inputs = [55, -1, 8]


def _scale0_zero_point_minus129(model: schema.ModelT) -> None:
    graph = model.subgraphs[0]
    q = graph.tensors[int(graph.inputs[0])].quantization
    q.scale, q.zeroPoint = [0.0], [-129]


def _fake_quant_without_options(model: schema.ModelT) -> None:
    code = model.operatorCodes[0]  # the edgetpu-custom-op becomes a FAKE_QUANT with no options
    code.builtinCode, code.deprecatedBuiltinCode, code.customCode = 80, 80, None


def _detection_postprocess_without_options(model: schema.ModelT) -> None:
    code = model.operatorCodes[2]  # SOFTMAX becomes the detection post-processing custom op
    code.builtinCode, code.deprecatedBuiltinCode, code.customCode = 32, 32, "TFLite_Detection_PostProcess"


def _name_not_utf8(model: schema.ModelT) -> None:
    tensor = model.subgraphs[0].tensors[0]
    tensor.name = bytes(tensor.name)[:10] + b"\x80\xba" + bytes(tensor.name)[10:]


def _no_graph_outputs(model: schema.ModelT) -> None:
    model.subgraphs[0].outputs = []
    model.subgraphs = [model.subgraphs[0], model.subgraphs[0]]


def _softmax_reads_its_output(model: schema.ModelT) -> None:
    op = _ops(model, "SOFTMAX")[0]
    op.inputs = [int(op.outputs[0])]


def _conv_stride_zero(model: schema.ModelT) -> None:
    _ops(model, "CONV_2D")[0].builtinOptions.strideW = 0


def _weights_buffer_short(model: schema.ModelT) -> None:
    op = _ops(model, "CONV_2D")[0]
    buffer = model.buffers[model.subgraphs[0].tensors[int(op.inputs[1])].buffer]
    buffer.data = buffer.data[: len(buffer.data) // 2]


def _huge_input(model: schema.ModelT) -> None:
    graph = model.subgraphs[0]
    graph.tensors[int(graph.inputs[0])].shape = [1, 2**20, 2**20, 3]


def _opcode_index_out_of_range(model: schema.ModelT) -> None:
    model.subgraphs[0].operators[0].opcodeIndex = len(model.operatorCodes)


def _zero_point_per_axis_mismatch(model: schema.ModelT) -> None:
    for tensor in model.subgraphs[0].tensors:
        q = tensor.quantization
        if q is not None and q.scale is not None and len(q.scale) > 1:
            q.scale = list(q.scale)[:-1]
            q.zeroPoint = list(q.zeroPoint)[:-1]
            return


def _reshape_shape_from_bias(model: schema.ModelT) -> None:
    reshape = _ops(model, "RESHAPE")[0]  # the 1001 int32 biases become the new shape
    reshape.inputs = [int(reshape.inputs[0]), int(model.subgraphs[0].operators[0].inputs[2])]


def _output_typed(kind: int) -> Edit:
    def edit(model: schema.ModelT) -> None:
        graph = model.subgraphs[0]
        graph.tensors[int(graph.outputs[0])].type = kind
    return edit


def _input_typed(kind: int) -> Edit:
    def edit(model: schema.ModelT) -> None:
        graph = model.subgraphs[0]
        graph.tensors[int(graph.inputs[0])].type = kind
    return edit


def _softmax_output_uint8(model: schema.ModelT) -> None:
    op = _ops(model, "SOFTMAX")[0]
    model.subgraphs[0].tensors[int(op.outputs[0])].type = T.UINT8


def _softmax_reads_a_float_constant(model: schema.ModelT) -> None:
    from lastlayer.model.edit import add_tensor

    op = _ops(model, "SOFTMAX")[0]
    shape = list(model.subgraphs[0].tensors[int(op.inputs[0])].shape)
    op.inputs = [add_tensor(model, "float constant", shape, "float32", data=np.ones(shape, "float32"))]


def _assign_variable_with_one_input(model: schema.ModelT) -> None:
    code = model.operatorCodes[_ops(model, "SOFTMAX")[0].opcodeIndex]
    code.builtinCode, code.deprecatedBuiltinCode = schema.BuiltinOperator.ASSIGN_VARIABLE, 127


def _custom_name_not_utf8(model: schema.ModelT) -> None:
    model.operatorCodes[0].customCode = b"edgetpu-\xff\xfe-op"


def _no_graph_inputs(model: schema.ModelT) -> None:
    model.subgraphs[0].inputs = []


def _first_add_input_unquantized(model: schema.ModelT) -> None:
    add = _ops(model, "ADD")[0]
    model.subgraphs[0].tensors[int(add.inputs[0])].quantization = None


def _add_output_scale(scale: float) -> Edit:
    def edit(model: schema.ModelT) -> None:
        add = _ops(model, "ADD")[0]
        model.subgraphs[0].tensors[int(add.outputs[0])].quantization.scale = [scale]
    return edit


def _intermediate_batch(batch: int, op: str) -> Edit:
    def edit(model: schema.ModelT) -> None:
        tensor = model.subgraphs[0].tensors[int(_ops(model, op)[-1].inputs[0])]
        tensor.shape = [batch, *[int(d) for d in tensor.shape[1:]]]
    return edit


def _input_shape(shape: list[int]) -> Edit:
    def edit(model: schema.ModelT) -> None:
        graph = model.subgraphs[0]
        graph.tensors[int(graph.inputs[0])].shape = shape
    return edit



REGRESSIONS: list[Regression] = [
    Regression("version-only-24-bytes", None, _version_only, "has no subgraph", "brief: inspect/classify/cut/check segfaulted"),
    Regression("depthwise-without-bias", V1_SMALL, _depthwise_without_bias, r"DEPTHWISE_CONV_2D\): 2 inputs, expected 3", "brief"),
    Regression("depthwise-bias-omitted", V1_SMALL, _depthwise_bias_omitted, "a required input is missing", "brief"),
    Regression("inputs-55-minus1-8", HEAD, _input_list_55_minus1_8, "input tensor index 55 out of range", "brief"),
    Regression("scale0-zero-point-minus129", V1_SMALL, _scale0_zero_point_minus129, "quantization scale 0.0", "brief: SIGABRT"),
    Regression("fake-quant-without-options", EDGETPU, _fake_quant_without_options, "FAKE_QUANT is not one lastlayer runs",
               "fuzz seed 0 case 364: SIGSEGV in the interpreter"),
    Regression("detection-postprocess-without-options", HEAD, _detection_postprocess_without_options,
               "custom options are missing", "fuzz seed 1 case 231: SIGSEGV building the interpreter"),
    Regression("tensor-name-not-utf8", HEAD, _name_not_utf8, "is not valid UTF-8", "fuzz seed 1 case 303: UnicodeDecodeError"),
    Regression("no-graph-outputs", HEAD, _no_graph_outputs, "main graph has no outputs", "fuzz seed 1 case 242: IndexError"),
    Regression("softmax-reads-its-output", HEAD, _softmax_reads_its_output, "before operator .* computes it",
               "review: endless walk in find_embedding"),
    Regression("reshape-shape-from-bias", HEAD, _reshape_shape_from_bias, r"RESHAPE\): invalid new shape",
               "fuzz seed 2 case 524: SIGSEGV in the interpreter"),
    Regression("conv-stride-zero", V1_SMALL, _conv_stride_zero, "strideW = 0", "review: division by zero in the kernel"),
    Regression("weights-buffer-short", V1_SMALL, _weights_buffer_short, "constant buffer .* holds", "review: read past the buffer"),
    Regression("huge-input", HEAD, _huge_input, "elements", "review: allocation overflow"),
    Regression("opcode-index-out-of-range", HEAD, _opcode_index_out_of_range, "operator code index 3 out of range", "review"),
    Regression("per-axis-scales-mismatch", "tf2_mobilenet_v2_1.0_224_ptq.tflite", _zero_point_per_axis_mismatch,
               "per-axis scales do not match", "review"),
    # issue 26: tensor types, operators lastlayer does not run, control flow, graph inputs and outputs
    *[Regression(f"float-softmax-output-{name.lower()}-{tag}", model, _output_typed(getattr(T, name)), f"graph output 0 .* is {name}",
                 f"{ISSUE}: SIGSEGV") for name in ("RESOURCE", "VARIANT", "STRING")
      for tag, model in (("v3", FLOAT_V3), ("train-float32", TRAIN_FLOAT32))],
    Regression("float-softmax-uint8-output", FLOAT_V3, _softmax_output_uint8, r"SOFTMAX\): output 0 .* is UINT8; SOFTMAX accepts FLOAT32",
               f"{ISSUE}: heap corruption (free(): invalid next size)"),
    Regression("softmax-reads-a-float-constant", HEAD, _softmax_reads_a_float_constant,
               r"SOFTMAX\): output 0 .* is UINT8; SOFTMAX accepts FLOAT32", f"{ISSUE}: heap corruption"),
    Regression("assign-variable-with-one-input", HEAD, _assign_variable_with_one_input, "operator ASSIGN_VARIABLE is not one lastlayer runs",
               f"{ISSUE}: SIGSEGV in allocate_tensors"),
    Regression("while-condition-always-true", HEAD, lambda m: wrap_in_loop(m, "WHILE"), r"control flow \(WHILE\) is not supported",
               f"{ISSUE}: classify never returns"),
    Regression("output-complex128", TRAIN_UINT8, _output_typed(T.COMPLEX128), "graph output 0 .* is COMPLEX128",
               f"{ISSUE}: classify printed 0.00000 and NumPy's ComplexWarning"),
    Regression("output-bfloat16", TRAIN_UINT8, _output_typed(T.BFLOAT16), "graph output 0 .* is BFLOAT16", f"{ISSUE}: internal error"),
    *[Regression(f"input-{name.lower()}", EXTRACTOR, _input_typed(getattr(T, name)), f"graph input 0 .* is {name}|outside the {name} range",
                 f"{ISSUE}: imprint: internal error") for name in ("COMPLEX128", "VARIANT", "UINT4")],
    Regression("custom-name-not-utf8", EDGETPU, _custom_name_not_utf8, "is not valid UTF-8", f"{ISSUE}: UnicodeDecodeError in LiteRT"),
    Regression("no-graph-inputs", HEAD, _no_graph_inputs, None, f"{ISSUE}: inspect: IndexError in view.py"),
    # issue 26: quantization the kernels compute with, shapes of intermediate tensors
    Regression("add-input-without-quantization", V2, _first_add_input_unquantized, "is UINT8 without quantization parameters",
               f"{ISSUE}: SIGABRT in ADD's Prepare"),
    Regression("add-output-scale-1e-7", V2, _add_output_scale(1e-7), r"\(ADD\): the scales of its operands do not fit",
               f"{ISSUE}: SIGABRT in ADD's Prepare"),
    *[Regression(f"intermediate-batch-{batch}-{tag}", model, _intermediate_batch(batch, op), f"is declared \\[{batch}, ",
                 f"{ISSUE}: XNNPACK allocated 0.8-6.2 GB") for batch in (46341, 131071)
      for tag, model, op in (("int8", PTQ, "CONV_2D"), ("float", FLOAT_V1, "AVERAGE_POOL_2D"))],
    Regression("input-46341x224", V2, _input_shape([1, 46341, 224, 3]), r"\(CONV_2D\): output 0 .* is declared \[1, 112, 112, 32\]",
               f"{ISSUE}: 2.4 GB peak before a clean error"),
    Regression("head-input-362x362x1024", HEAD, _input_shape([1, 362, 362, 1024]), r"\(CONV_2D\): output 0 .* is declared",
               f"{ISSUE}: imprint: internal error (MemoryError: Unable to allocate 3.00 GiB)"),
]


def build(case: Regression, models_dir: Path) -> bytes:
    """The crashing model of ``case``, rebuilt from the shared model."""
    if case.model is None:
        model = schema.ModelT()
    elif case.model in SEEDS:
        model = parse(SEEDS[case.model](models_dir))
    else:
        model = parse((models_dir / case.model).read_bytes())
    case.edit(model)
    return pack(model)


def generate(models_dir: Path) -> Iterator[tuple[Regression, bytes]]:
    for case in REGRESSIONS:
        yield case, build(case, models_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("LASTLAYER_MODELS", "../shared/models").split(os.pathsep)[0]))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for case, data in generate(args.models):
        path = args.out / f"{case.name}.tflite"
        path.write_bytes(data)
        expect = f"/{case.expect}/" if case.expect else "loads; no command may crash"
        print(f"{path} ({len(data):,} bytes): expect {expect}  [{case.found}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
