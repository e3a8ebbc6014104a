from __future__ import annotations

import json

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from lastlayer.cli import main
from lastlayer.model.edgetpu import OPERATOR_RULES, check_model

from conftest import EXTRACTOR_EDGETPU
from graphs import float_extractor, quantized_chain

B, OPT = schema.BuiltinOperator, schema.BuiltinOptions


def pool(fused=0):
    options = schema.Pool2DOptionsT()
    options.padding, options.strideW, options.strideH, options.filterWidth, options.filterHeight = 1, 1, 1, 2, 2
    options.fusedActivationFunction = fused
    return (B.AVERAGE_POOL_2D, [1, 7, 7, 3], OPT.Pool2DOptions, options, [])


def rules(report):
    return {f.rule for f in report.findings if f.blocking}


def test_real_models_compile_whole_or_are_already_compiled(model_file):
    for name in ("mobilenet_v1_0.25_128_quant.tflite", "mobilenet_v2_1.0_224_quant.tflite", "tf2_mobilenet_v2_1.0_224_ptq.tflite"):
        report = check_model(model_file(name))
        assert report.fully_supported and not rules(report), name
    compiled = check_model(model_file(EXTRACTOR_EDGETPU))
    assert compiled.compiled and compiled.edgetpu_ops == 1 and "already compiled" in compiled.to_text()


def test_runtime_dependent_rows():
    report = check_model(quantized_chain([(B.QUANTIZE, [1, 8, 8, 3], 0, None, [])]), runtime=12)
    assert report.first_cpu_op == 0 and "runtime 13" in report.findings[0].message
    assert check_model(quantized_chain([(B.QUANTIZE, [1, 8, 8, 3], 0, None, [])]), runtime=13).fully_supported
    assert OPERATOR_RULES["DEPTHWISE_CONV_2D"].limits[0].until == 12 and OPERATOR_RULES["EXPAND_DIMS"].since == 13


def test_float_model_fires_the_8bit_rule():
    report = check_model(float_extractor())
    assert "8-bit" in rules(report) and report.first_cpu_op == 0


def test_unsupported_op_in_the_middle_partitions_there():
    steps = [pool(), (B.HARD_SWISH, [1, 7, 7, 3], 0, None, []), (B.RELU, [1, 7, 7, 3], 0, None, [])]
    report = check_model(quantized_chain(steps))
    assert report.first_cpu_op == 1 and report.first_cpu_op_name == "HARD_SWISH" and report.cpu_ops_after_partition == 2
    assert "partition at operator 1 (HARD_SWISH)" in report.to_text()
    assert check_model(quantized_chain([pool(), (B.RELU, [1, 7, 7, 3], 0, None, [])])).fully_supported


def test_fused_activation_on_pool():
    assert "op-limits" in rules(check_model(quantized_chain([pool(fused=1)])))
    assert not rules(check_model(quantized_chain([pool(fused=0)])))


def test_five_dimensional_tensor_and_dynamic_shape():
    relu = (B.RELU, [2, 1, 4, 4, 3], 0, None, [])
    assert "max-3-dims" in rules(check_model(quantized_chain([relu], shape=(2, 1, 4, 4, 3))))
    assert not rules(check_model(quantized_chain([(B.RELU, [1, 1, 4, 4, 3], 0, None, [])], shape=(1, 1, 4, 4, 3))))
    dynamic = quantized_chain([(B.RELU, [1, 8, 8, 3], 0, None, [])], shape_signature=[-1, 8, 8, 3])
    assert "static-shapes" in rules(check_model(dynamic))


def test_softmax_size_and_shape_limits():
    assert not rules(check_model(quantized_chain([(B.SOFTMAX, [1, 1001], OPT.SoftmaxOptions, schema.SoftmaxOptionsT(), [])], shape=(1, 1001))))
    big = check_model(quantized_chain([(B.SOFTMAX, [1, 16001], OPT.SoftmaxOptions, schema.SoftmaxOptionsT(), [])], shape=(1, 16001)))
    assert "op-limits" in rules(big) and "16001" in big.findings[0].message
    two_d = check_model(quantized_chain([(B.SOFTMAX, [4, 10], OPT.SoftmaxOptions, schema.SoftmaxOptionsT(), [])], shape=(4, 10)))
    assert "op-limits" in rules(two_d)


@pytest.mark.parametrize(("axes", "runtime", "fires"), [([1, 2], 16, False), ([3], 16, True), ([3], 12, True), ([0], 16, True), ([1, 2], 12, False)])
def test_mean_axes(axes, runtime, fires):
    mean = (B.MEAN, [1, 1, 1, 3], OPT.ReducerOptions, schema.ReducerOptionsT(), [np.array(axes, dtype=np.int32)])
    assert ("op-limits" in rules(check_model(quantized_chain([mean]), runtime=runtime))) == fires


@pytest.mark.parametrize(("shape", "runtime", "fires"), [((5, 1, 10), 12, True), ((1, 5, 10), 12, False), ((5, 1, 10), 13, False)])
def test_squeeze_relayout(shape, runtime, fires):
    squeeze = (B.SQUEEZE, [5, 10], OPT.SqueezeOptions, schema.SqueezeOptionsT(), [])
    assert ("op-limits" in rules(check_model(quantized_chain([squeeze], shape=shape), runtime=runtime))) == fires


@pytest.mark.parametrize(("strides", "fires"), [([1, 1, 1, 1], False), ([1, 2, 2, 1], True)])
def test_strided_slice_strides(strides, fires):
    consts = [np.zeros(4, np.int32), np.array([1, 8, 8, 3], np.int32), np.array(strides, np.int32)]
    op = (B.STRIDED_SLICE, [1, 8, 8, 3], OPT.StridedSliceOptions, schema.StridedSliceOptionsT(), consts)
    assert ("op-limits" in rules(check_model(quantized_chain([op])))) == fires


def test_cli_check_json(capsys, model_file):
    # exit 1: the model does not map fully to the Edge TPU (scripts can gate on it)
    assert main(["check", str(model_file("tf2_mobilenet_v2_1.0_224_ptq.tflite")), "--runtime", "12", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["first_cpu_op"] == 0 and report["first_cpu_op_name"] == "QUANTIZE" and report["cpu_ops_after_partition"] == 68


def test_messages_name_unnamed_tensors_and_count_operators_in_words(model_file):
    from lastlayer.model.file import ModelFile

    tree = ModelFile.read(model_file("mobilenet_quant_v1_224_head_layers.tflite")).copy_tree()
    graph = tree.subgraphs[0]
    last = graph.outputs[0]
    graph.tensors[last].name = ""
    graph.tensors[last].type = schema.TensorType.INT32  # not 8-bit: the last operator cannot map
    text = check_model(tree, runtime=16, name="head.tflite").to_text()
    assert f"tensor {last} (unnamed) is INT32" in text and " is INT32" not in text.replace(f"tensor {last} (unnamed) is INT32", "")
    assert "only it, the last operator, would run on the CPU" in text and "the 0 operator" not in text
