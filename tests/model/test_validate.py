"""The structural validator: one test per rule, each on a real model's object tree edited to break it."""

from __future__ import annotations

import math
import os
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.model.edit import add_operator, add_tensor, new_model, quantization, set_io
from lastlayer.model.io import TFLITE_FILE_IDENTIFIER, load_model, model_to_bytes, verify_model_bytes
from lastlayer.model.validate import OPERATOR_ARITY, validate_model

from conftest import EXTRACTOR, EXTRACTOR_EDGETPU, MODELS

HEAD = "mobilenet_quant_v1_224_head_layers.tflite"  # CONV_2D, RESHAPE, SOFTMAX; 7 tensors
SMALL = "mobilenet_v1_0.25_128_quant.tflite"  # CONV_2D, DEPTHWISE_CONV_2D, AVERAGE_POOL_2D, RESHAPE, SOFTMAX
BIRD = "mobilenet_v2_1.0_224_inat_bird_quant.tflite"  # ends in FULLY_CONNECTED
PTQ = "tf2_mobilenet_v2_1.0_224_ptq.tflite"  # int8, per-axis weights


def _ops(model: schema.ModelT, name: str) -> list[schema.OperatorT]:
    code = getattr(schema.BuiltinOperator, name)
    indices = {i for i, c in enumerate(model.operatorCodes) if max(c.builtinCode, c.deprecatedBuiltinCode) == code}
    return [op for op in model.subgraphs[0].operators if op.opcodeIndex in indices]


def _constant_index(model: schema.ModelT) -> int:
    graph = model.subgraphs[0]
    return int(_ops(model, "CONV_2D")[0].inputs[1]) if graph else 0


@pytest.fixture
def broken(model_file, tmp_path):
    """``broken(name, edit)`` -> a file holding shared model ``name`` after ``edit(tree)``."""

    def make(name: str, edit) -> Path:
        model = load_model(model_file(name))
        edit(model)
        path = tmp_path / f"broken_{name}"
        path.write_bytes(model_to_bytes(model))
        return path

    return make


def _rejects(path: Path, problem: str) -> str:
    with pytest.raises(ModelError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and "re-export the model" in message, message
    assert "\n" not in message and "--model" not in message, message
    assert problem in message, message
    return message


# ------------------------------------------------------------------------------------- real models
@pytest.mark.parametrize("path", sorted(MODELS.glob("*.tflite")) or [MODELS / EXTRACTOR], ids=lambda p: p.name)
def test_every_shared_model_validates(model_file, path):
    model = load_model(model_file(path.name))  # the loader validates
    validate_model(model, path.name, file_size=path.stat().st_size)


def test_models_lastlayer_writes_validate(model_file):
    from lastlayer.model.surgery import cut_at_embedding

    cut, _ = cut_at_embedding(load_model(model_file(SMALL)), None, SMALL)
    verify_model_bytes(model_to_bytes(cut), "cut model")
    model = new_model("test")
    x = add_tensor(model, "x", [1, 4], np.uint8, quant=quantization(0.5, 3))
    w = add_tensor(model, "w", [2, 4], np.uint8, quant=quantization(0.1, 128), data=np.ones((2, 4)))
    y = add_tensor(model, "y", [1, 2], np.uint8, quant=quantization(0.2, 0))
    add_operator(model, schema.BuiltinOperator.FULLY_CONNECTED, [x, w, -1], [y])  # a missing bias is optional
    set_io(model, [x], [y])
    verify_model_bytes(model_to_bytes(model), "written model")
    validate_model(model, "list-based tree")  # index lists as Python lists, not NumPy arrays


def test_arity_table_covers_the_edgetpu_operators():
    from lastlayer.model.edgetpu import OPERATOR_RULES

    missing = set(OPERATOR_RULES) - set(OPERATOR_ARITY)
    assert not missing
    for name in ("QUANTIZE", "DEQUANTIZE", "MEAN", "HARD_SWISH", "L2_NORMALIZATION", "SOFTMAX", "RESHAPE", "CONV_2D",
                 "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "ADD", "MUL", "CONCATENATION", "PAD", "SQUEEZE"):
        assert name in OPERATOR_ARITY


# ------------------------------------------------------------------------------------- the whole model
def test_version_only_flatbuffer_of_24_bytes(tmp_path):
    model = schema.ModelT()
    model.version = 3
    builder = flatbuffers.Builder(64)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    data = bytes(builder.Output())
    assert len(data) == 24 and data[4:8] == b"TFL3"
    path = tmp_path / "version_only.tflite"
    path.write_bytes(data)
    _rejects(path, "has no subgraph")
    with pytest.raises(ModelError, match="version_only.tflite"):
        load_model(data, source="version_only.tflite")


def test_unparsable_flatbuffer_is_one_clean_line(tmp_path):
    path = tmp_path / "offsets.tflite"
    path.write_bytes(b"\xf0\xff\xff\x7fTFL3" + bytes(64))
    with pytest.raises(ModelError, match=r"offsets.tflite is truncated or corrupt \(it cannot be parsed"):
        load_model(path)


def test_bytes_are_named_by_source_or_default(model_file):
    data = bytearray(model_file(HEAD).read_bytes())
    data[4:8] = b"XXXX"
    with pytest.raises(ModelError, match="^head.tflite is not a TensorFlow Lite model"):
        load_model(bytes(data), source="head.tflite")
    with pytest.raises(ModelError, match="^<model bytes> is not"):
        load_model(bytes(data))


def test_main_graph_without_outputs(broken):
    _rejects(broken(HEAD, lambda m: setattr(m.subgraphs[0], "outputs", [])), "main graph has no outputs")


# ------------------------------------------------------------------------------------- indices
def test_operator_input_index_out_of_range(broken):
    def edit(model):
        model.subgraphs[0].operators[0].inputs = [55, -1, 8]

    _rejects(broken(HEAD, edit), "input tensor index 55 out of range (7 tensors)")


def test_operator_output_index_out_of_range(broken):
    _rejects(broken(HEAD, lambda m: setattr(m.subgraphs[0].operators[1], "outputs", [-1])), "output tensor index -1 out of range")


def test_required_input_missing(broken):
    def edit(model):
        op = _ops(model, "DEPTHWISE_CONV_2D")[0]
        op.inputs = [int(op.inputs[0]), int(op.inputs[1]), -1]

    _rejects(broken(SMALL, edit), "DEPTHWISE_CONV_2D): a required input is missing (-1)")


def test_optional_bias_may_be_omitted(model_file):
    model = load_model(model_file(BIRD))
    op = _ops(model, "FULLY_CONNECTED")[0]
    op.inputs = [int(op.inputs[0]), int(op.inputs[1]), -1]
    verify_model_bytes(model_to_bytes(model), "bird without bias")


def test_custom_operators_take_any_arity(model_file):
    model = load_model(model_file(EXTRACTOR_EDGETPU))
    op = model.subgraphs[0].operators[0]
    op.inputs = [int(op.inputs[0]), -1, int(op.inputs[0])]
    verify_model_bytes(model_to_bytes(model), "edgetpu model")


def test_graph_io_index_out_of_range(broken):
    _rejects(broken(HEAD, lambda m: setattr(m.subgraphs[0], "inputs", [7])), "graph input tensor index 7 out of range")


def test_buffer_index_out_of_range(broken):
    def edit(model):
        model.subgraphs[0].tensors[3].buffer = len(model.buffers) + 2

    _rejects(broken(HEAD, edit), "buffer index 11 out of range (model has 9 buffers)")


def test_operator_code_index_out_of_range(broken):
    _rejects(broken(HEAD, lambda m: setattr(m.subgraphs[0].operators[0], "opcodeIndex", 3)), "operator code index 3 out of range")


def test_unknown_builtin_operator(broken):
    _rejects(broken(HEAD, lambda m: setattr(m.operatorCodes[0], "builtinCode", 5000)), "unknown builtin operator 5000")


def test_metadata_buffer_out_of_range(broken):
    _rejects(broken(HEAD, lambda m: setattr(m.metadata[0], "buffer", 99)), "buffer index 99 out of range")


# ------------------------------------------------------------------------------------- arity and options
def test_operator_input_count(broken):
    def edit(model):
        op = _ops(model, "DEPTHWISE_CONV_2D")[0]
        op.inputs = [int(t) for t in op.inputs[:2]]

    _rejects(broken(SMALL, edit), "DEPTHWISE_CONV_2D): 2 inputs, expected 3")


def test_operator_output_count(broken):
    def edit(model):
        op = _ops(model, "SOFTMAX")[0]
        op.outputs = [int(op.outputs[0]), 0]

    _rejects(broken(HEAD, edit), "SOFTMAX): 2 outputs, expected 1")


def test_missing_and_wrong_options(broken):
    def remove(model):
        op = _ops(model, "CONV_2D")[0]
        op.builtinOptions, op.builtinOptionsType = None, 0

    _rejects(broken(SMALL, remove), "CONV_2D): its Conv2DOptions are missing")

    def wrong(model):
        _ops(model, "CONV_2D")[0].builtinOptionsType = schema.BuiltinOptions.Pool2DOptions

    _rejects(broken(SMALL, wrong), "carries Pool2DOptions instead of Conv2DOptions")


def test_option_values(broken):
    _rejects(broken(SMALL, lambda m: setattr(_ops(m, "CONV_2D")[0].builtinOptions, "strideH", 0)), "option strideH = 0")
    _rejects(broken(SMALL, lambda m: setattr(_ops(m, "AVERAGE_POOL_2D")[0].builtinOptions, "padding", 7)), "unknown padding 7")


def test_operand_rank(broken):
    def edit(model):
        op = _ops(model, "CONV_2D")[0]
        model.subgraphs[0].tensors[int(op.inputs[0])].shape = [224, 224, 3]

    _rejects(broken(SMALL, edit), "CONV_2D needs rank 4")


def test_constant_shape_inputs(broken):
    def bias_as_shape(model):
        reshape = _ops(model, "RESHAPE")[0]
        reshape.inputs = [int(reshape.inputs[0]), int(model.subgraphs[0].operators[0].inputs[2])]

    _rejects(broken(HEAD, bias_as_shape), "RESHAPE): invalid new shape")

    def wrong_count(model):
        reshape = _ops(model, "RESHAPE")[0]
        model.buffers[model.subgraphs[0].tensors[int(reshape.inputs[1])].buffer].data = np.array([1, 1000], "<i4").view(np.uint8)

    _rejects(broken(HEAD, wrong_count), "does not hold the 1,001 elements")


# ------------------------------------------------------------------------------------- tensors
def test_negative_dimension_and_signature(broken, model_file):
    _rejects(broken(HEAD, lambda m: setattr(m.subgraphs[0].tensors[0], "shape", [1, -1, 1, 1024])), "negative dimension")
    model = load_model(model_file(HEAD))
    model.subgraphs[0].tensors[0].shapeSignature = [-1, 1, 1, 1024]  # -1 is allowed in the signature
    verify_model_bytes(model_to_bytes(model), "dynamic batch")
    _rejects(broken(HEAD, lambda m: setattr(m.subgraphs[0].tensors[0], "shapeSignature", [-2, 1, 1, 1024])), "shape signature")


def test_absurd_size(broken):
    _rejects(broken(HEAD, lambda m: setattr(m.subgraphs[0].tensors[0], "shape", [65536, 65536, 1, 1024])), "more than 2^31")


def test_constant_buffer_size(broken, model_file):
    def edit(model):
        buffer = model.buffers[model.subgraphs[0].tensors[_constant_index(model)].buffer]
        buffer.data = buffer.data[:-1]

    _rejects(broken(SMALL, edit), "needs 216")
    model = load_model(model_file(SMALL))  # an empty buffer: not a constant, which is fine
    model.buffers[model.subgraphs[0].tensors[_constant_index(model)].buffer].data = None
    validate_model(model, "weights as activations")


def test_unknown_tensor_type(broken):
    _rejects(broken(HEAD, lambda m: setattr(m.subgraphs[0].tensors[0], "type", 99)), "unknown tensor type 99")


@pytest.mark.parametrize("scale", [0.0, -0.5, math.nan, math.inf])
def test_quantization_scale(broken, scale):
    _rejects(broken(HEAD, lambda m: setattr(m.subgraphs[0].tensors[0].quantization, "scale", [scale])), "quantization scale")


def test_zero_point_range(broken):
    def edit(model):
        model.subgraphs[0].tensors[0].quantization.zeroPoint = [-129]

    _rejects(broken(HEAD, edit), "zero point -129 outside the UINT8 range [0, 255]")


def test_zero_points_must_match_scales(broken):
    _rejects(broken(HEAD, lambda m: setattr(m.subgraphs[0].tensors[0].quantization, "zeroPoint", [])), "1 quantization scale(s) but 0 zero point(s)")


def test_per_axis_length_and_dimension(broken):
    def first_per_axis(model):
        return next(t for t in model.subgraphs[0].tensors if t.quantization is not None and t.quantization.scale is not None and len(t.quantization.scale) > 1)

    def shorten(model):
        q = first_per_axis(model).quantization
        q.scale, q.zeroPoint = list(q.scale)[1:], list(q.zeroPoint)[1:]

    _rejects(broken(PTQ, shorten), "per-axis scales do not match dimension 0")
    _rejects(broken(PTQ, lambda m: setattr(first_per_axis(m).quantization, "quantizedDimension", 4)), "quantized dimension 4 out of range")


def test_signalling_nan_scale_is_refused_without_a_warning(broken):
    """A NaN whose bits make NumPy's float cast raise 'invalid value' must give the one error line and no warning."""
    import warnings

    def edit(model):
        q = next(t.quantization for t in model.subgraphs[0].tensors
                 if t.quantization is not None and t.quantization.scale is not None and len(t.quantization.scale) > 1)
        q.scale = np.array([0x7F800001] * len(q.scale), np.uint32).view(np.float32)

    path = broken(PTQ, edit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _rejects(path, "quantization scale nan")


# ------------------------------------------------------------------------------------- graph order
def test_graph_output_not_computed(broken):
    def edit(model):
        graph = model.subgraphs[0]
        softmax = _ops(model, "SOFTMAX")[0]
        graph.operators = [op for op in graph.operators if op is not softmax]

    _rejects(broken(HEAD, edit), "graph output tensor 6 is computed by no operator")


def test_cycle_and_double_writes(broken):
    def cycle(model):
        op = _ops(model, "SOFTMAX")[0]
        op.inputs = [int(op.outputs[0])]

    _rejects(broken(HEAD, cycle), "before operator 2 computes it")

    def twice(model):
        ops = model.subgraphs[0].operators
        ops[1].outputs = [int(ops[0].outputs[0])]

    _rejects(broken(HEAD, twice), "is already written by operator 0")


def test_operator_writes_a_constant(broken):
    def edit(model):
        op = _ops(model, "CONV_2D")[0]
        op.outputs = [int(op.inputs[1])]

    _rejects(broken(HEAD, edit), "is a constant")


def test_builtin_custom_operator_needs_its_options(broken):
    def edit(model):
        code = model.operatorCodes[2]
        code.builtinCode, code.deprecatedBuiltinCode, code.customCode = 32, 32, "TFLite_Detection_PostProcess"

    _rejects(broken(HEAD, edit), "TFLite_Detection_PostProcess): its custom options are missing")


def test_tensor_name_must_be_utf8(broken):
    _rejects(broken(HEAD, lambda m: setattr(m.subgraphs[0].tensors[1], "name", b"bad\xff\xfename")), "not valid UTF-8")


# ------------------------------------------------------------------------------------- paths
def test_folder_symlink_loop_and_unreadable(tmp_path):
    with pytest.raises(ModelError, match="is a folder"):
        load_model(tmp_path)
    loop = tmp_path / "loop.tflite"
    os.symlink(loop, loop)
    with pytest.raises(ModelError, match="loop.tflite is a symbolic link loop"):
        load_model(loop)
    dangling = tmp_path / "dangling.tflite"
    os.symlink(tmp_path / "gone.tflite", dangling)
    with pytest.raises(ModelError, match="dangling.tflite is a broken symbolic link"):
        load_model(dangling)
    with pytest.raises(ModelError, match="nope.tflite does not exist"):
        load_model(tmp_path / "nope.tflite")
    if os.geteuid() != 0:
        locked = tmp_path / "locked.tflite"
        locked.write_bytes(b"x" * 16)
        locked.chmod(0)
        with pytest.raises(ModelError, match="locked.tflite is not readable"):
            load_model(locked)
