from __future__ import annotations

import os

import numpy as np
import pytest
from ai_edge_litert import interpreter as litert
from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError, OutputError
from lastlayer.model.io import load_model, model_to_bytes, save_model
from lastlayer.model.names import builtin_code, operator_name
from lastlayer.model.view import inspect_model

from conftest import CPU_MODELS, EDGETPU_MODELS, EXTRACTOR, EXTRACTOR_EDGETPU


def _outputs(model_bytes: bytes, inputs: np.ndarray) -> list[np.ndarray]:
    interp = litert.Interpreter(model_content=model_bytes, num_threads=1)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    outs = []
    for sample in inputs:
        interp.set_tensor(detail["index"], sample[np.newaxis].astype(detail["dtype"]))
        interp.invoke()
        outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
    return outs


@pytest.mark.parametrize("name", CPU_MODELS)
def test_round_trip_gives_identical_outputs(model_file, name):
    path = model_file(name)
    original = path.read_bytes()
    repacked = model_to_bytes(load_model(path))
    shape = litert.Interpreter(model_content=original).get_input_details()[0]["shape"][1:]
    inputs = np.random.default_rng(0).integers(0, 256, size=(3, *shape), dtype=np.uint8)
    for before, after in zip(_outputs(original, inputs), _outputs(repacked, inputs)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("name", EDGETPU_MODELS)
def test_round_trip_keeps_edgetpu_op_and_its_compiled_blob(model_file, name):
    model = load_model(model_file(name))
    again = load_model(model_to_bytes(model))
    assert operator_name(again.operatorCodes[0]) == "edgetpu-custom-op"
    np.testing.assert_array_equal(again.subgraphs[0].operators[0].customOptions, model.subgraphs[0].operators[0].customOptions)
    assert inspect_model(again).to_dict() == inspect_model(model).to_dict()


def test_view_of_extractor(model_file):
    view = inspect_model(model_file(EXTRACTOR))
    graph = view.main
    assert len(graph.operators) == 28
    assert {op.name for op in graph.operators} == {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D"}
    out = graph.tensors[graph.outputs[0]]
    assert out.name == "MobilenetV1/Logits/AvgPool_1a/AvgPool"
    assert out.shape == [1, 1, 1, 1024] and out.dtype == "UINT8"
    assert out.quantization.scale[0] == pytest.approx(0.023528477) and out.quantization.zero_point == [0]
    inp = graph.tensors[graph.inputs[0]]
    assert inp.quantization.scale[0] == pytest.approx(1 / 128) and inp.quantization.zero_point == [128]
    assert "min_runtime_version" in view.metadata and not view.has_edgetpu_op
    assert view.description == "MLIR Converted."


def test_view_marks_edgetpu_op_and_per_axis_quantization(model_file):
    assert inspect_model(model_file(EXTRACTOR_EDGETPU)).has_edgetpu_op
    per_axis = [t for t in inspect_model(model_file("tf2_mobilenet_v2_1.0_224_ptq.tflite")).main.tensors
                if t.quantization is not None and t.quantization.per_axis]
    assert per_axis, "the TF2 PTQ model quantizes conv weights per channel"
    assert all(len(t.quantization.scale) == t.shape[t.quantization.axis] for t in per_axis)
    text = inspect_model(model_file(EXTRACTOR_EDGETPU)).to_text()
    assert "edgetpu-custom-op" in text and "[Edge TPU]" in text


@pytest.mark.parametrize(
    ("deprecated", "new", "expected"),
    [(3, 0, "CONV_2D"), (3, 3, "CONV_2D"), (127, 150, None)],
)
def test_opcode_resolution_reads_both_fields(deprecated, new, expected):
    code = schema.OperatorCodeT()
    code.deprecatedBuiltinCode, code.builtinCode = deprecated, new
    assert builtin_code(code) == max(deprecated, new)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    assert operator_name(code) == (expected or names[new])


def test_truncated_model_is_rejected(model_file, tmp_path):
    data = model_file(EXTRACTOR).read_bytes()
    bad = tmp_path / "truncated.tflite"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated.tflite is truncated or corrupt"):
        load_model(bad)


def test_text_file_named_tflite_is_rejected(tmp_path):
    bad = tmp_path / "notes.tflite"
    bad.write_text("this is not a model\n" * 20)
    with pytest.raises(ModelError, match="notes.tflite is not a TensorFlow Lite model"):
        load_model(bad)


def test_garbage_with_identifier_is_rejected(tmp_path):
    bad = tmp_path / "garbage.tflite"
    bad.write_bytes(b"\x10\x00\x00\x00TFL3" + os.urandom(4000))
    with pytest.raises(ModelError, match="truncated or corrupt"):
        load_model(bad)


def test_missing_model_and_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.tflite")
    with pytest.raises(ModelError, match="is a folder"):
        load_model(tmp_path)


def test_save_is_atomic_and_reports_unwritable_paths(model_file, tmp_path):
    model = load_model(model_file("mobilenet_quant_v1_224_head_layers.tflite"))
    target = tmp_path / "out.tflite"
    save_model(model, target)
    assert load_model(target).description == b"TOCO Converted."
    assert [p.name for p in tmp_path.iterdir()] == ["out.tflite"]
    with pytest.raises(OutputError, match="does not exist"):
        save_model(model, tmp_path / "missing" / "x.tflite")
    if os.geteuid() != 0:  # root can write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="cannot write"):
            save_model(model, locked / "x.tflite")


def test_failed_write_leaves_old_file_and_no_temp(model_file, tmp_path, monkeypatch):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OutputError, match="No space left"):
        save_model(b"new bytes", target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_metadata_entries_listed(model_file):
    view = inspect_model(model_file("mobilenet_v2_1.0_224_quant.tflite"))
    assert set(view.metadata) >= {"min_runtime_version", "TFLITE_METADATA"}
    assert all(size > 0 for size in view.metadata.values())
    assert "lastlayer_imprinting" not in view.metadata and "labels" not in view.metadata
