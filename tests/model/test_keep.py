"""lastlayer.model.keep: a classifier written with appended classes keeps its own class layer bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter as LiteRT

from jobs.conftest import link_dataset
from lastlayer.embeddings.cache import embed_dataset
from lastlayer.errors import ModelError
from lastlayer.files.datasets import load_dataset
from lastlayer.layer import AppendedClasses
from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.learn.keep import KeepClassesHead
from lastlayer.model.export import extractor_model
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.heads import append_dense_softmax_head
from lastlayer.model.keep import (
    PREFIX,
    STATE_METADATA_NAME,
    read_class_layer,
    scores_from_embedding,
    write_appended_classes,
)
from lastlayer.model.metadata import read_metadata
from lastlayer.model.names import as_text, operator_name
from lastlayer.model.surgery import extract_segment, locate_embedding
from lastlayer.runtime import Interpreter

from conftest import EXTRACTOR
from graphs import float_extractor

QUANTIZED = {
    "uint8 per-tensor, 1x1 CONV_2D": "mobilenet_v1_0.25_128_quant.tflite",
    "int8 per-axis (TF2 PTQ)": "tf2_mobilenet_v2_1.0_224_ptq.tflite",
    "uint8, FULLY_CONNECTED": "mobilenet_v2_1.0_224_inat_bird_quant.tflite",
}


def _float_classifier() -> ModelFile:
    """A float32 classifier built with the library's graph editing: extractor -> FULLY_CONNECTED -> SOFTMAX."""
    tree = float_extractor(features=12)
    rng = np.random.default_rng(1)
    append_dense_softmax_head(tree, rng.normal(size=(7, 12)), rng.normal(scale=0.1, size=7), (-5.0, 5.0))
    return ModelFile.from_tree(tree, "float classifier")


def _head(layer, count: int = 3, seed: int = 0) -> KeepClassesHead:
    """New classes from synthetic ReLU-like embeddings (what the writer gets does not depend on their origin)."""
    rng = np.random.default_rng(seed)
    dim = layer.weights.shape[1]
    head = KeepClassesHead.from_class_layer(layer)
    for k in range(count):
        bump = np.zeros(dim)
        bump[rng.choice(dim, 8, replace=False)] = 3.0
        head.add(np.clip(rng.uniform(0, 1.5, size=(4, dim)) + bump, 0, 6), layer.num_classes + k, f"new{k}")
    return head


def _class_layer(model: ModelFile) -> list:
    """The class layer's weights and bias as stored (type, shape, quantization, bytes), and the output's quantization."""
    tree = model.tree
    graph = tree.subgraphs[0]
    op = graph.operators[locate_embedding(tree).class_layer]
    stored = []
    for index in op.inputs[1:]:
        tensor = graph.tensors[index]
        q = tensor.quantization
        stored.append((tensor.type, list(tensor.shape), None if q is None or q.scale is None else (list(q.scale), list(q.zeroPoint)),
                       bytes(np.asarray(tree.buffers[tensor.buffer].data, np.uint8))))
    out = graph.tensors[graph.outputs[0]].quantization
    stored.append(None if out is None or out.scale is None else (list(out.scale), list(out.zeroPoint)))
    return stored


def _run(model: ModelFile, X: np.ndarray) -> np.ndarray:
    """Run a model whose input is an embedding on the float rows of ``X`` (quantized as its input needs)."""
    interpreter = LiteRT(model_content=model.data)
    interpreter.allocate_tensors()
    given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    out = []
    for x in X:
        if given["dtype"] != np.float32:
            scale, zero = given["quantization"]
            info = np.iinfo(given["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        interpreter.set_tensor(given["index"], x.astype(given["dtype"]).reshape(given["shape"]))
        interpreter.invoke()
        out.append(interpreter.get_tensor(taken["index"]).reshape(-1).copy())
    return np.array(out)


def _segment(model: ModelFile, output_name: str | None) -> ModelFile:
    """Embedding -> the tensor named ``output_name`` (default: the softmax's input)."""
    tree = model.copy_tree()
    graph = tree.subgraphs[0]
    if output_name is None:
        softmax = next(op for op in graph.operators if operator_name(tree.operatorCodes[op.opcodeIndex]) == "SOFTMAX")
        target = softmax.inputs[0]
    else:
        target = next(i for i, t in enumerate(graph.tensors) if as_text(t.name) == output_name)
    return ModelFile.from_tree(extract_segment(tree, [target], [locate_embedding(tree).tensor]), "segment")


@pytest.mark.parametrize("name", list(QUANTIZED.values()), ids=list(QUANTIZED))
def test_original_rows_biases_labels_and_logits_stay_bit_exact(model_file, name):
    base = ModelFile.read(model_file(name))
    layer = read_class_layer(base)
    head = _head(layer)
    kept = ModelFile.from_bytes(write_appended_classes(base, head.export()), "kept")
    assert kept.kind is ModelKind.CLASSIFIER
    assert _class_layer(kept) == _class_layer(base)
    graph = kept.tree.subgraphs[0]
    assert list(graph.tensors[graph.outputs[0]].shape) == [1, layer.num_classes + 3]
    assert kept.label_list(layer.num_classes + 3) == base.label_list(layer.num_classes) + ["new0", "new1", "new2"]
    # The original logits reach the softmax unchanged (moved by whole steps when the range moved up).
    rng = np.random.default_rng(5)
    X = np.clip(rng.uniform(0, 2.5, size=(12, layer.weights.shape[1])), 0, 6)
    before = _run(_segment(base, None), X).astype(np.int64)
    joined = _run(_segment(kept, f"{PREFIX}/Joined"), X).astype(np.int64)
    scale = float(graph.tensors[next(i for i, t in enumerate(graph.tensors) if as_text(t.name) == f"{PREFIX}/Joined")]
                  .quantization.scale[0])
    steps = int(round((head.logit_window()[1] - layer.logit_range[1]) / scale))
    low = np.iinfo(np.int8 if layer.dtype == "int8" else np.uint8).min
    np.testing.assert_array_equal(joined[:, :layer.num_classes], np.maximum(before - steps, low))
    if layer.dtype == "int8":  # TF2's logits reach only 11.4: the range moves up (by at most 3/4 of its part below 0)
        assert layer.max_logit_shift == pytest.approx(-0.75 * layer.logit_range[0]) and steps > 0
    # The saved model ranks as the learner's float math does (which models the range and its clipping),
    # wherever the float top-2 logits are more than a few quantization steps apart.
    probes = np.concatenate([X, *[np.concatenate(c.examples) for c in head.new_classes_]])
    logits = np.sort(head.decision_function(probes), axis=1)
    clear = logits[:, -1] - logits[:, -2] > 4 * scale
    saved = np.argmax(_run(scores_from_embedding(kept), probes), axis=1)
    assert clear.sum() >= 12 and np.all(saved[clear] == head.predict(probes)[clear])


def _dequantized(model: ModelFile, name: str, X: np.ndarray) -> np.ndarray:
    """The tensor ``name`` of ``model`` (from the embedding on) as float values."""
    tensor = next(t for t in model.tree.subgraphs[0].tensors if as_text(t.name) == name)
    values = _run(_segment(model, name), X).astype(np.float64)
    q = tensor.quantization
    return values if q is None or q.scale is None or not len(q.scale) else q.scale[0] * (values - q.zeroPoint[0])


@pytest.mark.parametrize("name", [*QUANTIZED.values(), None], ids=[*QUANTIZED, "float32"])
def test_the_new_logits_are_the_best_original_logit_plus_the_gated_cosine(model_file, name):
    """In LiteRT, new class k's logit is max(original logits) + min(r_k, steepness * r_k), r_k = s (cos_k - tau_k),
    the cosine of the centred embedding (exact: computed in float32), the sum rounded once into the joined logits."""
    base = ModelFile.read(model_file(name)) if name else _float_classifier()
    layer = read_class_layer(base)
    examples = _head(layer).new_classes_
    head = KeepClassesHead(layer.weights, layer.bias, layer.labels, scale=6.0, logit_range=layer.logit_range,
                           max_logit_shift=layer.max_logit_shift)  # a gentle slope: steeper below the threshold
    for k, klass in enumerate(examples):
        head.add(np.concatenate(klass.examples), layer.num_classes + k)
    kept = ModelFile.from_bytes(write_appended_classes(base, head.export()), "kept")
    rng = np.random.default_rng(7)
    X = np.concatenate([np.clip(rng.uniform(0, 2.5, size=(12, layer.weights.shape[1])), 0, 6),
                        *[np.concatenate(c.examples) for c in head.new_classes_]])
    joined = _dequantized(kept, f"{PREFIX}/Joined", X)
    if layer.logit_range is not None:  # the embedding as the model sees it (quantized)
        X = _dequantized(kept, f"{PREFIX}/Embedding", X)
    rows, bias = head.new_rows()
    relative = (X - X.mean(axis=1, keepdims=True)) @ rows.T
    relative = relative / np.linalg.norm(X - X.mean(axis=1, keepdims=True), axis=1, keepdims=True) + bias
    gated = np.minimum(relative, head.steepness * relative)
    expected = joined[:, :layer.num_classes].max(axis=1, keepdims=True) + gated
    assert head.steepness > 1 and (gated > 0).any() and (gated < 0).any()  # both sides of the gate are probed
    if layer.logit_range is None:
        np.testing.assert_allclose(joined[:, layer.num_classes:], expected, rtol=1e-5, atol=1e-4)
    else:
        window = head.logit_window()
        step = (window[1] - window[0]) / 255
        np.testing.assert_allclose(joined[:, layer.num_classes:], np.clip(expected, *window), atol=step / 2 + 1e-4)


def test_a_float_classifier_keeps_its_probabilities_up_to_the_new_classes_share():
    base = _float_classifier()
    layer = read_class_layer(base)
    assert layer.dtype == "float32" and layer.logit_range is None and layer.num_classes == 7
    kept = ModelFile.from_bytes(write_appended_classes(base, _head(layer, 2).export()), "kept")
    assert _class_layer(kept) == _class_layer(base)
    X = np.random.default_rng(2).uniform(0, 2, size=(6, 12)).astype(np.float32)
    before, after = _run(scores_from_embedding(base), X), _run(scores_from_embedding(kept), X)
    assert after.shape == (6, 9)
    np.testing.assert_allclose(after[:, :7] / after[:, :7].sum(axis=1, keepdims=True), before, rtol=1e-5)


def test_writing_again_replaces_the_appended_classes_and_reads_them_back(model_file):
    base = ModelFile.read(model_file("mobilenet_v1_0.25_128_quant.tflite"))
    layer = read_class_layer(base)
    first = ModelFile.from_bytes(write_appended_classes(base, _head(layer, 2).export()), "first")
    again = read_class_layer(first)
    np.testing.assert_array_equal(again.weights, layer.weights)
    np.testing.assert_array_equal(again.bias, layer.bias)
    assert again.appended == 2 and again.labels == layer.labels and again.state["classes"][1]["label"] == "new1"
    head = KeepClassesHead.from_class_layer(again)
    assert head.labels[-2:] == ["new0", "new1"] and head.shots(layer.num_classes + 1) == 4
    head.add(np.full(layer.weights.shape[1], 2.0), layer.num_classes + 2, "new2")
    second = ModelFile.from_bytes(write_appended_classes(first, head.export()), "second")
    names = [operator_name(second.tree.operatorCodes[op.opcodeIndex]) for op in second.tree.subgraphs[0].operators]
    assert names.count("CONCATENATION") == 1 and names.count("FULLY_CONNECTED") == 1  # the new classes' layer, once
    assert _class_layer(second) == _class_layer(base) and read_class_layer(second).appended == 3
    assert len(second.data) - len(first.data) < 2 * layer.weights.shape[1] + 4096  # one more row, not another layer
    assert read_metadata(second.tree, STATE_METADATA_NAME) is not None


def test_more_metadata_and_an_output_type_are_written(model_file):
    base = ModelFile.read(model_file("mobilenet_v1_0.25_128_quant.tflite"))
    exported = _head(read_class_layer(base), 1).export()
    extra = AppendedClasses(exported.weights, exported.bias, exported.labels, exported.state, {"lastlayer_unknown": b'{"rule": 1}'},
                            exported.logit_range)
    kept = ModelFile.from_bytes(write_appended_classes(base, extra, output_type="float32"), "kept")
    assert read_metadata(kept.tree, "lastlayer_unknown") == b'{"rule": 1}'
    graph = kept.tree.subgraphs[0]
    assert graph.tensors[graph.outputs[0]].type == schema.TensorType.FLOAT32 and read_class_layer(kept).appended == 1


def test_what_cannot_take_appended_classes_says_why(model_file):
    with pytest.raises(ModelError, match="no classes to keep"):
        read_class_layer(ModelFile.read(model_file(EXTRACTOR)))
    base = ModelFile.read(model_file("mobilenet_v1_0.25_128_quant.tflite"))
    exported = _head(read_class_layer(base), 1).export()
    with pytest.raises(ModelError, match="256-d embeddings but the new rows have 10"):
        write_appended_classes(base, AppendedClasses(np.ones((1, 10), np.float32), np.zeros(1, np.float32)))
    with pytest.raises(ModelError, match="labels for 1001"):
        write_appended_classes(base, AppendedClasses(exported.weights, exported.bias, ["a", "b"], exported.state))
    with pytest.raises(ModelError, match="cannot represent"):
        write_appended_classes(base, AppendedClasses(exported.weights, exported.bias, exported.labels, exported.state,
                                                     logit_range=(100.0, 140.0)))


def test_old_classes_kept_and_new_ones_learned_on_a_fixed_split(datasets_dir, images_dir, model_file, tmp_path):
    """MobileNet v2 with the 10 clothing classes appended (the first 5 / 1 photos of each as shots): top-1 agreement with
    the original on flowers and the shared images >= 0.99 at 5 shots, >= 0.995 at 1 (measured 1.0), new-class top-1 on
    10 held-out photos per class within 0.05 of imprinting them alone (measured 0.59 vs 0.62 at 5 shots, 0.34 vs 0.34
    at 1; the rule before the gate: 0.54 and 0.28)."""
    def first(source, count: int, name: str):
        classes = sorted(p.name for p in source.iterdir() if p.is_dir())
        return link_dataset(source, tmp_path / name, dict.fromkeys(classes, count))

    base = ModelFile.read(model_file("mobilenet_v2_1.0_224_quant.tflite"))
    extractor = Interpreter(extractor_model(base))
    shots, held_out, flowers = (embed_dataset(extractor, load_dataset(first(source, count, name)), progress=False)
                                for source, count, name in ((datasets_dir / "clothing" / "train", 5, "shots"),
                                                            (datasets_dir / "clothing" / "test", 10, "held"),
                                                            (datasets_dir / "flowers", 20, "flowers")))
    shared = sorted(p for p in images_dir.rglob("*") if p.suffix in (".bmp", ".jpg"))
    pictures = np.concatenate([flowers.X, [extractor.run_file(path) for path in shared]])
    layer = read_class_layer(base)
    original = np.argmax(_run(scores_from_embedding(base), pictures), axis=1)
    for count in (5, 1):
        rows = np.flatnonzero(np.concatenate([[True] * count + [False] * (5 - count)] * 10))
        X, y = shots.X[rows], shots.y[rows]
        head = KeepClassesHead(layer.weights, layer.bias, layer.labels, logit_range=layer.logit_range,
                               max_logit_shift=layer.max_logit_shift).fit(X, y + layer.num_classes)
        kept = scores_from_embedding(ModelFile.from_bytes(write_appended_classes(base, head.export()), "kept"))
        agreement = np.mean(np.argmax(_run(kept, pictures), axis=1) == original)
        new = np.mean(np.argmax(_run(kept, held_out.X), axis=1) == held_out.y + layer.num_classes)
        alone = np.mean(ImprintingHead().fit(X, y).predict(held_out.X) == held_out.y)
        assert agreement >= (0.99 if count > 1 else 0.995), (count, agreement)
        assert new >= alone - 0.05, (count, new, alone)
