"""lastlayer.pycoral.learn.backprop.softmax_regression: PyCoral's SoftmaxRegression surface."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.model.file import ModelFile
from lastlayer.model.io import model_to_bytes
from lastlayer.model.view import inspect_model
from lastlayer.pycoral.adapters import classify, common
from lastlayer.pycoral.learn.backprop.softmax_regression import SoftmaxRegression
from lastlayer.pycoral.utils.edgetpu import make_interpreter

from conftest import EXTRACTOR, EXTRACTOR_EDGETPU
from graphs import float_extractor


def blobs(n_per_class=40, classes=3, dim=8, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.abs(rng.normal(size=(classes, dim))) * 3
    y = np.repeat(np.arange(classes), n_per_class)
    return np.abs(centers[y] + spread * rng.normal(size=(len(y), dim))).astype(np.float32), y


def data_of(X, y):
    return {"data_train": X, "labels_train": y, "data_val": X[::2], "labels_val": y[::2]}


def test_constructor_draws_weights_like_pycoral():
    with pytest.raises(TypeError):
        SoftmaxRegression()
    with pytest.raises(TypeError):
        SoftmaxRegression(8, None)
    model = SoftmaxRegression(2000, 3, weight_scale=0.05)
    assert model.model.W_.shape == (2000, 3) and np.std(model.model.W_) == pytest.approx(0.05, rel=0.05)
    assert model.output_type == "uint8"
    np.random.seed(4)
    first = SoftmaxRegression(8, 3).model.W_
    np.random.seed(4)
    np.testing.assert_array_equal(SoftmaxRegression(8, 3).model.W_, first)  # np.random.seed makes runs reproducible


def test_train_with_sgd_continues_and_learns(capsys):
    X, y = blobs()
    model = SoftmaxRegression(8, 3, seed=1)
    before = model.get_accuracy(X, y)
    model.train_with_sgd(data_of(X, y), num_iter=20, learning_rate=0.01, batch_size=20, print_every=10)
    assert model.model.n_iter_ == 20
    model.train_with_sgd(data_of(X, y), num_iter=280, learning_rate=0.01, batch_size=20, print_every=-1)
    assert model.model.n_iter_ == 300  # continued, not restarted
    out = capsys.readouterr().out
    assert out.count("train_acc") == 2 and "val_acc" in out
    accuracy = model.get_accuracy(X, y)
    assert isinstance(accuracy, float) and accuracy == 1.0 and before < 1.0
    model.train_with_sgd({"data_train": X.astype(np.float64), "labels_train": list(y)}, 5, 0.01, print_every=0)


def test_bad_data_raises_runtime_errors():
    X, y = blobs()
    model = SoftmaxRegression(8, 3)
    with pytest.raises(RuntimeError, match="class id 5 but the model has 3 classes"):
        model.train_with_sgd(data_of(X, np.where(y == 2, 5, y)), 10, 0.01)
    with pytest.raises(RuntimeError, match="have 8 features but the model expects 16"):
        SoftmaxRegression(16, 3).train_with_sgd(data_of(X, y), 10, 0.01)
    with pytest.raises(RuntimeError, match="dequantize"):
        model.train_with_sgd(data_of(X.astype(np.uint8), y), 10, 0.01)
    with pytest.raises(KeyError):
        model.train_with_sgd({"labels_train": y}, 10, 0.01)


def test_run_inference_gives_uint8_scores_until_told_otherwise():
    X, y = blobs(spread=1.5)
    model = SoftmaxRegression(8, 3, seed=0)
    model.train_with_sgd(data_of(X, y), 200, 0.01, print_every=0)
    scores = model.run_inference(X)
    exact = model.model.predict_proba(X)
    assert scores.shape == (120, 3) and 0 < np.abs(scores - exact).max() < 0.1
    np.testing.assert_array_equal(scores, model.model.saved_scores(X, "uint8"))
    model.output_type = "float32"
    np.testing.assert_array_equal(model.run_inference(X), exact)


def _saved_scores(model_bytes, images):
    interpreter = make_interpreter(model_bytes)
    interpreter.allocate_tensors()
    result = []
    for pixels in images:
        common.set_input(interpreter, pixels)
        interpreter.invoke()
        result.append(classify.get_scores(interpreter))
    return np.stack(result)


@pytest.fixture(scope="module")
def flower_embeddings(models_dir, datasets_dir):
    from PIL import Image

    extractor = make_interpreter(str(models_dir / EXTRACTOR))
    extractor.allocate_tensors()
    images, labels = [], []
    for class_id, name in enumerate(("daisy", "roses", "sunflowers")):
        for path in sorted((datasets_dir / "flowers" / name).iterdir())[:12]:
            images.append(np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)))
            labels.append(class_id)
    return images, _saved_scores(str(models_dir / EXTRACTOR), images).astype(np.float32), np.array(labels)


def test_serialize_model_libcoral_layout_and_saved_scores(flower_embeddings, model_file):
    images, X, y = flower_embeddings
    model = SoftmaxRegression(1024, 3, weight_scale=5e-2, seed=0)
    model.train_with_sgd({"data_train": X, "labels_train": y}, 300, 0.01, batch_size=16, print_every=0)
    before = model.output_type
    model_bytes = model.serialize_model(str(model_file(EXTRACTOR)))
    assert model.output_type == before == "uint8"  # serialize_model does not change what the learner computes
    saved = _saved_scores(model_bytes, images)
    assert np.abs(saved - model.run_inference(X)).max() <= 2 / 256
    assert np.mean(saved.argmax(1) == y) >= 0.9
    view = inspect_model(model_bytes).main
    assert [op.name for op in view.operators[-2:]] == ["FULLY_CONNECTED", "SOFTMAX"] and len(view.operators) == 31
    tensors = {t.name: t for t in view.tensors}
    weights, bias, out = tensors["Appended/FC/Weights"], tensors["Appended/FC/Bias"], view.tensors[view.outputs[0]]
    assert weights.dtype == "UINT8" and weights.shape == [3, 1024] and bias.dtype == "INT32" and bias.shape == [3]
    assert bias.quantization.scale[0] == pytest.approx(weights.quantization.scale[0] * 0.023528477, rel=1e-5)
    assert bias.quantization.zero_point == [0]
    assert out.dtype == "UINT8" and out.shape == [1, 3] and out.quantization.scale == [1 / 256] and out.quantization.zero_point == [0]


def test_serialize_model_errors_and_edgetpu_extractor(model_file, tmp_path):
    X, y = blobs(dim=1024)
    model = SoftmaxRegression(1024, 3, seed=0)
    model.train_with_sgd(data_of(X, y), 20, 0.01, print_every=0)
    with pytest.raises(ValueError, match="^Failed to open file: .*nothing.tflite"):
        model.serialize_model(str(tmp_path / "nothing.tflite"))
    with pytest.raises(ValueError, match="outputs 1024 features but the trained layer expects 8"):
        small = SoftmaxRegression(8, 3, seed=0)
        small.train_with_sgd(data_of(*blobs()), 5, 0.01, print_every=0)
        small.serialize_model(str(model_file(EXTRACTOR)))
    names = [op.name for op in inspect_model(model.serialize_model(str(model_file(EXTRACTOR_EDGETPU)))).main.operators]
    assert names[0] == "edgetpu-custom-op" and names[-2:] == ["FULLY_CONNECTED", "SOFTMAX"]


def test_float_extractor_warns_that_output_type_should_follow():
    extractor = model_to_bytes(float_extractor(features=8))
    X, y = blobs()
    model = SoftmaxRegression(8, 3, seed=0)
    model.train_with_sgd(data_of(X, y), 50, 0.01, print_every=0)
    with pytest.warns(UserWarning, match="set output_type = 'float32'"):
        model_bytes = model.serialize_model(extractor, labels=["a", "b", "c"])
    assert model.output_type == "uint8"
    model.output_type = "float32"
    assert ModelFile.from_bytes(model_bytes).labels == {0: "a", 1: "b", 2: "c"}
    interpreter = make_interpreter(model_bytes)
    interpreter.allocate_tensors()
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
