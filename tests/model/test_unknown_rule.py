"""The unknown rule in a model file: stored for the tensor the head reads, read back, applied through lastlayer's own copy.

The file's graph stays as it was, so LiteRT and PyCoral readers get the plain scores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ai_edge_litert import interpreter as litert
from PIL import Image

from lastlayer.errors import ModelError
from lastlayer.jobs.unknown import unknown_check
from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.learn.tuned import TunedSoftmaxRegression
from lastlayer.learn.unknown import UnknownRule
from lastlayer.model.export import write_head
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.metadata import read_metadata, write_metadata
from lastlayer.model.unknown import UNKNOWN_METADATA_NAME, expose_tensors, read_unknown_rule
from lastlayer.pycoral.adapters import classify, common
from lastlayer.pycoral.utils import edgetpu
from lastlayer.runtime import Interpreter, extract_embeddings

from conftest import EXTRACTOR

FLOWERS = ("daisy", "roses", "tulips")


@pytest.fixture(scope="module")
def taught(model_file, datasets_dir):
    """The extractor, 8 photos of each of 3 flower classes with their embeddings, and a rule from them."""
    base = ModelFile.read(model_file(EXTRACTOR))
    paths = [p for name in FLOWERS for p in sorted((datasets_dir / "flowers" / name).iterdir())[:8]]
    y = np.repeat(np.arange(3), 8)
    X = extract_embeddings(Interpreter(base), paths, progress=False)
    return base, paths, X, y, UnknownRule.fit(X, y)


def _layer(kind, X, y, rule=None):
    if kind == "imprint":
        layer = ImprintingHead().fit(X, y, labels=list(FLOWERS)).export()
    else:
        layer = TunedSoftmaxRegression(seed=0).fit(X, y).export(list(FLOWERS))
    return layer if rule is None else rule.attach(layer)


@pytest.mark.parametrize(("kind", "tensor"), [("imprint", "MobilenetV1/Logits/AvgPool_1a/AvgPool"), ("softmax", "Appended/Reshape/Output")])
def test_rule_is_stored_for_the_tensor_the_head_reads_and_read_back(taught, kind, tensor):
    base, _, X, y, rule = taught
    model = ModelFile.from_bytes(write_head(base, _layer(kind, X, y, rule)), f"{kind}.tflite")
    stored = read_unknown_rule(model)
    assert stored is not None and stored.name == tensor and stored.size == 1024
    assert UnknownRule.from_dict(stored.rule) == rule
    assert unknown_check(model).rule == rule
    assert read_unknown_rule(ModelFile.from_bytes(write_head(base, _layer(kind, X, y)))) is None


@pytest.mark.parametrize("kind", ["imprint", "softmax"])
def test_the_file_graph_is_unchanged_so_stock_readers_get_the_plain_scores(taught, images_dir, kind):
    base, paths, X, y, rule = taught
    with_rule = write_head(base, _layer(kind, X, y, rule))
    without = write_head(base, _layer(kind, X, y))
    outputs = []
    for data in (with_rule, without):
        interpreter = litert.Interpreter(model_content=data)
        interpreter.allocate_tensors()
        assert len(interpreter.get_output_details()) == 1
        image = np.asarray(Image.open(images_dir / "cat.bmp").convert("RGB").resize((224, 224)))
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    assert np.array_equal(outputs[0], outputs[1])
    assert read_metadata(ModelFile.from_bytes(with_rule).tree, UNKNOWN_METADATA_NAME) is not None


def test_pycoral_adapters_see_pycorals_behaviour_on_a_model_with_a_rule(taught, images_dir, tmp_path):
    base, _, X, y, rule = taught
    found = []
    for name, layer in (("rule", _layer("imprint", X, y, rule)), ("plain", _layer("imprint", X, y))):
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(write_head(base, layer))
        interpreter = edgetpu.make_interpreter(str(path))
        interpreter.allocate_tensors()
        common.set_input(interpreter, Image.open(images_dir / "cat.bmp").convert("RGB").resize(common.input_size(interpreter)))
        interpreter.invoke()
        found.append((classify.num_classes(interpreter), classify.get_classes(interpreter, top_k=3)))
    assert found[0] == found[1] and found[0][0] == 3


def test_a_rule_is_dropped_when_a_model_is_written_again_without_one(taught):
    base, _, X, y, rule = taught
    imprinted = ModelFile.from_bytes(write_head(base, _layer("imprint", X, y, rule)))
    assert imprinted.kind is ModelKind.IMPRINTING and read_unknown_rule(imprinted) is not None
    again = ModelFile.from_bytes(write_head(imprinted, ImprintingHead().fit(X[:12], y[:12]).export()))  # other classes now
    assert read_unknown_rule(again) is None


def test_lastlayers_copy_outputs_the_scores_and_the_embedding_the_rule_reads(taught, images_dir):
    base, paths, X, y, rule = taught
    model = ModelFile.from_bytes(write_head(base, _layer("imprint", X, y, rule)), "imprinted.tflite")
    check = unknown_check(model)
    plain = Interpreter(model)
    joined = Interpreter(model, extra_outputs=check.extra_outputs)
    assert joined.output_sizes == [3, 1024] and joined.output_size == 1027 and plain.output_size == 3
    assert joined.model is model and joined.cache_key != plain.cache_key
    vector = joined.run_file(images_dir / "cat.bmp")
    scores, embedding = check.split(vector)
    assert np.array_equal(scores[0], plain.run_file(images_dir / "cat.bmp"))
    assert np.array_equal(embedding[0], Interpreter(base).run_file(images_dir / "cat.bmp"))
    assert np.array_equal(joined.output(0), scores[0]) and np.array_equal(joined.output(1), embedding[0])
    batch = extract_embeddings(joined, paths[:6], progress=False, workers=2)  # clones keep the extra output
    assert batch.shape == (6, 1027)
    np.testing.assert_array_equal(batch[:, 3:], X[:6])
    assert np.array_equal(joined.clone().run_file(paths[0]), batch[0])


def test_expose_tensors_leaves_the_model_as_it_was(taught):
    base, *_ = taught
    copy = expose_tensors(base, [0])
    assert len(copy.tree.subgraphs[0].outputs) == 2 and len(base.tree.subgraphs[0].outputs) == 1
    assert copy.name == base.name and copy.data != base.data


def _with_entry(model: ModelFile, text: str) -> ModelFile:
    tree = model.copy_tree()
    write_metadata(tree, UNKNOWN_METADATA_NAME, text.encode())
    return ModelFile.from_tree(tree, "damaged.tflite")


def test_a_damaged_or_mismatched_rule_is_an_error_naming_the_model(taught):
    base, _, X, y, rule = taught
    model = ModelFile.from_bytes(write_head(base, _layer("imprint", X, y, rule)))
    entry = json.loads(read_metadata(model.tree, UNKNOWN_METADATA_NAME))
    cases = {
        "not json": "{",
        "wrong tensor": json.dumps({**entry, "tensor": "no/such/tensor", "index": 10_000}),
        "rule damaged": json.dumps({**entry, "rule": {**entry["rule"], "format": "x"}}),
        "other classes": json.dumps({**entry, "rule": UnknownRule.fit(np.concatenate([X, X[:2]]), np.r_[y, 3, 3]).to_dict()}),
    }
    for case, text in cases.items():
        with pytest.raises(ModelError, match="damaged.tflite") as raised:
            unknown_check(_with_entry(model, text))
        assert "unknown" in str(raised.value), case
    assert unknown_check(_with_entry(model, "{"), enabled=False) is None  # turned off: never read


def test_a_threshold_for_a_model_without_a_rule_is_an_error(taught):
    base, _, X, y, _ = taught
    model = ModelFile.from_bytes(write_head(base, _layer("imprint", X, y)), "plain.tflite")
    assert unknown_check(model) is None
    with pytest.raises(ModelError, match="plain.tflite carries no unknown rule"):
        unknown_check(model, threshold=0.5)
