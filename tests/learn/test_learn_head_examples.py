"""ImprintingHead built from kept examples (from_examples), examples removed one by one, and the leave-one-out report."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.errors import NotFoundError, TrainingError
from lastlayer.learn.cosine import leave_one_out_report
from lastlayer.learn.imprinting import ImprintingHead, unit_rows
from learn.test_learn_imprinting import clusters


def test_from_examples_is_the_head_fit_would_make():
    X, y = clusters()
    fitted = ImprintingHead(scale=20.0).fit(X, y, labels=["a", "b", "c"])
    made = ImprintingHead.from_examples(X, y, ["a", "b", "c"], scale=20.0)
    np.testing.assert_allclose(made.rows(), fitted.rows(), atol=1e-7)
    np.testing.assert_allclose(made.sums(), fitted.sums(), atol=1e-6)
    assert made.labels == ["a", "b", "c"] and [made.shots(c) for c in range(3)] == [6, 6, 6] and made.scale == 20.0
    for c in range(3):
        np.testing.assert_allclose(made.examples(c), unit_rows(X[y == c]), atol=1e-7)
    np.testing.assert_allclose(made.predict_proba(X), fitted.predict_proba(X), atol=1e-7)


def test_from_examples_continues_base_rows_keeps_fixed_classes_and_takes_rows_back():
    X, y = clusters(classes=2)
    base = np.stack([3 * unit_rows(X[:1])[0], unit_rows(X[6:7])[0], unit_rows(X[1:2])[0]])
    head = ImprintingHead.from_examples(X[:3], np.array([0, 0, 0]), ["old", "other", "fixed"], base_rows=base,
                                        base_shots=[3, 0, 0], trainable=[True, True, False])
    np.testing.assert_allclose(head.sums()[0], base[0] + unit_rows(X[:3]).sum(axis=0), atol=1e-6)
    assert [head.shots(c) for c in range(3)] == [6, 0, 0] and not head.is_trainable(2)
    assert head.export().state["norms"].keys() == {"0", "1"}  # the fixed class is a base class of the saved model
    with pytest.raises(TrainingError, match="fixed base class"):
        ImprintingHead.from_examples(X[:1], np.array([2]), ["old", "other", "fixed"], base_rows=base, trainable=[True, True, False])
    tuned = ImprintingHead.from_examples(X, y, ["a", "b"]).sums()
    tuned[1] = 2.5 * unit_rows(X[:1])[0]
    again = ImprintingHead.from_examples(X, y, ["a", "b"], rows={1: tuned[1]})
    np.testing.assert_allclose(again.sums(), tuned)
    assert len(again.examples(1)) == 6  # the examples stay, for the next fine-tune
    empty = ImprintingHead.from_examples(np.zeros((0, 16)), np.zeros(0), [], dim=16)
    assert empty.num_classes == 0 and empty.sums().shape == (0, 16)


def test_removing_an_example_gives_the_head_made_without_it():
    X, y = clusters()
    head = ImprintingHead.from_examples(X, y, ["a", "b", "c"])
    head.remove_example(1, 2)
    keep = np.ones(len(y), bool)
    keep[np.flatnonzero(y == 1)[2]] = False
    without = ImprintingHead.from_examples(X[keep], y[keep], ["a", "b", "c"])
    np.testing.assert_allclose(head.sums(), without.sums(), atol=1e-9)
    np.testing.assert_allclose(head.examples(1), without.examples(1))
    assert head.shots(1) == 5
    with pytest.raises(NotFoundError, match="has 5 example"):
        head.remove_example(1, 5)
    for _ in range(5):  # down to no example: a zero row
        head.remove_example(1, 0)
    assert head.shots(1) == 0 and np.allclose(head.sums()[1], 0, atol=1e-9) and len(head.examples(1)) == 0


def test_leave_one_out_report_predicts_each_example_without_it():
    east, north = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    tilted = np.array([0.2, 1.0])  # an "east" example pointing north-ish: wrong once left out
    units = [np.stack([east, east + [0, 0.1], tilted]), np.stack([north, north + [0.1, 0]]), np.stack([-east])]
    report = leave_one_out_report(units, ["east", "north", "west"], scale=10.0)
    assert report.labels == ["east", "north", "west"] and report.examples == 6
    assert report.per_class == {"east": pytest.approx(2 / 3), "north": 1.0, "west": None}
    assert report.accuracy == pytest.approx(4 / 5)  # the one-example class is not counted
    assert report.confusion == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]  # west's only example, left out, meets east and north only
    assert any("'west' has 1 example" in note for note in report.notes)
    single = leave_one_out_report([np.stack([east, east]), np.zeros((0, 2))], ["east", "unused"], scale=10.0)
    assert single.accuracy is None and single.labels == ["east"] and "at least 2 classes" in single.notes[0]


def test_a_stop_event_ends_a_finetune_keeping_the_best_rows_so_far():
    import threading

    X, y = clusters(n_per_class=25, spread=0.6)  # enough examples for a held-out run and its refit
    stop = threading.Event()
    stop.set()
    head = ImprintingHead.from_examples(X, y, ["a", "b", "c"])
    before = head.rows().copy()
    result = head.finetune(500, stop=stop)
    assert result.steps_run == 0 and result.stopped_early and result.best_step == 0
    np.testing.assert_allclose(head.rows(), before, atol=1e-6)
    asked = []

    class StopAfter:
        def is_set(self) -> bool:  # set once 5 steps ran
            asked.append(1)
            return len(asked) > 5

    result = ImprintingHead.from_examples(X, y, ["a", "b", "c"]).finetune(500, holdout=0, stop=StopAfter())
    assert result.steps_run == 5 and result.stopped_early
