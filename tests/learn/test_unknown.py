"""The unknown rule (lastlayer.learn.unknown): pure NumPy, no model files."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from lastlayer.errors import TrainingError
from lastlayer.learn.imprinting import ImprintingHead, unit_rows
from lastlayer.learn.unknown import (
    CONFIDENCE,
    TARGET_REJECTION,
    TooFewExamplesError,
    UnknownRule,
    embed_features,
    left_out_similarities,
    tolerance_bound,
)


def clusters(n_per_class: int = 12, classes: int = 3, dim: int = 32, spread: float = 0.35, seed: int = 0):
    """Non-negative embeddings (as a ReLU extractor gives) around ``classes`` random directions, and a far cluster."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(classes + 1, dim)))
    y = np.repeat(np.arange(classes), n_per_class)
    X = np.abs(centres[y] + spread * rng.normal(size=(len(y), dim)))
    far = np.abs(centres[classes] + spread * rng.normal(size=(n_per_class, dim)))
    return X.astype(np.float32), y, far.astype(np.float32)


def sparse_clusters(n_per_class: int = 10, classes: int = 3, dim: int = 60, seed: int = 0):
    """Each class active on its own block of features; ``far`` active on a block no class uses."""
    rng = np.random.default_rng(seed)
    block = dim // (classes + 1)

    def members(index: int, count: int) -> np.ndarray:
        X = 0.05 * rng.random((count, dim))
        X[:, index * block:(index + 1) * block] += 1 + 0.3 * rng.random((count, block))
        return X

    y = np.repeat(np.arange(classes), n_per_class)
    X = np.concatenate([members(c, n_per_class) for c in range(classes)])
    return X.astype(np.float32), y, members(classes, n_per_class).astype(np.float32)


def test_pictures_of_an_untaught_kind_are_unknown_and_taught_ones_known():
    X, y, far = sparse_clusters()
    rule = UnknownRule.fit(X, y)
    assert not rule.accepts(far).any()
    assert rule.accepts(X).mean() >= 0.9
    assert np.all(rule.similarity(far) < rule.threshold)


@pytest.mark.parametrize("seed", range(5))
def test_centres_with_power_one_are_the_imprinted_rows(seed):
    X, y, _ = clusters(seed=seed)
    rule = UnknownRule.fit(X, y, power=1.0)
    rows = ImprintingHead().fit(X, y).rows()
    np.testing.assert_allclose(rule.centres.astype(np.float32), rows, atol=1e-3)  # float16 storage
    np.testing.assert_allclose(rule.similarity(X), (unit_rows(X) @ rule.centres.astype(np.float64).T).max(axis=1), atol=1e-9)


def test_power_transforms_each_embedding_before_normalising():
    X = np.array([[1.0, 2.0, 0.0], [-3.0, 0.0, 4.0]])
    T = embed_features(X, 2.0)
    np.testing.assert_allclose(T, unit_rows(np.array([[1.0, 4.0, 0.0], [-9.0, 0.0, 16.0]])))
    assert np.array_equal(embed_features(np.zeros((1, 3))), np.zeros((1, 3)))


@pytest.mark.parametrize("seed", range(3))
def test_left_out_similarities_equal_refitting_without_each_example(seed):
    X, y, _ = clusters(n_per_class=4, seed=seed)
    y[-1] = 3  # a class with a single example has no left-out centre
    T = embed_features(X)
    found = left_out_similarities(T, y, 4)
    for i in range(len(X)):
        keep = np.arange(len(X)) != i
        sums = np.zeros((4, T.shape[1]))
        np.add.at(sums, y[keep], T[keep])
        norms = np.linalg.norm(sums, axis=1)
        if norms[y[i]] == 0:
            assert math.isnan(found.own[i])
            continue
        cosines = np.where(norms > 0, T[i] @ sums.T / np.where(norms > 0, norms, 1), -np.inf)
        assert found.own[i] == pytest.approx(cosines[y[i]], abs=1e-9)
        assert found.other[i] == pytest.approx(np.delete(cosines, y[i]).max(), abs=1e-9)


def test_threshold_is_the_tolerance_bound_of_correctly_left_out_examples():
    X, y, _ = clusters(n_per_class=15, spread=2.0)  # overlapping classes: some examples are wrong when left out
    rule = UnknownRule.fit(X, y)
    left = left_out_similarities(embed_features(X), y, 3)
    assert 0 < left.usable.sum() < len(X)
    assert rule.threshold == pytest.approx(tolerance_bound(left.own[left.usable], TARGET_REJECTION, CONFIDENCE))
    assert rule.threshold != pytest.approx(tolerance_bound(left.own, TARGET_REJECTION, CONFIDENCE))
    assert rule.derived_threshold == rule.threshold
    assert [c.examples for c in rule.classes] == [15, 15, 15]
    assert rule.classes[0].mean == pytest.approx(np.mean(left.own[(y == 0) & left.usable]), abs=1e-6)
    assert sum(len(values) for values in rule.left_out) == left.usable.sum()


def test_tolerance_bound_follows_its_formula_and_tends_to_the_quantile():
    z = NormalDist().inv_cdf
    for n in (5, 10, 40):
        values = np.linspace(-1, 1, n)
        values = (values - values.mean()) / values.std(ddof=1)  # mean 0, sample sd 1
        k = z(0.95) + z(0.9) * math.sqrt(1 / n + z(0.95) ** 2 / (2 * (n - 1)))
        assert tolerance_bound(values, 0.05, 0.9) == pytest.approx(-k)
    bounds = [tolerance_bound(np.random.default_rng(1).normal(size=n), 0.05, 0.9) for n in (10, 100, 10_000)]
    assert bounds[2] == pytest.approx(z(0.05), abs=0.1)  # many values: the plain 5 % quantile of N(0, 1)
    with pytest.raises(TrainingError):
        tolerance_bound(np.array([1.0]), 0.05)


def test_fewer_examples_and_less_confidence_move_the_threshold():
    X, y, _ = clusters(n_per_class=20)
    loose = UnknownRule.fit(X, y, confidence=0.5)
    strict = UnknownRule.fit(X, y, confidence=0.99)
    more = UnknownRule.fit(X, y, target=0.2)
    assert strict.threshold < loose.threshold < more.threshold


def test_override_and_per_call_threshold_change_the_answer():
    X, y, far = sparse_clusters()
    rule = UnknownRule.fit(X, y)
    assert rule.with_threshold(-1.0).accepts(far).all()
    assert not rule.with_threshold(1.01).accepts(X).any()
    assert rule.accepts(far, threshold=-1.0).all() and not rule.accepts(far).any()
    assert rule.with_threshold(0.3).derived_threshold == rule.threshold
    assert "set by hand" in rule.with_threshold(0.3).describe() and "derived from 30 examples" in rule.describe()
    with pytest.raises(TrainingError):
        rule.with_threshold(float("nan"))


def test_a_class_without_examples_has_no_centre_and_is_never_judged():
    X, y, far = sparse_clusters()
    rule = UnknownRule.fit(X, y, num_classes=5)
    assert np.isnan(rule.centres[3:]).all() and rule.classes[4].examples == 0 and rule.classes[4].mean is None
    assert not rule.accepts(far).any()
    assert rule.accepts(far, predicted=np.full(len(far), 4)).all()  # taken for a class the rule knows nothing of
    assert not rule.accepts(far, predicted=np.zeros(len(far), dtype=int)).any()


def test_one_example_per_class_is_too_few():
    X, y, _ = clusters(n_per_class=1, classes=4)
    with pytest.raises(TooFewExamplesError, match="too few examples"):
        UnknownRule.fit(X, y)
    with pytest.raises(TrainingError, match="0 < target < 1"):
        UnknownRule.fit(*clusters()[:2], target=1.5)


def test_stored_and_read_back_to_an_equal_rule_that_decides_the_same():
    X, y, far = clusters()
    rule = UnknownRule.fit(X, y, num_classes=4)  # with an empty class (NaN centre)
    data = json.loads(json.dumps(rule.to_dict(), allow_nan=False))
    back = UnknownRule.from_dict(data)
    assert back == rule and back is not rule
    assert np.array_equal(back.accepts(far), rule.accepts(far)) and np.array_equal(back.similarity(X), rule.similarity(X))
    assert UnknownRule.from_dict(rule.with_threshold(0.5).to_dict()).threshold == 0.5
    assert back != rule.with_threshold(0.5)


@pytest.mark.parametrize("damage", [
    lambda d: d.pop("means"),
    lambda d: d.update(format="something-else"),
    lambda d: d.update(dim=2),
    lambda d: d["means"].update(base64="not base64!"),
    lambda d: d.update(threshold="high"),
    lambda d: d.update(target=2.0),
    lambda d: d.update(examples=[12, 12]),
    lambda d: d.update(left_out=[[0.5]]),
    lambda d: d["means"].update(rows=[0, 1]),
    lambda d: d["means"].update(base64="AHwAfAB8"),  # float16 +inf
])
def test_damaged_rule_data_is_a_value_error_saying_so(damage):
    X, y, _ = clusters(dim=1)
    data = UnknownRule.fit(np.abs(X) + 1, y).to_dict()
    damage(data)
    with pytest.raises(ValueError, match="unreadable unknown rule"):
        UnknownRule.from_dict(data)


def test_attached_to_a_layer_of_its_classes_only():
    X, y, _ = clusters()
    rule = UnknownRule.fit(X, y)
    layer = ImprintingHead().fit(X, y).export()
    assert UnknownRule.from_dict(rule.attach(layer).unknown) == rule and layer.unknown is None
    with pytest.raises(TrainingError, match="3 classes of 32 features but the head has 2 classes"):
        rule.attach(ImprintingHead().fit(X[y < 2], y[y < 2]).export())


def test_more_examples_later_grow_the_rule():
    X, y, far = sparse_clusters(n_per_class=10, classes=3)
    first = UnknownRule.fit(X[y < 2], y[y < 2])
    grown = first.with_threshold(0.1).partial_fit(X[y == 2], y[y == 2])  # a new class, as when a model is resumed
    full = UnknownRule.fit(X, y)
    assert grown.examples == (10, 10, 10) and grown.threshold == grown.derived_threshold  # the override is dropped
    np.testing.assert_allclose(grown.centres, full.centres, atol=2e-3)
    np.testing.assert_allclose(grown.left_out[2], full.left_out[2], atol=1e-3)  # the new examples are left out exactly
    assert grown.left_out[:2] == first.left_out[:2]  # the earlier ones are kept as they were
    values = np.concatenate([np.asarray(v) for v in grown.left_out])
    assert grown.threshold == pytest.approx(tolerance_bound(values, TARGET_REJECTION, CONFIDENCE))
    assert not grown.accepts(far).any() and grown.accepts(X[y == 2]).mean() >= 0.9
    assert first.accepts(X[y == 2]).mean() <= 0.1  # before: the third class was unknown
    more = grown.partial_fit(X[:3], y[:3])  # more examples of an existing class
    assert more.examples == (13, 10, 10) and len(more.left_out[0]) == len(grown.left_out[0]) + 3
    with pytest.raises(TrainingError, match="features"):
        grown.partial_fit(X[:, :5], y)
