"""KeepClassesHead: the original layer stays fixed, a new class wins through its gate, resume is exact."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.errors import TrainingError
from lastlayer.learn.keep import (
    AFFINITY_QUANTILE,
    DEPTH,
    MANY_SHOTS,
    SCALE_RANGE,
    THRESHOLD_FACTOR,
    KeepClassesHead,
    centred,
    centred_units,
)
from lastlayer.learn.losses import softmax

D, C = 32, 6


def _original(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A trained-looking class layer: rows with no all-ones component, small biases."""
    rng = np.random.default_rng(seed)
    return centred(rng.normal(size=(C, D))), rng.normal(scale=0.1, size=C)


def _embeddings(center: np.ndarray, count: int, seed: int, noise: float = 0.3) -> np.ndarray:
    """ReLU-like embeddings: a large common positive component plus ``center`` and noise."""
    rng = np.random.default_rng(seed)
    return np.maximum(0.0, 3.0 + center + rng.normal(scale=noise, size=(count, D)))


def _cosines(head: KeepClassesHead, X: np.ndarray) -> np.ndarray:
    """Each embedding's cosine with each new class's row, both centred."""
    rows, _ = head.new_rows()
    return centred_units(X) @ centred_units(rows).T


def test_original_logits_stay_and_new_ids_follow_them():
    W, b = _original()
    head = KeepClassesHead(W, b, [f"old{i}" for i in range(C)])
    X = _embeddings(np.eye(D)[0] * 4, 5, 1)
    head.fit(X, np.full(5, C), {C: "new"})
    probe = _embeddings(np.zeros(D), 7, 2).astype(np.float32)  # embeddings are float32
    np.testing.assert_allclose(head.decision_function(probe)[:, :C], probe.astype(np.float64) @ W.T + b, rtol=1e-12)
    assert head.num_classes == C + 1 and head.labels[-1] == "new" and head.labels[:C] == [f"old{i}" for i in range(C)]
    assert not head.is_trainable(C - 1) and head.is_trainable(C) and head.shots(C) == 5 and head.shots(0) == 0
    with pytest.raises(TrainingError, match="Cannot change the base model classes"):
        head.add(X[0], 2)
    with pytest.raises(TrainingError, match="too large"):
        head.add(X[0], C + 2)
    with pytest.raises(TrainingError, match="dequantize"):
        head.add(X[0].astype(np.uint8), C)


def _two_new_classes(W: np.ndarray, b: np.ndarray, threshold: float | None = None) -> KeepClassesHead:
    head = KeepClassesHead(W, b, threshold=threshold)
    head.add(_embeddings(np.eye(D)[0] * 4, 5, 1), C)
    head.add(_embeddings(np.eye(D)[1] * 4, 5, 2), C + 1)
    return head


def test_a_new_class_wins_exactly_when_its_cosine_clears_its_threshold_whatever_the_original_logits():
    """The gate: how large the original logits are does not move the decision, only the similarity does."""
    W, b = _original()
    probes = np.concatenate([_embeddings(np.eye(D)[0] * s + np.eye(D)[k] * 3, 20, 10 + k, noise=1.0)
                             for s in (1.0, 2.0, 3.0) for k in (2, 3, 4)])
    head = _two_new_classes(W, b, threshold=0.3)
    gate = _cosines(head, probes) - head.thresholds
    taken = head.predict(probes) >= C
    assert 0 < taken.sum() < len(probes)  # the probes straddle the threshold
    np.testing.assert_array_equal(taken, gate.max(axis=1) > 0)
    # Among the new classes the most similar one wins (imprinting's ranking on centred embeddings).
    np.testing.assert_array_equal(head.predict(probes)[taken], C + np.argmax(gate[taken], axis=1))
    # Original logits 20 times as large (and shifted) take the same pictures for the new classes.
    louder = _two_new_classes(20 * W, b + 7.0, threshold=0.3)
    np.testing.assert_array_equal(louder.predict(probes) >= C, taken)


def test_thresholds_come_from_the_examples_affinity_to_the_original_rows_and_their_count():
    W, b = _original()
    head = KeepClassesHead(W, b)
    one, many = _embeddings(np.eye(D)[0] * 4, 1, 1), _embeddings(np.eye(D)[1] * 4, MANY_SHOTS + 2, 2)
    head.add(one, C)
    head.add(many, C + 1)
    cosines = centred_units(np.concatenate([one, many])) @ centred_units(W).T
    affinity = np.quantile(cosines, AFFINITY_QUANTILE, axis=1)
    np.testing.assert_allclose(head.affinity(np.concatenate([one, many])), affinity, rtol=1e-5)  # of float32 embeddings
    np.testing.assert_allclose(head.thresholds, np.array(THRESHOLD_FACTOR) * affinity.mean(), rtol=1e-5)
    more = _embeddings(np.eye(D)[0] * 4, 2, 3)
    head.add(more, C)  # 3 examples: a factor between the two
    mean_affinity = head.affinity(np.concatenate([one, many, more])).mean()
    assert THRESHOLD_FACTOR[1] * mean_affinity < head.thresholds[0] < THRESHOLD_FACTOR[0] * mean_affinity
    assert list(KeepClassesHead(W, b, threshold=0.25).fit(many, np.full(len(many), C)).thresholds) == [0.25]


def test_the_common_component_is_what_would_make_every_picture_look_alike():
    """Uncentred, every ReLU embedding is close to a new class's mean; centred, unrelated ones are not (the reason for centring)."""
    W, b = _original()
    X = _embeddings(np.eye(D)[0] * 4, 5, 1)
    head = KeepClassesHead(W, b).fit(X, np.full(5, C))
    others = _embeddings(np.eye(D)[5] * -4 + np.eye(D)[7] * 4, 50, 3)
    assert np.all(head.predict(others) < C)  # unrelated embeddings keep their original classes
    raw_mean = X.mean(axis=0) / np.linalg.norm(X.mean(axis=0))
    raw_cosines = others @ raw_mean / np.linalg.norm(others, axis=1)
    assert np.all(raw_cosines > 0.9) and np.all(raw_cosines > head.thresholds[0])  # a raw mean would take them all
    assert np.all(head.predict(_embeddings(np.eye(D)[0] * 4, 20, 4)) == C)


def test_below_its_threshold_a_new_class_leaves_the_original_probabilities_as_they_were():
    W, b = _original()
    head = KeepClassesHead(W, b, threshold=0.5, scale=4.0)  # a gentle slope above it (as a narrow quantized range needs)
    head.add(_embeddings(np.eye(D)[0] * 4, 5, 1), C)
    head.add(_embeddings(np.eye(D)[1] * 4, 5, 2), C + 1)
    others = _embeddings(np.eye(D)[5] * -4 + np.eye(D)[7] * 4, 30, 3)
    assert np.all(_cosines(head, others) < head.thresholds.min() / 2) and head.steepness > 1
    # Below half its threshold a new class sits at least DEPTH / 2 logits below the best original one.
    shares = head.predict_proba(others)[:, C:].sum(axis=1)
    assert np.all(shares <= 2 * np.exp(-DEPTH / 2))
    np.testing.assert_allclose(head.predict_proba(others)[:, :C], softmax(others @ W.T + b), atol=2 * np.exp(-DEPTH / 2))
    rows, bias = head.new_rows()  # the same slope on both sides would give the new classes far more
    original = others @ W.T + b
    gentle = softmax(np.concatenate([original, original.max(axis=1, keepdims=True) + centred_units(others) @ rows.T + bias], axis=1))
    assert np.all(gentle[:, C:].sum(axis=1) > 5 * shares)


def test_the_scale_fits_the_quantized_range_and_the_range_moves_up():
    W, b = _original()
    X = _embeddings(np.eye(D)[0] * 4, 5, 1)
    assert KeepClassesHead(W, b).fit(X, np.full(5, C)).scale == SCALE_RANGE[1]  # float: no range to fit
    peak = float(np.max(X @ W.T + b))
    wide = KeepClassesHead(W, b, logit_range=(-10.0, peak + 30.0), max_logit_shift=2.0).fit(X, np.full(5, C))
    narrow = KeepClassesHead(W, b, logit_range=(-10.0, peak + 1.0), max_logit_shift=2.0).fit(X, np.full(5, C))
    assert wide.scale == SCALE_RANGE[1] and SCALE_RANGE[0] < narrow.scale < wide.scale
    assert narrow.logit_window() == pytest.approx((-8.0, peak + 3.0))  # moved up by the whole shift allowed
    # The example the original model is surest of, at the cosine new pictures typically reach at most, still fits.
    assert peak + narrow.scale * narrow._reach()[0] == pytest.approx(narrow.logit_window()[1])
    logits = narrow.decision_function(np.concatenate([X, -X]))
    assert logits.max() <= narrow.logit_window()[1] and logits.min() >= narrow.logit_window()[0]
    assert narrow.export().logit_range == narrow.logit_window() and narrow.export().steepness == narrow.steepness
    assert KeepClassesHead(W, b).fit(X, np.full(5, C)).export().logit_range is None
    assert KeepClassesHead(W, b, scale=3.0).fit(X, np.full(5, C)).scale == 3.0


def test_restore_from_state_and_resume_equal_learning_at_once():
    W, b = _original()
    a, c = _embeddings(np.eye(D)[0] * 4, 6, 1), _embeddings(np.eye(D)[1] * 4, 4, 2)
    settings = {"logit_range": (-5.0, 20.0), "max_logit_shift": 3.0}
    together = KeepClassesHead(W, b, **settings).fit(np.concatenate([a, c]), np.r_[np.full(6, C), np.full(4, C + 1)],
                                                     {C: "a", C + 1: "c"})
    first = KeepClassesHead(W, b, **settings).fit(a[:3], np.full(3, C), {C: "a"})
    resumed = KeepClassesHead.restore(W, b, None, first.state(), **settings)
    assert resumed.labels[-1] == "a" and resumed.shots(C) == 3
    resumed.add(a[3:], C)
    resumed.add(c, C + 1, "c")
    probe = _embeddings(np.eye(D)[2], 9, 5)
    np.testing.assert_allclose(resumed.decision_function(probe), together.decision_function(probe), rtol=1e-12, atol=1e-12)
    for entry, expected in zip(resumed.export().state["classes"], together.export().state["classes"]):
        assert [entry[k] for k in ("label", "count", "peak")] == [expected[k] for k in ("label", "count", "peak")]
        assert entry["affinity"] == pytest.approx(expected["affinity"], rel=1e-12)  # the same sum, added in another order
    assert resumed.scale == together.scale and resumed.steepness == together.steepness
    with pytest.raises(TrainingError, match="state version 2"):
        KeepClassesHead.restore(W, b, None, {**first.state(), "method": "other"})
    with pytest.raises(TrainingError, match="state version 2"):  # the first keep-classes rule stored no affinities
        KeepClassesHead.restore(W, b, None, {**first.state(), "version": 1})
    for broken in ({"sum": "!!"}, {"affinity": None}, {"peak": "high"}):
        entry = {**first.state()["classes"][0], **broken}
        with pytest.raises(TrainingError, match="stored state of the appended classes"):
            KeepClassesHead.restore(W, b, None, {**first.state(), "classes": [entry]})
    with pytest.raises(TrainingError, match="original classes"):
        KeepClassesHead.restore(W[:-1], b[:-1], None, first.state())


def test_shot_report_says_when_a_new_class_looks_like_an_original_one():
    W, b = _original()
    W *= 0.02  # the original classes hardly tell most embeddings apart ...
    W[2] = centred(np.eye(D)[3]) * 40  # ... but class 2 answers strongly to feature 3
    head = KeepClassesHead(W, b, [f"old{i}" for i in range(C)])
    head.add(_embeddings(np.eye(D)[3] * 6, 4, 1), C, "lookalike")
    head.add(_embeddings(np.eye(D)[9] * 6, 4, 2), C + 1, "novel")
    report = {s.label: s for s in head.shot_report()}
    assert report["lookalike"].looks_like_original and report["lookalike"].original_top == "old2"
    assert report["lookalike"].original_top_count == 4 and "looks like the original class 'old2'" in report["lookalike"].warning()
    assert not report["novel"].looks_like_original
    assert report["novel"].kept_by_original == int(np.sum(head.predict(np.concatenate(head.new_classes_[1].examples)) < C))


def test_leave_one_out_rebuilds_the_class_without_the_example():
    W, b = _original()
    head = KeepClassesHead(W, b)
    head.add(_embeddings(np.eye(D)[0] * 4, 4, 1), C)
    head.add(_embeddings(np.eye(D)[1] * 4, 1, 2), C + 1)
    truth, predicted = head.leave_one_out()
    assert list(truth) == [C] * 4 and np.all(predicted == C)  # the 1-example class is skipped


@pytest.mark.parametrize(("weights", "bias", "labels", "options", "message"), [
    (np.ones((3, 4)), np.ones(2), None, {}, "3 rows but 2 biases"),
    (np.ones((3, 4)), np.array([0.0, np.nan, 0.0]), None, {}, "non-finite"),
    (np.ones((3, 4)), np.zeros(3), ["a"], {}, "1 labels for 3"),
    (np.ones((3, 4)), np.zeros(3), None, {"threshold": 1.0}, "cosine in"),
    (np.ones((3, 4)), np.zeros(3), None, {"scale": 0.0}, "positive"),
])
def test_a_broken_original_layer_or_setting_is_refused(weights, bias, labels, options, message):
    with pytest.raises(TrainingError, match=message):
        KeepClassesHead(weights, bias, labels, **options)
