"""TunedSoftmaxRegression, the NumPy L-BFGS under it, and the BLAS thread limit."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.errors import NotFittedError, TrainingError
from lastlayer.layer import DenseLayer
from lastlayer.learn import threads
from lastlayer.learn.optimize import lbfgs
from lastlayer.learn.tuned import TunedSoftmaxRegression, _objective, fit_lbfgs, row_space, stratified_folds


def blobs(n_per_class=30, classes=4, dim=20, spread=1.0, seed=0, counts=None):
    rng = np.random.default_rng(seed)
    counts = counts or [n_per_class] * classes
    centers = 2.0 * rng.normal(size=(len(counts), dim))
    y = np.repeat(np.arange(len(counts)), counts)
    return (centers[y] + spread * rng.normal(size=(len(y), dim))).astype(np.float32), y


def test_lbfgs_minimises_a_quadratic_exactly():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(30, 30))
    H, c = A @ A.T + np.eye(30), rng.normal(size=30)
    result = lbfgs(lambda x: (0.5 * x @ H @ x - c @ x, H @ x - c), np.zeros(30), tol=1e-6, max_iter=1000)
    assert result.converged and 0 < result.n_iter < 200
    np.testing.assert_allclose(result.x, np.linalg.solve(H, c), atol=1e-5)
    capped = lbfgs(lambda x: (0.5 * x @ H @ x - c @ x, H @ x - c), np.zeros(30), tol=1e-6, max_iter=3)
    assert capped.n_iter == 3 and not capped.converged and capped.fun < 0


def test_fit_lbfgs_matches_scipy_on_softmax_regression():
    optimize = pytest.importorskip("scipy.optimize")
    X, y = blobs(spread=3.0)
    theta, iterations = fit_lbfgs(X, y, 4, 0.01, tol=1e-7)
    reference = optimize.minimize(_objective, np.zeros_like(theta), args=(X, y, None, 0.01, (20, 4)), jac=True, method="L-BFGS-B",
                                  options={"gtol": 1e-9, "maxiter": 5000})
    assert 0 < iterations < 500
    assert _objective(theta, X, y, None, 0.01, (20, 4))[0] == pytest.approx(reference.fun, abs=1e-7)
    np.testing.assert_allclose(theta, reference.x, atol=5e-3)  # the products are float32, as the embeddings


def test_row_space_fit_is_the_full_fit():
    X, y = blobs(n_per_class=5, classes=3, dim=40, spread=3.0)
    Z, Q = row_space(X)
    assert Z.shape == (15, 15) and Q.shape == (40, 15)
    np.testing.assert_allclose(Z @ Q.T, X, atol=1e-4)
    reduced, _ = fit_lbfgs(Z, y, 3, 0.05, tol=1e-8)
    full, _ = fit_lbfgs(X, y, 3, 0.05, tol=1e-8)
    W = Q @ reduced[:45].reshape(15, 3)
    np.testing.assert_allclose(W, full[:120].reshape(40, 3), atol=2e-3)
    np.testing.assert_allclose(reduced[45:], full[120:], atol=2e-3)
    assert row_space(X[:, :10])[1] is None  # more rows than features: nothing to reduce


def test_stratified_folds_spread_every_class():
    y = np.repeat([0, 1, 2], [10, 5, 7])
    parts = stratified_folds(y, 5, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(22))
    for part in parts:
        assert np.bincount(y[part], minlength=3)[0] == 2 and np.bincount(y[part], minlength=3)[1] == 1


def test_tuned_chooses_strong_reg_for_noisy_data_and_weak_for_clean():
    noisy, noisy_y = blobs(n_per_class=15, dim=60, spread=6.0, seed=1)
    clean, clean_y = blobs(n_per_class=15, dim=60, spread=0.3, seed=1)
    on_noisy = TunedSoftmaxRegression().fit(noisy, noisy_y)
    on_clean = TunedSoftmaxRegression().fit(clean, clean_y)
    assert on_noisy.reg_ > on_clean.reg_
    assert on_clean.score(clean, clean_y) == 1.0 and on_clean.cv_accuracy_ == 1.0
    assert set(on_noisy.cv_scores_) <= set(float(r) for r in np.logspace(0, -6, 13)) and on_noisy.reg_ in on_noisy.cv_scores_
    assert min(on_noisy.cv_scores_.values()) == on_noisy.cv_scores_[on_noisy.reg_]  # log-loss: lowest wins
    assert on_noisy.n_fits_ == 5 * len(on_noisy.cv_scores_) + 1


def test_tuned_matches_logistic_regression_with_the_same_strength():
    sklearn = pytest.importorskip("sklearn.linear_model")
    X, y = blobs(n_per_class=25, dim=30, spread=3.0, seed=2)
    ours = TunedSoftmaxRegression(regs=[0.02], tol=1e-8).fit(X, y)
    theirs = sklearn.LogisticRegression(C=1.0 / (0.02 * len(X)), tol=1e-10, max_iter=5000).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-3)
    assert ours.reg_ == 0.02 and ours.cv_scores_ == {} and ours.n_fits_ == 1


def test_tuned_follows_scikit_learn_conventions():
    X, y = blobs()
    model = TunedSoftmaxRegression(cv=3, seed=1)
    assert model.get_params()["cv"] == 3 and model.W_ is None
    with pytest.raises(NotFittedError):
        model.predict(X)
    model.fit(X[:60], y[:60] % 2)
    model.fit(X, y)  # starts over: 4 classes now
    proba = model.predict_proba(X)
    assert proba.dtype.kind == "f" and proba.shape == (120, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert model.W_.dtype == np.float32 and model.W_.shape == (20, 4) and model.n_iter_ >= 0 and model.n_fits_ > 5
    layer = model.export(["a", "b", "c", "d"])
    assert isinstance(layer, DenseLayer) and layer.weights.shape == (4, 20) and layer.labels == ["a", "b", "c", "d"]
    logits = model.decision_function(X)
    assert layer.logit_range == (pytest.approx(logits.min(), rel=1e-5), pytest.approx(logits.max(), rel=1e-5))
    saved = model.saved_scores(X, "uint8")
    assert np.abs(saved - proba).max() < 0.05 and np.mean(saved.argmax(1) == proba.argmax(1)) > 0.97


def test_tuned_with_one_example_per_class_uses_the_fallback():
    X, y = blobs(n_per_class=1, classes=3)
    model = TunedSoftmaxRegression().fit(X, y)
    assert model.reg_ == pytest.approx(1 / 3) and model.cv_accuracy_ is None and model.n_fits_ == 1
    assert np.array_equal(model.predict(X), y)
    assert TunedSoftmaxRegression(fallback_reg=0.5).fit(X, y).reg_ == 0.5


def test_tuned_balanced_class_weight_helps_the_small_class():
    X, y = blobs(classes=2, dim=10, spread=6.0, seed=3, counts=[200, 12])
    plain = TunedSoftmaxRegression(regs=[0.3]).fit(X, y)
    balanced = TunedSoftmaxRegression(regs=[0.3], class_weight="balanced").fit(X, y)
    assert np.mean(balanced.predict(X[y == 1]) == 1) > np.mean(plain.predict(X[y == 1]) == 1) + 0.2


def test_tuned_rejects_bad_input_with_the_fix():
    X, y = blobs()
    with pytest.raises(TrainingError, match="scoring"):
        TunedSoftmaxRegression(scoring="f1").fit(X, y)
    with pytest.raises(TrainingError, match="regs"):
        TunedSoftmaxRegression(regs=[-1.0]).fit(X, y)
    with pytest.raises(TrainingError, match="at least 2 classes"):
        TunedSoftmaxRegression().fit(X, np.zeros(len(X), int))
    with pytest.raises(TrainingError, match="quantized"):
        TunedSoftmaxRegression().fit(X.astype(np.uint8), y)


def test_blas_threads_limits_to_one_for_small_products_only():
    assert threads.threads_for(1024 * 1024 * 16) == 1
    assert threads.threads_for(threads.MULTITHREAD_MIN_WORK) == threads.max_threads
    import numpy  # noqa: F401  (BLAS loaded)
    controller = threads._controller()
    with threads.blas_threads(1000) as applied:
        assert applied == 1
        assert all(info["num_threads"] == 1 for info in controller.info() if info["user_api"] == "blas")
    with threads.blas_threads(threads.MULTITHREAD_MIN_WORK * 2) as applied:
        assert applied is None
