from __future__ import annotations

import json

import numpy as np
import pytest

from lastlayer.cli import main
from lastlayer.data import load_dataset, stratified_split
from lastlayer.embeddings import embed_dataset
from lastlayer.errors import ModelError, TrainingError
from lastlayer.learn import SoftmaxRegression
from lastlayer.learn.softmax import loss_and_gradients
from lastlayer.model import inspect_model, load_model, model_to_bytes
from lastlayer.model.labels import embedded_labels
from lastlayer.model.quant import quantization_params, quantize
from lastlayer.model.surgery import cut_at_embedding
from lastlayer.runtime import Interpreter

from conftest import EXTRACTOR, EXTRACTOR_EDGETPU
from graphs import float_extractor


def blobs(n_per_class=40, classes=3, dim=8, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 3
    y = np.repeat(np.arange(classes), n_per_class)
    return (centers[y] + spread * rng.normal(size=(len(y), dim))).astype(np.float32), y


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
    assert quantize(np.array([-1.0, 2.0]), 0.01, 0).tolist() == [0, 200]


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(7, 5)), rng.integers(0, 3, size=7)
    W, b = rng.normal(size=(5, 3)) * 0.5, rng.normal(size=3) * 0.1
    weights = rng.random(7) + 0.5
    _, dW, db = loss_and_gradients(W, b, X, y, reg=0.3, sample_weight=weights)
    h = 1e-6
    for index in np.ndindex(W.shape):
        step = np.zeros_like(W)
        step[index] = h
        numeric = (loss_and_gradients(W + step, b, X, y, 0.3, weights)[0] - loss_and_gradients(W - step, b, X, y, 0.3, weights)[0]) / (2 * h)
        assert dW[index] == pytest.approx(numeric, abs=1e-6)
    for c in range(3):
        step = np.zeros_like(b)
        step[c] = h
        numeric = (loss_and_gradients(W, b + step, X, y, 0.3, weights)[0] - loss_and_gradients(W, b - step, X, y, 0.3, weights)[0]) / (2 * h)
        assert db[c] == pytest.approx(numeric, abs=1e-6)


def test_loss_decreases_and_separable_data_is_learned(capsys):
    X, y = blobs()
    model = SoftmaxRegression(8, 3, seed=1)
    data = {"data_train": X, "labels_train": y, "data_val": X[::2], "labels_val": y[::2]}
    model.train_with_sgd(data, num_iter=300, learning_rate=0.01, batch_size=20, print_every=50)
    losses = [record["loss"] for record in model.history_]
    assert losses[-1] < losses[0] / 5
    assert model.get_accuracy(X, y) == 1.0
    assert "train_acc" in capsys.readouterr().out
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0, rtol=1e-5)


def test_seed_reproducible_and_resume_equals_one_run(tmp_path):
    X, y = blobs(seed=3)
    once = SoftmaxRegression(num_iter=50, batch_size=16, momentum=0.9, seed=7).fit(X, y)
    again = SoftmaxRegression(num_iter=50, batch_size=16, momentum=0.9, seed=7).fit(X, y)
    np.testing.assert_array_equal(once.W_, again.W_)
    first = SoftmaxRegression(num_iter=20, batch_size=16, momentum=0.9, seed=7).fit(X, y)
    first.save(tmp_path / "layer.npz")
    resumed = SoftmaxRegression.load(tmp_path / "layer.npz")
    resumed.num_iter = 30
    resumed.fit(X, y)
    np.testing.assert_allclose(resumed.W_, once.W_, rtol=1e-6, atol=1e-7)
    assert resumed.iterations_ == 50


def test_balanced_class_weight_helps_the_small_class():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (450, 2)), rng.normal(1.2, 1, (50, 2))]).astype(np.float32)
    y = np.array([0] * 450 + [1] * 50)
    plain = SoftmaxRegression(num_iter=400, momentum=0.9, seed=0).fit(X, y)
    balanced = SoftmaxRegression(num_iter=400, momentum=0.9, seed=0, class_weight="balanced").fit(X, y)
    recall = lambda m: np.mean(m.predict(X[y == 1]) == 1)  # noqa: E731
    assert recall(balanced) > recall(plain) + 0.2


def test_early_stopping_keeps_the_best_weights():
    X, y = blobs(n_per_class=30, spread=2.5, dim=20, seed=5)
    Xv, yv = blobs(n_per_class=30, spread=2.5, dim=20, seed=6)
    model = SoftmaxRegression(num_iter=5000, learning_rate=0.05, batch_size=10, seed=0, early_stopping=True, patience=3)
    model.fit(X, y, Xv, yv)
    assert model.iterations_ < 5000
    best = loss_and_gradients(model.W_, model.b_, Xv, yv, 0.0)[0]
    longer = SoftmaxRegression(num_iter=5000, learning_rate=0.05, batch_size=10, seed=0).fit(X, y)
    assert best <= loss_and_gradients(longer.W_, longer.b_, Xv, yv, 0.0)[0]


def test_class_mean_init_is_a_classifier_before_any_step():
    X, y = blobs(seed=9)
    model = SoftmaxRegression(num_iter=0, init="class_means").fit(X, y)
    assert model.get_accuracy(X, y) == 1.0


def test_bad_training_input_is_rejected():
    X, y = blobs()
    with pytest.raises(TrainingError, match="class id 5"):
        SoftmaxRegression(8, 3).fit(X, np.where(y == 2, 5, y))
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(TrainingError, match="NaN"):
        SoftmaxRegression(8, 3).fit(bad, y)
    with pytest.raises(TrainingError, match="at least 2 classes"):
        SoftmaxRegression().fit(X[y == 0], y[y == 0])
    with pytest.raises(TrainingError, match="8 features but the model expects 16"):
        SoftmaxRegression(16, 3).fit(X, y)
    with pytest.raises(TrainingError, match="negative"):
        SoftmaxRegression(8, 3).fit(X, y - 1)
    with pytest.raises(TrainingError, match="not trained"):
        SoftmaxRegression(num_classes=3).predict(X)


@pytest.fixture(scope="module")
def flowers_split(models_dir, datasets_dir):
    interpreter = Interpreter(models_dir / EXTRACTOR)
    embedded = embed_dataset(interpreter, load_dataset(datasets_dir / "flowers"), progress=False, use_cache=False)
    train, val = stratified_split(embedded.y, 0.2, seed=0)
    return embedded, train, val


def _saved_model_scores(model_bytes, paths):
    interpreter = Interpreter(model_bytes)
    return np.stack([interpreter.run_file(p) for p in paths])


def test_saved_uint8_model_reproduces_in_memory_scores(flowers_split, model_file):
    embedded, train, val = flowers_split
    layer = SoftmaxRegression(momentum=0.9, seed=0).fit(embedded.X[train], embedded.y[train])
    model_bytes = layer.serialize_model(model_file(EXTRACTOR), labels=embedded.dataset.classes)
    saved = _saved_model_scores(model_bytes, [embedded.dataset.paths[i] for i in val])
    memory = layer.run_inference(embedded.X[val])
    assert np.mean(saved.argmax(1) == memory.argmax(1)) >= 0.99
    assert np.abs(saved - memory).max() <= 2 / 256
    assert np.mean(saved.argmax(1) == embedded.y[val]) > 0.75
    view = inspect_model(model_bytes)
    assert [op.name for op in view.main.operators[-3:]] == ["RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    out = view.main.tensors[view.main.outputs[0]]
    assert out.dtype == "UINT8" and out.quantization.scale == [1 / 256] and out.quantization.zero_point == [0]
    weights = next(t for t in view.main.tensors if t.name == "Appended/FC/Weights")
    bias = next(t for t in view.main.tensors if t.name == "Appended/FC/Bias")
    assert weights.dtype == "UINT8" and weights.shape == [5, 1024] and bias.dtype == "INT32"
    assert bias.quantization.scale[0] == pytest.approx(weights.quantization.scale[0] * 0.023528477, rel=1e-5)
    assert embedded_labels(load_model(model_bytes)) == dict(enumerate(embedded.dataset.classes))


def test_saved_int8_model_from_a_tf2_extractor(flowers_split, model_file, datasets_dir):
    extractor, point = cut_at_embedding(load_model(model_file("tf2_mobilenet_v2_1.0_224_ptq.tflite")))
    extractor_bytes = model_to_bytes(extractor)
    interpreter = Interpreter(extractor_bytes)
    embedded = embed_dataset(interpreter, load_dataset(datasets_dir / "flowers"), progress=False, use_cache=False)
    train, val = stratified_split(embedded.y, 0.2, seed=0)
    layer = SoftmaxRegression(momentum=0.9, seed=0).fit(embedded.X[train], embedded.y[train])
    model_bytes = layer.serialize_model(extractor_bytes)
    assert layer.output_type == "int8"
    saved = _saved_model_scores(model_bytes, [embedded.dataset.paths[i] for i in val])
    memory = layer.run_inference(embedded.X[val])
    assert np.mean(saved.argmax(1) == memory.argmax(1)) >= 0.99 and np.abs(saved - memory).max() <= 2 / 256
    out = inspect_model(model_bytes).main
    assert out.tensors[out.outputs[0]].dtype == "INT8" and out.tensors[out.outputs[0]].quantization.zero_point == [-128]


def test_saved_float_model_from_a_float_extractor(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(24):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    extractor = model_to_bytes(float_extractor())
    interpreter = Interpreter(extractor)
    X = np.stack([interpreter.run_file(p) for p in paths])
    y = np.arange(24) % 3
    layer = SoftmaxRegression(num_iter=200, momentum=0.9, seed=0).fit(X, y)
    saved = _saved_model_scores(layer.serialize_model(extractor), paths)
    assert layer.output_type == "float32"
    np.testing.assert_allclose(saved, layer.run_inference(X), atol=1e-5)


def test_edgetpu_extractor_gets_a_cpu_head_after_the_custom_op(model_file):
    X, y = blobs(dim=1024, seed=2)
    X = np.abs(X)
    layer = SoftmaxRegression(momentum=0.9, seed=0).fit(X, y)
    view = inspect_model(layer.serialize_model(model_file(EXTRACTOR_EDGETPU)))
    assert [op.name for op in view.main.operators] == ["edgetpu-custom-op", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    custom_out = view.main.operators[0].outputs[0]
    assert view.main.operators[1].inputs[0] == custom_out and view.main.outputs == view.main.operators[3].outputs


def test_serialize_rejects_wrong_extractors(model_file):
    X, y = blobs(dim=1024)
    layer = SoftmaxRegression(momentum=0.9, seed=0).fit(np.abs(X), y)
    with pytest.raises(ModelError, match="ends in SOFTMAX: it is a classifier"):
        layer.serialize_model(model_file("mobilenet_v2_1.0_224_quant.tflite"))
    small = SoftmaxRegression(seed=0).fit(*blobs(dim=8))
    with pytest.raises(ModelError, match="outputs 1024 features but the trained layer expects 8"):
        small.serialize_model(model_file(EXTRACTOR))


def test_cli_train_writes_model_labels_report_and_reuses_embeddings(capsys, tmp_path, datasets_dir, images_dir):
    data = tmp_path / "data"
    for name in ("daisy", "sunflowers", "roses"):
        (data / name).mkdir(parents=True)
        for src in sorted((datasets_dir / "flowers" / name).iterdir())[:12]:
            (data / name / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "out"
    argv = ["train", str(data), "-o", str(out), "--extractor", EXTRACTOR, "--epochs", "40", "--val-ratio", "0.25", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    assert (out / "labels.txt").read_text() == "0 daisy\n1 roses\n2 sunflowers\n"
    assert report["train_images"] == 27 and report["val_images"] == 9 and report["embeddings_from_cache"] == 0
    assert set(report["val"]["per_class"]) == {"daisy", "roses", "sunflowers"}
    assert summary["val_accuracy"] == report["val_accuracy"] >= 0.66
    assert main(argv) == 0
    capsys.readouterr()
    assert json.loads((out / "report.json").read_text())["embeddings_from_cache"] == 36
    assert main(["classify", "-m", str(out / "model.tflite"), str(images_dir / "sunflower.bmp"), "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["classes"][0]["label"] == "sunflowers"


def test_cli_train_rejects_a_classifier_as_extractor(capsys, tmp_path, datasets_dir):
    code = main(["train", str(datasets_dir / "flowers"), "-o", str(tmp_path / "o"), "--extractor", "mobilenet_v2_1.0_224_quant.tflite"])
    assert code == 1 and "is a classifier" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model.tflite").exists()
