"""Quantization as the kernels need it: parameters on every quantized operand, scales that fit together."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.edit import add_operator, add_tensor, new_model, quantization, set_io
from model.validation_cases import accepts, edited, ops, rejects, tree, write

from conftest import ROOT

T = schema.TensorType
V2 = "mobilenet_v2_1.0_224_quant.tflite"  # uint8, with residual ADDs
HEAD = "mobilenet_quant_v1_224_head_layers.tflite"
SMALL = "mobilenet_v1_0.25_128_quant.tflite"


def _add_scales(model: schema.ModelT) -> tuple[float, schema.QuantizationParametersT]:
    """The largest input scale of the first ADD, and its output's quantization."""
    graph, add = model.subgraphs[0], ops(model, "ADD")[0]
    largest = max(float(graph.tensors[t].quantization.scale[0]) for t in add.inputs)
    return largest, graph.tensors[add.outputs[0]].quantization


def test_add_input_without_quantization(tmp_path):
    def edit(model):
        model.subgraphs[0].tensors[ops(model, "ADD")[0].inputs[0]].quantization = None

    rejects(edited(V2, edit, tmp_path), "is UINT8 without quantization parameters", "quantized kernel needs its scale")


def test_add_output_scale_of_1e_minus_7(tmp_path):
    def edit(model):
        _add_scales(model)[1].scale = [1e-7]

    rejects(edited(V2, edit, tmp_path), "(ADD): the scales of its operands do not fit its quantized kernel",
            "max(input scales) / output scale", "(must be 0 to 6.55e+04)")


def _run_classify(path, image) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lastlayer", "classify", "-m", str(path), str(image), "--quiet"],
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""})


@pytest.mark.parametrize(("ratio", "accepted"), [(2.0**15, True), (2.0**17, False)])
def test_add_scale_ratio_on_both_sides_of_the_bound(ratio, accepted, tmp_path, images_dir):
    """Inside the bound the model runs (LiteRT aborts only from 2^19 on); outside it is refused before LiteRT sees it."""
    model = tree(V2)
    largest, output = _add_scales(model)
    output.scale = [largest / ratio]
    if not accepted:
        rejects(edited(V2, lambda m: setattr(_add_scales(m)[1], "scale", [largest / ratio]), tmp_path), "(ADD): the scales")
        return
    path = accepts(model, tmp_path)
    done = _run_classify(path, images_dir / "cat.bmp")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_activation_with_per_axis_scales(tmp_path):
    def edit(model):
        tensor = model.subgraphs[0].tensors[ops(model, "SOFTMAX")[0].inputs[0]]  # [1, 1001]
        tensor.quantization = quantization([0.1] * 1001, [0] * 1001, axis=1)

    rejects(edited(HEAD, edit, tmp_path), "has 1001 per-axis scales", "reads one scale there (only weights are quantized per axis)")


def test_softmax_output_has_the_fixed_quantization(tmp_path):
    def edit(model):
        model.subgraphs[0].tensors[ops(model, "SOFTMAX")[0].outputs[0]].quantization.scale = [0.5]

    rejects(edited(HEAD, edit, tmp_path), "(SOFTMAX): output 0", "has scale 0.5 and zero point 0; a UINT8 SOFTMAX output has scale "
            "0.00390625 and zero point 0")


def test_convolution_scale_product(tmp_path):
    def edit(model):
        conv = ops(model, "CONV_2D")[0]
        model.subgraphs[0].tensors[conv.outputs[0]].quantization.scale = [1e-9]

    rejects(edited(SMALL, edit, tmp_path), "(CONV_2D): the scales", "input scale * weight scale / output scale")


def _hard_swish(input_scale: float, output_scale: float) -> schema.ModelT:
    model = new_model("test: uint8 hard swish")
    x = add_tensor(model, "x", [1, 4, 4, 3], np.uint8, quant=quantization(input_scale, 128))
    y = add_tensor(model, "y", [1, 4, 4, 3], np.uint8, quant=quantization(output_scale, 128))
    add_operator(model, schema.BuiltinOperator.HARD_SWISH, [x], [y])
    set_io(model, [x], [y])
    return model


def test_hard_swish_ratio_on_both_sides(tmp_path):
    accepts(_hard_swish(0.05, 0.05), tmp_path)
    rejects(write(_hard_swish(0.05 * 2**8, 0.05), tmp_path), "(HARD_SWISH): the scales", "input 0 scale / output scale = 256 (must be 1.53e-05 to 64)")


def test_plain_integers_into_a_cast_need_no_quantization(tmp_path):
    """A uint8 image fed to a CAST (Keras models with built-in preprocessing) is a number, not a quantized value."""
    model = new_model("test: cast")
    x = add_tensor(model, "image", [1, 4, 4, 3], np.uint8)
    y = add_tensor(model, "float", [1, 4, 4, 3], np.float32)
    add_operator(model, schema.BuiltinOperator.CAST, [x], [y])
    set_io(model, [x], [y])
    accepts(model, tmp_path)
    relu = new_model("test: relu")
    x = add_tensor(relu, "image", [1, 4, 4, 3], np.uint8)
    y = add_tensor(relu, "out", [1, 4, 4, 3], np.uint8)
    add_operator(relu, schema.BuiltinOperator.RELU, [x], [y])
    set_io(relu, [x], [y])
    rejects(write(relu, tmp_path), "(RELU): input 0 (tensor 0 'image') is UINT8 without quantization parameters")
