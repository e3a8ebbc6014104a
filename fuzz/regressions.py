"""Models that once crashed lastlayer (or LiteRT under it), regenerated from the real shared models.

No model bytes are stored: each case is a deterministic edit of a shared model's object tree (or a
tree built from nothing), so the files are rebuilt on every run. Each case says which error the
loader must now give instead of a crash.

    python fuzz/regressions.py --models ../shared/models --out /tmp/regressions   # write the files
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from ai_edge_litert import schema_py_generated as schema

if __package__ in (None, ""):  # run as a script: make ``fuzz`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz.mutate import pack, parse  # noqa: E402

V1_SMALL = "mobilenet_v1_0.25_128_quant.tflite"
HEAD = "mobilenet_quant_v1_224_head_layers.tflite"
EDGETPU = "mobilenet_v1_1.0_224_quant_embedding_extractor_edgetpu.tflite"
V2 = "mobilenet_v2_1.0_224_quant.tflite"
Edit = Callable[[schema.ModelT], None]


@dataclass(frozen=True)
class Regression:
    """One crashing model: the shared model it starts from (``None``: built from nothing), the edit,
    the error the loader gives now (a regular expression) and where it was found."""

    name: str
    model: Optional[str]
    edit: Edit
    expect: str
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


REGRESSIONS: list[Regression] = [
    Regression("version-only-24-bytes", None, _version_only, "has no subgraph", "brief: inspect/classify/cut/check segfaulted"),
    Regression("depthwise-without-bias", V1_SMALL, _depthwise_without_bias, r"DEPTHWISE_CONV_2D\): 2 inputs, expected 3", "brief"),
    Regression("depthwise-bias-omitted", V1_SMALL, _depthwise_bias_omitted, "a required input is missing", "brief"),
    Regression("inputs-55-minus1-8", HEAD, _input_list_55_minus1_8, "input tensor index 55 out of range", "brief"),
    Regression("scale0-zero-point-minus129", V1_SMALL, _scale0_zero_point_minus129, "quantization scale 0.0", "brief: SIGABRT"),
    Regression("fake-quant-without-options", EDGETPU, _fake_quant_without_options, "FakeQuantOptions are missing",
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
]


def build(case: Regression, models_dir: Path) -> bytes:
    """The crashing model of ``case``, rebuilt from the shared model."""
    if case.model is None:
        model = schema.ModelT()
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
        print(f"{path} ({len(data):,} bytes): expect /{case.expect}/  [{case.found}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
