from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from ai_edge_litert import interpreter as litert

from lastlayer.cli import main
from lastlayer.errors import ModelError
from lastlayer.model.io import load_model, model_to_bytes
from lastlayer.model.join import join
from lastlayer.model.surgery import cut_at_embedding, extract_segment, find_embedding
from lastlayer.model.view import inspect_model
from lastlayer.runtime import Interpreter

from conftest import EXTRACTOR

CLASSIFIERS = {
    "mobilenet_v1_0.25_128_quant.tflite": ("MobilenetV1/Logits/AvgPool_1a/AvgPool", 256),
    "mobilenet_v1_0.5_160_quant.tflite": ("MobilenetV1/Logits/AvgPool_1a/AvgPool", 512),
    "mobilenet_v2_1.0_224_quant.tflite": ("MobilenetV2/Logits/AvgPool", 1280),
    "mobilenet_v2_1.0_224_inat_bird_quant.tflite": ("AvgPool/AvgPool", 1280),
    "tf2_mobilenet_v2_1.0_224_ptq.tflite": (None, 1280),
}


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_cut_finds_the_embedding_and_drops_the_weights(model_file, name):
    path = model_file(name)
    expected_name, dim = CLASSIFIERS[name]
    model, point = cut_at_embedding(load_model(path))
    packed = model_to_bytes(model)
    assert point.dim == dim and (expected_name is None or point.name == expected_name)
    if expected_name is None:  # the TF2 model: the MEAN output
        assert "GlobalPool/Mean" in point.name
    classes = Interpreter(path).output_size
    assert len(packed) < path.stat().st_size - classes * dim  # the class layer's weights are gone
    out = Interpreter(packed).output_details[0]
    assert list(out["shape"])[-1] == dim


@pytest.mark.parametrize("name", ["mobilenet_v1_0.25_128_quant.tflite", "mobilenet_v1_0.5_160_quant.tflite"])
def test_cut_embedding_equals_the_full_models_intermediate_tensor(model_file, images_dir, name):
    path = model_file(name)
    full = Interpreter(path, preserve_all_tensors=True)
    point = find_embedding(load_model(path))
    extractor = Interpreter(cut_at_embedding(load_model(path))[0])
    for image in ("cat.bmp", "parrot.jpg", "sunflower.bmp"):
        embedding = extractor.run_file(images_dir / image)
        full.run_file(images_dir / image)
        intermediate = full.litert.get_tensor(point.tensor).reshape(-1)
        np.testing.assert_array_equal(extractor.raw_output(), intermediate)
        assert embedding.shape == (CLASSIFIERS[name][1],)


def test_v1_cut_uses_the_same_tensor_as_corals_extractor(model_file):
    coral = inspect_model(model_file(EXTRACTOR)).main
    ours = inspect_model(cut_at_embedding(load_model(model_file("mobilenet_v1_0.5_160_quant.tflite")))[0]).main
    coral_out, our_out = coral.tensors[coral.outputs[0]], ours.tensors[ours.outputs[0]]
    assert our_out.name == coral_out.name and our_out.quantization == coral_out.quantization
    assert [op.name for op in ours.operators][-1] == [op.name for op in coral.operators][-1] == "AVERAGE_POOL_2D"


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_join_of_cut_and_head_reproduces_the_model(model_file, name):
    model = load_model(model_file(name))
    point = find_embedding(model)
    base = extract_segment(copy.deepcopy(model), [point.tensor])
    head = extract_segment(copy.deepcopy(model), [int(t) for t in model.subgraphs[0].outputs], [point.tensor])
    original, joined = Interpreter(model_file(name)), Interpreter(join(base, head))
    rng = np.random.default_rng(1)
    for _ in range(3):
        pixels = rng.integers(0, 256, size=original.input_shape[1:], dtype=np.uint8)
        np.testing.assert_array_equal(original.run(pixels), joined.run(pixels))


def test_join_edgetpu_base_with_cpu_head(model_file):
    base = load_model(model_file("mobilenet_quant_v1_224_feature_layers_edgetpu.tflite"))
    head = load_model(model_file("mobilenet_quant_v1_224_head_layers.tflite"))
    joined = inspect_model(join(base, head)).main
    assert [op.name for op in joined.operators] == ["edgetpu-custom-op", "CONV_2D", "RESHAPE", "SOFTMAX"]
    junction = joined.tensors[joined.operators[0].outputs[0]]
    assert joined.operators[1].inputs[0] == junction.index
    assert junction.name == "MobilenetV1/Logits/AvgPool_1a/AvgPool" and junction.quantization.scale[0] == pytest.approx(0.0235285)
    head_view = inspect_model(head).main
    kernel = next(t for t in joined.tensors if t.name.endswith("weights_quant/FakeQuantWithMinMaxVars"))
    original = next(t for t in head_view.tensors if t.name == kernel.name)
    assert kernel.quantization == original.quantization and kernel.buffer_bytes == original.buffer_bytes
    assert joined.tensors[joined.outputs[0]].shape == [1, 1001]


def test_join_rejects_mismatched_or_unconnected_heads(model_file):
    base = load_model(model_file(EXTRACTOR))
    head = load_model(model_file("mobilenet_quant_v1_224_head_layers.tflite"))
    other = copy.deepcopy(head)
    other.subgraphs[0].tensors[other.subgraphs[0].inputs[0]].quantization.scale = [0.5]
    with pytest.raises(ModelError, match="junction does not match"):
        join(base, other)
    renamed = copy.deepcopy(head)
    renamed.subgraphs[0].tensors[renamed.subgraphs[0].inputs[0]].name = "features"
    with pytest.raises(ModelError, match="BASE_OUTPUT=HEAD_INPUT") as info:
        join(base, renamed)
    assert info.value.subject == "mapping" and "--" not in str(info.value)  # the CLI adds its own flag
    joined = join(base, renamed, {"MobilenetV1/Logits/AvgPool_1a/AvgPool": "features"})
    assert [op.name for op in inspect_model(joined).main.operators][-3:] == ["CONV_2D", "RESHAPE", "SOFTMAX"]
    with pytest.raises(ModelError, match="no output tensor named 'nope'"):
        join(base, renamed, {"nope": "features"})


def test_two_subgraphs_and_unknown_tensor_are_errors(model_file):
    model = load_model(model_file(EXTRACTOR))
    with pytest.raises(ModelError, match="no tensor named 'missing'"):
        cut_at_embedding(model, "missing")
    model.subgraphs.append(copy.deepcopy(model.subgraphs[0]))
    with pytest.raises(ModelError, match="2 subgraphs"):
        cut_at_embedding(model)
    with pytest.raises(ModelError, match="does not end in a classification layer"):
        cut_at_embedding(load_model(model_file(EXTRACTOR)))


def test_cli_cut_and_join(capsys, model_file, tmp_path):
    out = tmp_path / "v2.tflite"
    assert main(["cut", "mobilenet_v2_1.0_224_quant.tflite", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["embedding_size"] == 1280 and summary["bytes_after"] < summary["bytes_before"]
    assert summary["removed_tail"] == ["CONV_2D", "RESHAPE", "SOFTMAX"]
    litert.Interpreter(model_path=str(out)).allocate_tensors()
    assert main(["cut", EXTRACTOR, "-o", str(tmp_path / "x.tflite"), "--tensor", "nope"]) == 1
    assert "no tensor named 'nope'" in capsys.readouterr().err and not (tmp_path / "x.tflite").exists()
    joined = tmp_path / "joined.tflite"
    assert main(["join", "mobilenet_quant_v1_224_feature_layers_edgetpu.tflite", "mobilenet_quant_v1_224_head_layers.tflite",
                 "-o", str(joined)]) == 0
    assert "edgetpu-custom-op -> CONV_2D -> RESHAPE -> SOFTMAX" in capsys.readouterr().out
    assert main(["join", EXTRACTOR, "mobilenet_v2_1.0_224_quant.tflite", "-o", str(tmp_path / "bad.tflite")]) == 1
    assert "--map" in capsys.readouterr().err and not (tmp_path / "bad.tflite").exists()
