"""write_head / read_imprinting_layer / extractor_model with the learners, on the shared models."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.errors import ModelError
from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.learn.softmax import SoftmaxRegression
from lastlayer.model import imprinting as structure
from lastlayer.model.export import cosine_class_rows, extractor_model, output_type_of, read_imprinting_layer, write_head
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.names import as_text
from lastlayer.model.view import inspect_model
from lastlayer.quantization import quantization_params, quantize
from lastlayer.runtime import Interpreter

from conftest import CLASSIFIER_V2, EXTRACTOR
from graphs import float_extractor

CDH = ("cat", "dog", "hotdog")


@pytest.mark.parametrize(
    ("low", "high", "scale", "zero"),
    [(-0.3, 0.5, 0.0031372549, 96), (-1, 1, 0.0078431377, 127), (0, 6, 0.0235294122, 0),
     (-5, 0, 0.0196078438, 255), (-2.7, 11.3, 0.0549019612, 49)],
)
def test_quantization_params_match_libcoral(low, high, scale, zero):
    s, z = quantization_params(low, high)
    assert s == pytest.approx(scale, rel=1e-6) and z == zero


def test_quantize_rounds_half_away_from_zero():
    assert quantize(np.array([0.5, 1.5, -0.5, -1.5, 300, -300]), 1.0, 0, np.int32).tolist() == [1, 2, -1, -2, 300, -300]


def _kernel(model: ModelFile) -> np.ndarray:
    info = structure.validate(model.tree)
    return quantize(structure.class_rows(model.tree, info), info.kernel_scale, info.kernel_zero_point)


def test_imprinting_head_written_with_pycoral_edits_and_metadata():
    head = ImprintingHead(scale=10.0, normalize_examples=False)
    head.add(np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]), 0)
    head.add(np.array([0.0, 0.0, -0.6, 0.8]), 1)
    model = ModelFile.from_bytes(write_head(ModelFile.from_tree(float_extractor(features=4)), head.export(), output_type="uint8"))
    assert model.kind is ModelKind.IMPRINTING
    assert _kernel(model).tolist() == [[219, 219, 128, 128], [128, 128, 51, 230]]
    assert as_text(model.tree.description) == "0 1.414214\n1 1.000000\n"
    view = inspect_model(model.tree).main
    assert [op.name for op in view.operators][-6:] == ["L2_NORMALIZATION", "QUANTIZE", "CONV_2D", "MUL", "RESHAPE", "SOFTMAX"]
    out = view.tensors[view.outputs[0]]
    assert out.shape == [1, 2] and out.quantization.scale == [1 / 256]
    conv_out = view.tensors[view.operators[-4].outputs[0]]
    assert conv_out.quantization.scale == [1 / 128] and conv_out.quantization.zero_point == [128]
    mul_out = view.tensors[view.operators[-3].outputs[0]]
    assert mul_out.quantization.scale[0] == pytest.approx(10 / 128) and mul_out.quantization.zero_point == [128]
    layer = read_imprinting_layer(model)
    assert layer.scale == pytest.approx(10.0, rel=1e-6) and layer.state["norms"] == {"0": pytest.approx(np.sqrt(2)), "1": pytest.approx(1.0)}


def test_resume_from_a_written_model_equals_training_at_once():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 4)), rng.normal(size=(2, 4)), rng.normal(size=(4, 4))
    base = ModelFile.from_tree(float_extractor(features=4))
    together = ImprintingHead(scale=10.0)
    together.add(a, 0)
    together.add(b, 1)
    together.add(c, 1)
    first = ImprintingHead(scale=10.0)
    first.add(a, 0)
    first.add(b, 1)
    saved = ModelFile.from_bytes(write_head(base, first.export()))
    resumed = ImprintingHead.from_layer(read_imprinting_layer(saved))
    assert resumed.num_classes == 2 and resumed.shots(1) == 2 and resumed.is_trainable(0)
    resumed.add(c, 1)
    once = ModelFile.from_bytes(write_head(base, together.export()))
    again = ModelFile.from_bytes(write_head(saved, resumed.export()))
    assert np.abs(_kernel(again).astype(int) - _kernel(once).astype(int)).max() <= 1
    np.testing.assert_allclose(resumed.rows(), together.rows(), atol=2 / 128)


def _l2_extractor(base: ModelFile) -> Interpreter:
    """The L2-normalised embedding extractor of ``base`` once Coral's structure is built on it."""
    placeholder = ImprintingHead()
    placeholder.add(np.ones(Interpreter(extractor_model(base)).output_size), 0)
    return Interpreter(extractor_model(ModelFile.from_bytes(write_head(base, placeholder.export()))))


def _imprint_cdh(base: ModelFile, images_dir, head: ImprintingHead) -> Interpreter:
    extractor = _l2_extractor(base)
    for class_id, name in enumerate(CDH):
        for path in sorted((images_dir / "imprinting").glob(f"{name}_train_*.bmp")):
            head.add(extractor.run_file(path), class_id, name)
    return extractor


@pytest.mark.parametrize("base", [EXTRACTOR, CLASSIFIER_V2, "tf2_mobilenet_v2_1.0_224_ptq.tflite"])
def test_cat_dog_hotdog_saved_scores_match_in_memory(model_file, images_dir, base):
    model = ModelFile.read(model_file(base))
    head = ImprintingHead()
    extractor = _imprint_cdh(model, images_dir, head)
    saved = ModelFile.from_bytes(write_head(model, head.export()))
    assert saved.labels == dict(enumerate(CDH))
    classifier = Interpreter(saved)
    for class_id, name in enumerate(CDH):
        path = images_dir / "imprinting" / f"{name}_test_0.bmp"
        scores = classifier.run_file(path)
        memory = head.saved_scores(extractor.run_file(path)[np.newaxis])[0]
        assert scores.argmax() == class_id
        assert np.abs(scores - memory).max() <= 2 / 256


def test_finetune_keeps_structure_and_separates_the_test_images_better(model_file, images_dir):
    model = ModelFile.read(model_file(EXTRACTOR))
    head = ImprintingHead(scale=10.0)
    extractor = _imprint_cdh(model, images_dir, head)
    test = np.stack([extractor.run_file(images_dir / "imprinting" / f"{name}_test_0.bmp") for name in CDH])
    before_rows, before_margin = head.rows(), np.diag(head.predict_proba(test)).min()
    losses = head.finetune(steps=300)
    assert np.all(np.diff(losses) <= 1e-9) and losses[-1] < 0.5 * losses[0]
    rows = head.rows()
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    cosines = np.sum(before_rows * rows, axis=1)
    assert cosines.min() > 0.9 and cosines.max() < 0.9999  # the rows moved, but stay near their imprints
    saved = ModelFile.from_bytes(write_head(model, head.export()))
    assert saved.kind is ModelKind.IMPRINTING and read_imprinting_layer(saved).scale == pytest.approx(10.0, rel=1e-6)
    classifier = Interpreter(saved)
    scores = np.stack([classifier.run_file(images_dir / "imprinting" / f"{name}_test_0.bmp") for name in CDH])
    assert scores.argmax(axis=1).tolist() == [0, 1, 2]
    assert np.diag(head.predict_proba(test)).min() > before_margin


def test_keep_classes_of_a_plain_classifier_is_refused_with_the_reason(model_file):
    with pytest.raises(ModelError, match="not a cosine classifier .row norms .*biases up to"):
        cosine_class_rows(ModelFile.read(model_file("mobilenet_v1_0.25_128_quant.tflite")))
    with pytest.raises(ModelError, match="no classes to keep"):
        cosine_class_rows(ModelFile.read(model_file(EXTRACTOR)))


def _flower_embeddings(interpreter: Interpreter, datasets_dir, per_class: int = 12):
    paths, labels = [], []
    for class_id, name in enumerate(("daisy", "roses", "sunflowers")):
        for path in sorted((datasets_dir / "flowers" / name).iterdir())[:per_class]:
            paths.append(path)
            labels.append(class_id)
    return paths, np.stack([interpreter.run_file(p) for p in paths]), np.array(labels)


@pytest.mark.parametrize(("base", "output_type", "saved_type"),
                         [(EXTRACTOR, "uint8", "uint8"), ("tf2_mobilenet_v2_1.0_224_ptq.tflite", "int8", "uint8")])
def test_softmax_head_saved_scores_match_in_memory(model_file, datasets_dir, base, output_type, saved_type):
    model = ModelFile.read(model_file(base))
    assert output_type_of(model) == output_type
    paths, X, y = _flower_embeddings(Interpreter(extractor_model(model)), datasets_dir)
    layer = SoftmaxRegression(momentum=0.9, num_iter=300, batch_size=16, seed=0).fit(X, y)
    saved = ModelFile.from_bytes(write_head(model, layer.export(["daisy", "roses", "sunflowers"])))
    assert saved.labels == {0: "daisy", 1: "roses", 2: "sunflowers"}
    scores = np.stack([Interpreter(saved).run_file(p) for p in paths[::3]])
    assert np.abs(scores - layer.saved_scores(X[::3], output_type)).max() <= 2 / 256
    out = inspect_model(saved.tree).main
    assert out.tensors[out.outputs[0]].dtype == saved_type.upper()  # the base's output type (an int8 head, then QUANTIZE)


def test_softmax_head_on_a_float_extractor_is_float(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(24):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    base = ModelFile.from_tree(float_extractor())
    feed = {"input_mean": 128, "input_std": 128}  # given, so no check of a random graph's embeddings warns
    interpreter = Interpreter(base, **feed)
    X = np.stack([interpreter.run_file(p) for p in paths])
    layer = SoftmaxRegression(num_iter=200, momentum=0.9, seed=0).fit(X, np.arange(24) % 3)
    saved = Interpreter(write_head(base, layer.export()), **feed)
    np.testing.assert_allclose(np.stack([saved.run_file(p) for p in paths]), layer.saved_scores(X, "float32"), atol=1e-5)
    as_uint8 = Interpreter(write_head(base, layer.export(), output_type="uint8"), **feed)  # a QUANTIZE after the float head
    assert as_uint8.output_details[0]["dtype"] == np.uint8
    np.testing.assert_allclose(np.stack([as_uint8.run_file(p) for p in paths]), layer.saved_scores(X, "float32"), atol=1 / 256 + 1e-6)
