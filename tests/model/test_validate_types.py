"""Tensor types and the operators lastlayer runs: each case is one of issue 26's crashes, refused before LiteRT sees it."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.edit import add_operator, add_tensor
from lastlayer.model.validate import OPERATOR_ARITY, OPERATOR_OPTIONS, SIGNATURES
from lastlayer.model.validate.signatures import NATIVE_CUSTOM_OPERATORS
from lastlayer.model.validate.tables import OPTIONS_NAMES
from model.validation_cases import accepts, edited, ops, rejects, tree

T = schema.TensorType
B = schema.BuiltinOperator
HEAD = "mobilenet_quant_v1_224_head_layers.tflite"
SMALL = "mobilenet_v1_0.25_128_quant.tflite"
EDGETPU = "mobilenet_v1_1.0_224_quant_embedding_extractor_edgetpu.tflite"
FLOAT_V3 = "float:v3_block_nchw.tflite"
TRAIN_UINT8 = "written:train_float32_on_uint8_extractor.tflite"  # ... FC -> SOFTMAX (uint8) -> DEQUANTIZE
TRAIN_FLOAT = "written:train_float32_on_float_extractor.tflite"  # float FC -> float SOFTMAX


@pytest.mark.parametrize("name", ["float:mobilenet_v1_0.25_128.tflite", FLOAT_V3, TRAIN_UINT8, TRAIN_FLOAT,
                                  "written:imprint_uint8.tflite", "written:imprint_int8.tflite"])
def test_float_networks_and_models_lastlayer_writes_validate(name, tmp_path):
    accepts(tree(name), tmp_path)


@pytest.mark.parametrize("kind", ["RESOURCE", "VARIANT", "STRING"])
def test_softmax_output_of_a_non_numeric_type(kind, tmp_path):
    def edit(model):  # the uint8 SOFTMAX inside a model 'train --output-type float32' writes: not the graph output
        model.subgraphs[0].tensors[ops(model, "SOFTMAX")[0].outputs[0]].type = getattr(T, kind)

    rejects(edited(TRAIN_UINT8, edit, tmp_path), "(SOFTMAX): output 0 (tensor", f"is {kind}; SOFTMAX accepts")


def test_float_softmax_into_a_uint8_output(tmp_path):
    def edit(model):
        model.subgraphs[0].tensors[ops(model, "SOFTMAX")[0].outputs[0]].type = T.UINT8

    rejects(edited(TRAIN_FLOAT, edit, tmp_path), "(SOFTMAX): output 0 (tensor", "'Appended/Softmax/Output') is UINT8; "
            "SOFTMAX accepts FLOAT32 there")


def test_softmax_reading_a_float_constant(tmp_path):
    def edit(model):
        op = ops(model, "SOFTMAX")[0]
        op.inputs = [add_tensor(model, "float constant", [1, 1001], np.float32, data=np.ones((1, 1001)))]

    rejects(edited(HEAD, edit, tmp_path), "(SOFTMAX): output 0", "is UINT8; SOFTMAX accepts FLOAT32 there")


def test_operator_inputs_of_mixed_types(tmp_path):
    def edit(model):  # the residual ADD of the float network reads an int32 constant
        op = ops(model, "ADD")[0]
        op.inputs = [op.inputs[0], add_tensor(model, "ints", [1, 8, 8, 8], np.int32, data=np.zeros((1, 8, 8, 8)))]

    rejects(edited(FLOAT_V3, edit, tmp_path), "(ADD): input 1 (tensor", "'ints') is INT32; ADD accepts FLOAT32 there")


def test_resource_variable_operator_with_one_input(tmp_path):
    def edit(model):
        code = model.operatorCodes[ops(model, "SOFTMAX")[0].opcodeIndex]
        code.builtinCode, code.deprecatedBuiltinCode = B.ASSIGN_VARIABLE, 127

    rejects(edited(HEAD, edit, tmp_path), "(ASSIGN_VARIABLE): operator ASSIGN_VARIABLE is not one lastlayer runs")


def test_while_loop_is_refused(tmp_path):
    def edit(model):
        graph = model.subgraphs[0]
        body = schema.SubGraphT()
        body.name, body.tensors, body.operators, body.inputs, body.outputs = "body", [], [], [], []
        model.subgraphs.append(body)
        options = schema.WhileOptionsT()
        options.condSubgraphIndex = options.bodySubgraphIndex = 1
        looped = add_tensor(model, "looped", [1, 1, 1, 1024], np.uint8)
        graph.tensors[looped].quantization = graph.tensors[graph.inputs[0]].quantization
        add_operator(model, B.WHILE, [graph.inputs[0]], [looped], options_type=schema.BuiltinOptions.WhileOptions, options=options)

    rejects(edited(HEAD, edit, tmp_path), "(WHILE): control flow (WHILE) is not supported")


@pytest.mark.parametrize("name", sorted(NATIVE_CUSTOM_OPERATORS))
def test_custom_operators_litert_runs_unchecked_are_refused(name, tmp_path):
    def edit(model):
        code = model.operatorCodes[ops(model, "SOFTMAX")[0].opcodeIndex]
        code.builtinCode, code.deprecatedBuiltinCode, code.customCode = B.CUSTOM, B.CUSTOM, name

    rejects(edited(HEAD, edit, tmp_path), f"custom operator {name} is not one lastlayer runs")


def test_custom_operator_name_must_be_utf8(tmp_path):
    def edit(model):
        model.operatorCodes[0].customCode = b"edgetpu-\xff\xfe-op"

    rejects(edited(EDGETPU, edit, tmp_path), "operator code 0 (custom): its name", "is not valid UTF-8")


def _cast_at(model: schema.ModelT, position: str, kind: int) -> None:
    """Put a CAST between the graph's input (or output) and the network, its other side typed ``kind``."""
    graph = model.subgraphs[0]
    if position == "input":
        old = graph.inputs[0]
        new = add_tensor(model, "cast input", graph.tensors[old].shape, np.float32)
        graph.tensors[old].quantization = None
        graph.tensors[old].type, graph.tensors[new].type = T.FLOAT32, kind
        add_operator(model, B.CAST, [new], [old])
        graph.operators.insert(0, graph.operators.pop())
        graph.inputs = [new]
    else:
        old = graph.outputs[0]
        new = add_tensor(model, "cast output", graph.tensors[old].shape, np.float32)
        graph.tensors[new].type = kind
        add_operator(model, B.CAST, [old], [new])
        graph.outputs = [new]


@pytest.mark.parametrize(("position", "kind", "allowed"), [
    ("input", T.FLOAT16, "FLOAT32, INT16, INT8 or UINT8"), ("input", T.BOOL, "FLOAT32, INT16, INT8 or UINT8"),
    ("output", T.BOOL, "FLOAT32, INT16, INT32, INT64, INT8 or UINT8"), ("output", T.FLOAT16, "FLOAT32, INT16, INT32")])
def test_graph_inputs_and_outputs_are_numbers_a_classifier_has(position, kind, allowed, tmp_path):
    """A CAST accepts these types, so only the rule on the main graph's inputs and outputs refuses them."""
    name = schema.TensorType.__dict__
    type_name = next(k for k, v in name.items() if v == kind)
    rejects(edited(FLOAT_V3, lambda m: _cast_at(m, position, kind), tmp_path),
            f"graph {position} 0 (tensor", f"is {type_name};", allowed)
    accepts_model = tree(FLOAT_V3)
    _cast_at(accepts_model, position, T.FLOAT32 if position == "output" else T.UINT8)
    accepts(accepts_model, tmp_path)


def test_operator_carrying_options_it_does_not_take(tmp_path):
    def edit(model):
        op = ops(model, "LOGISTIC")[0]
        op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.WhileOptions, schema.WhileOptionsT()

    rejects(edited(FLOAT_V3, edit, tmp_path), "(LOGISTIC): carries WhileOptions but LOGISTIC takes no options")


def test_hybrid_and_quantized_signatures_are_accepted(tmp_path):
    """Float activations with int8 weights (dynamic-range quantization) are a signature of CONV_2D and FULLY_CONNECTED."""
    model = tree(FLOAT_V3)
    graph = model.subgraphs[0]
    fc = ops(model, "FULLY_CONNECTED")[0]
    weights = graph.tensors[fc.inputs[1]]
    values = np.frombuffer(bytes(model.buffers[weights.buffer].data), np.float32).reshape(weights.shape)
    scale = float(np.abs(values).max() / 127)
    model.buffers[weights.buffer].data = np.round(values / scale).astype(np.int8).view(np.uint8).reshape(-1)
    weights.type = T.INT8
    from lastlayer.model.edit import quantization

    weights.quantization = quantization(scale, 0)
    accepts(model, tmp_path)


def test_the_tables_cover_every_operator_lastlayer_supports():
    from lastlayer.model.edgetpu import OPERATOR_RULES

    assert set(OPERATOR_RULES) <= set(SIGNATURES) == set(OPERATOR_ARITY)
    assert set(OPERATOR_OPTIONS) <= set(SIGNATURES)
    assert {options for options, _ in OPERATOR_OPTIONS.values()} <= set(OPTIONS_NAMES.values())
    for name in ("MEAN", "HARD_SWISH", "LOGISTIC", "PAD", "TRANSPOSE", "CONCATENATION", "QUANTIZE", "DEQUANTIZE", "MUL"):
        assert name in SIGNATURES
    for name in ("WHILE", "IF", "CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "FAKE_QUANT"):
        assert name not in SIGNATURES
