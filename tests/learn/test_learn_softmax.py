"""SoftmaxRegression: pure NumPy, no model files."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.errors import NotFittedError, TrainingError
from lastlayer.learn.softmax import SoftmaxRegression, loss_and_gradients


def blobs(n_per_class: int = 40, classes: int = 3, dim: int = 8, spread: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 3
    y = np.repeat(np.arange(classes), n_per_class)
    return (centers[y] + spread * rng.normal(size=(len(y), dim))).astype(np.float32), y


def test_init_stores_parameters_only_and_get_params_round_trips():
    model = SoftmaxRegression(learning_rate=0.05, num_iter=7, momentum=0.9, class_weight="balanced", seed=3)
    params = model.get_params()
    assert params["learning_rate"] == 0.05 and params["num_iter"] == 7 and params["seed"] == 3
    assert model.W_ is None and not hasattr(model, "n_iter_")
    assert SoftmaxRegression(**params).get_params() == params


def test_fit_starts_over():
    X, y = blobs(seed=3)
    other, other_y = blobs(seed=8)
    once = SoftmaxRegression(num_iter=50, batch_size=16, seed=7).fit(X, y)
    again = SoftmaxRegression(num_iter=50, batch_size=16, seed=7).fit(X, y)
    np.testing.assert_array_equal(once.W_, again.W_)
    refit = SoftmaxRegression(num_iter=50, batch_size=16, seed=7).fit(other, other_y).fit(X, y)
    np.testing.assert_array_equal(refit.W_, once.W_)
    assert refit.n_iter_ == 50


def test_partial_fit_continues():
    X, y = blobs()
    model = SoftmaxRegression(num_iter=30, batch_size=16, seed=0).fit(X, y)
    before = model.W_.copy()
    model.partial_fit(X, y, num_iter=20)
    assert model.n_iter_ == 50 and not np.array_equal(model.W_, before)
    fresh = SoftmaxRegression(num_iter=10, seed=0).partial_fit(X, y)
    assert fresh.n_iter_ == 10


def test_initialize_draws_weight_scale_weights_without_training():
    model = SoftmaxRegression(num_classes=4, weight_scale=0.5, seed=0).initialize(1000)
    assert model.W_.shape == (1000, 4) and model.n_iter_ == 0 and not model.b_.any()
    assert np.std(model.W_) == pytest.approx(0.5, rel=0.05)
    with pytest.raises(TrainingError, match="needs num_classes"):
        SoftmaxRegression().initialize(10)


def test_loss_decreases_and_separable_data_is_learned():
    X, y = blobs()
    lines: list[str] = []
    model = SoftmaxRegression(num_iter=300, batch_size=20, seed=1).fit(X, y, X[::2], y[::2], print_every=50, log=lines.append)
    losses = [record["loss"] for record in model.history_]
    assert losses[-1] < losses[0] / 5 and len(lines) == 6 and "val_acc" in lines[0]
    assert model.score(X, y) == 1.0
    proba = model.predict_proba(X)
    assert proba.dtype.kind == "f"
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_unfitted_model_raises_not_fitted():
    model = SoftmaxRegression(num_classes=3)
    X = np.ones((2, 8), np.float32)
    for call in (lambda: model.predict(X), lambda: model.predict_proba(X), model.export):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call()


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(7, 5)), rng.integers(0, 3, size=7)
    W, b = rng.normal(size=(5, 3)) * 0.5, rng.normal(size=3) * 0.1
    weights = rng.random(7) + 0.5
    _, dW, db = loss_and_gradients(W, b, X, y, reg=0.3, sample_weight=weights)
    h = 1e-6

    def loss(W_, b_):
        return loss_and_gradients(W_, b_, X, y, 0.3, weights)[0]

    for index in np.ndindex(W.shape):
        step = np.zeros_like(W)
        step[index] = h
        assert dW[index] == pytest.approx((loss(W + step, b) - loss(W - step, b)) / (2 * h), abs=1e-6)
    for c in range(3):
        step = np.zeros_like(b)
        step[c] = h
        assert db[c] == pytest.approx((loss(W, b + step) - loss(W, b - step)) / (2 * h), abs=1e-6)


def test_early_stopping_stops_early_and_keeps_the_best_weights():
    X, y = blobs(n_per_class=30, spread=2.5, dim=20, seed=5)
    Xv, yv = blobs(n_per_class=30, spread=2.5, dim=20, seed=6)
    model = SoftmaxRegression(num_iter=5000, learning_rate=0.05, batch_size=10, seed=0, early_stopping=True, patience=3)
    model.fit(X, y, Xv, yv)
    assert model.n_iter_ < 5000 and model.stopped_early_
    best = loss_and_gradients(model.W_, model.b_, Xv, yv, 0.0)[0]
    longer = SoftmaxRegression(num_iter=5000, learning_rate=0.05, batch_size=10, seed=0).fit(X, y)
    assert not longer.stopped_early_ and longer.n_iter_ == 5000
    assert best <= loss_and_gradients(longer.W_, longer.b_, Xv, yv, 0.0)[0]


def test_balanced_class_weight_helps_the_small_class():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (450, 2)), rng.normal(1.2, 1, (50, 2))]).astype(np.float32)
    y = np.array([0] * 450 + [1] * 50)
    plain = SoftmaxRegression(num_iter=400, momentum=0.9, seed=0).fit(X, y)
    balanced = SoftmaxRegression(num_iter=400, momentum=0.9, seed=0, class_weight="balanced").fit(X, y)

    def recall(model: SoftmaxRegression) -> float:
        return float(np.mean(model.predict(X[y == 1]) == 1))

    assert recall(balanced) > recall(plain) + 0.2


def test_checkpoint_then_partial_fit_equals_an_uninterrupted_run(tmp_path):
    X, y = blobs(seed=3)
    once = SoftmaxRegression(num_iter=50, batch_size=16, momentum=0.9, seed=7).fit(X, y)
    first = SoftmaxRegression(num_iter=20, batch_size=16, momentum=0.9, seed=7).fit(X, y)
    first.save(tmp_path / "layer.npz")
    resumed = SoftmaxRegression.load(tmp_path / "layer.npz")
    assert resumed.get_params() == first.get_params() and resumed.n_iter_ == 20
    resumed.partial_fit(X, y, num_iter=30)
    np.testing.assert_array_equal(resumed.W_, once.W_)
    np.testing.assert_array_equal(resumed.b_, once.b_)
    assert resumed.n_iter_ == 50
    (tmp_path / "bad.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot load checkpoint"):
        SoftmaxRegression.load(tmp_path / "bad.npz")


def test_class_mean_init_is_a_classifier_before_any_step():
    X, y = blobs(seed=9)
    assert SoftmaxRegression(num_iter=0, init="class_means").fit(X, y).score(X, y) == 1.0


@pytest.mark.parametrize("output_type", ["uint8", "int8"])
def test_saved_scores_are_within_quantization_error_of_predict_proba(output_type):
    X, y = blobs(spread=1.0)
    model = SoftmaxRegression(num_iter=200, seed=0).fit(X, y)
    saved, exact = model.saved_scores(X, output_type), model.predict_proba(X)
    low, high = model.logit_range_
    assert 0 < np.abs(saved - exact).max() <= 2 * (high - low) / 255
    assert np.mean(saved.argmax(1) == exact.argmax(1)) >= 0.95
    np.testing.assert_array_equal(model.saved_scores(X, "float32"), exact)
    with pytest.raises(TrainingError, match="output_type must be one of"):
        model.saved_scores(X, "int16")


def test_export_hands_plain_arrays():
    X, y = blobs()
    model = SoftmaxRegression(num_iter=20, seed=0).fit(X, y)
    layer = model.export(["a", "b", "c"])
    np.testing.assert_array_equal(layer.weights, model.W_.T)
    assert layer.labels == ["a", "b", "c"] and layer.logit_range == model.logit_range_ and not layer.normalize_input
    with pytest.raises(TrainingError, match="2 labels given for 3 classes"):
        model.export(["a", "b"])


def test_bad_training_input_is_rejected_with_the_fix():
    X, y = blobs()
    with pytest.raises(TrainingError, match="class id 5 but the model has 3 classes"):
        SoftmaxRegression(num_classes=3).fit(X, np.where(y == 2, 5, y))
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(TrainingError, match="NaN"):
        SoftmaxRegression().fit(bad, y)
    with pytest.raises(TrainingError, match="at least 2 classes"):
        SoftmaxRegression().fit(X[y == 0], y[y == 0])
    with pytest.raises(TrainingError, match="negative class id"):
        SoftmaxRegression().fit(X, y - 1)
    with pytest.raises(TrainingError, match="still quantized; dequantize them first"):
        SoftmaxRegression().fit(X.astype(np.uint8), y)
    fitted = SoftmaxRegression(num_iter=5).fit(X, y)
    with pytest.raises(TrainingError, match="have 16 features but the model expects 8"):
        fitted.predict(np.ones((2, 16), np.float32))
    with pytest.raises(TrainingError, match="init must be"):
        SoftmaxRegression(init="zeros").fit(X, y)
