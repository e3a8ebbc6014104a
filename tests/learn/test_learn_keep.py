"""KeepClassesHead: the original layer stays fixed, new classes follow its rule, resume is exact."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.errors import TrainingError
from lastlayer.learn.keep import CLASS_MEAN, PROTOTYPE, KeepClassesHead, centred

D, C = 32, 6


def _original(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A trained-looking class layer: rows with no all-ones component, small biases."""
    rng = np.random.default_rng(seed)
    return centred(rng.normal(size=(C, D))), rng.normal(scale=0.1, size=C)


def _embeddings(center: np.ndarray, count: int, seed: int) -> np.ndarray:
    """ReLU-like embeddings: a large common positive component plus ``center`` and noise."""
    rng = np.random.default_rng(seed)
    return np.maximum(0.0, 3.0 + center + rng.normal(scale=0.3, size=(count, D)))


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


def test_new_rows_have_no_all_ones_component_one_scale_and_the_rule_by_shots():
    W, b = _original()
    head = KeepClassesHead(W, b)
    for k, count in enumerate((1, 2)):
        head.add(_embeddings(np.eye(D)[k] * 4, count, k), C + k)
    rows, bias = head.new_rows()
    np.testing.assert_allclose(rows.sum(axis=1), 0.0, atol=1e-9)  # orthogonal to the all-ones direction
    typical_row = np.median(np.linalg.norm(centred(W), axis=1))
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), PROTOTYPE[0] * typical_row)
    norms = [np.linalg.norm(centred(x)) for k, count in enumerate((1, 2)) for x in _embeddings(np.eye(D)[k] * 4, count, k)]
    assert bias[0] == pytest.approx(np.median(b) - PROTOTYPE[0] * typical_row * PROTOTYPE[1] * np.median(norms))
    for k in range(2):  # with 5 or more examples per class: the class mean with the typical original bias
        head.add(_embeddings(np.eye(D)[k] * 4, 5, 10 + k), C + k)
    assert head.settings() == CLASS_MEAN and head.new_bias == pytest.approx(np.median(b))
    fixed = KeepClassesHead(W, b, strength=2.0, threshold=0.1)
    assert fixed.settings() == (2.0, 0.1)


def test_the_common_component_is_what_would_take_every_image():
    """A raw class mean scores high on any embedding; the centred one does not (the reason for the rule)."""
    W, b = _original()
    X = _embeddings(np.eye(D)[0] * 4, 5, 1)
    head = KeepClassesHead(W, b).fit(X, np.full(5, C))
    others = _embeddings(np.eye(D)[5] * -4 + np.eye(D)[7] * 4, 50, 3)
    assert np.all(head.predict(others) < C)  # unrelated embeddings keep their original classes
    raw = head.scale * X.mean(axis=0) / np.linalg.norm(X.mean(axis=0))
    assert np.all(others @ raw + head.new_bias > (others @ W.T + b).max(axis=1))  # a raw mean would take them all
    assert np.all(head.predict(_embeddings(np.eye(D)[0] * 4, 20, 4)) == C)


def test_restore_from_state_and_resume_equal_learning_at_once():
    W, b = _original()
    a, c = _embeddings(np.eye(D)[0] * 4, 6, 1), _embeddings(np.eye(D)[1] * 4, 4, 2)
    together = KeepClassesHead(W, b).fit(np.concatenate([a, c]), np.r_[np.full(6, C), np.full(4, C + 1)], {C: "a", C + 1: "c"})
    first = KeepClassesHead(W, b).fit(a[:3], np.full(3, C), {C: "a"})
    resumed = KeepClassesHead.restore(W, b, None, first.state())
    assert resumed.labels[-1] == "a" and resumed.shots(C) == 3
    resumed.add(a[3:], C)
    resumed.add(c, C + 1, "c")
    probe = _embeddings(np.eye(D)[2], 9, 5)
    np.testing.assert_allclose(resumed.decision_function(probe), together.decision_function(probe), rtol=1e-12, atol=1e-12)
    assert resumed.export().state["classes"] == together.export().state["classes"]
    with pytest.raises(TrainingError, match="state"):
        KeepClassesHead.restore(W, b, None, {**first.state(), "method": "other"})
    for broken in ({"sum": "!!"}, {"norms": ""}):
        entry = {**first.state()["classes"][0], **broken}
        with pytest.raises(TrainingError, match="stored state of the appended classes"):
            KeepClassesHead.restore(W, b, None, {**first.state(), "classes": [entry]})
    with pytest.raises(TrainingError, match="original classes"):
        KeepClassesHead.restore(W[:-1], b[:-1], None, first.state())


def test_logit_range_clips_and_moves_up_for_headroom():
    W, b = _original()
    X = _embeddings(np.eye(D)[0] * 4, 5, 1)
    free = KeepClassesHead(W, b).fit(X, np.full(5, C))
    peak = free.decision_function(X)[:, C].max()
    narrow = (-1.0, peak / 4)
    clipped = KeepClassesHead(W, b, logit_range=narrow).fit(X, np.full(5, C))
    assert clipped.logit_window() == narrow and clipped.decision_function(X).max() == pytest.approx(narrow[1])
    moving = KeepClassesHead(W, b, logit_range=narrow, max_logit_shift=0.5).fit(X, np.full(5, C))
    low, high = moving.logit_window()
    assert (low, high) == pytest.approx((narrow[0] + 0.5, narrow[1] + 0.5))  # capped by max_logit_shift
    assert moving.export().logit_range == (low, high)
    assert KeepClassesHead(W, b).fit(X, np.full(5, C)).export().logit_range is None


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


@pytest.mark.parametrize(("weights", "bias", "labels", "message"), [
    (np.ones((3, 4)), np.ones(2), None, "3 rows but 2 biases"),
    (np.ones((3, 4)), np.array([0.0, np.nan, 0.0]), None, "non-finite"),
    (np.ones((3, 4)), np.zeros(3), ["a"], "1 labels for 3"),
])
def test_a_broken_original_layer_is_refused(weights, bias, labels, message):
    with pytest.raises(TrainingError, match=message):
        KeepClassesHead(weights, bias, labels)
