"""One prediction vocabulary: rank() orders every score list, Prediction carries the result everywhere."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lastlayer.runtime.prediction import ClassScore, Prediction, rank
from lastlayer.teach.live import Smoother


def test_rank_orders_best_first_with_an_inclusive_threshold():
    scores = np.array([0.1, 0.9, 0.5, 0.95])
    assert rank(scores).tolist() == [3, 1, 2, 0]
    assert rank(scores, threshold=0.8).tolist() == [3, 1]
    assert rank(scores, threshold=0.99).tolist() == []
    assert rank(scores, threshold=0.5).tolist() == [3, 1, 2]  # inclusive
    assert rank(scores, top_k=3).tolist() == [3, 1, 2]
    assert rank(scores, top_k=300).tolist() == rank(scores, top_k=math.inf).tolist() == [3, 1, 2, 0]
    assert rank(scores, 3, 0.7).tolist() == [3, 1]
    assert rank(scores, top_k=0).tolist() == []


def test_rank_breaks_ties_by_the_lower_id_and_puts_nan_last():
    assert rank(np.array([0.5, 0.5, 0.2]), 2).tolist() == [0, 1]
    assert rank(np.array([0.2, 0.7, 0.7, 0.7]), 2).tolist() == [1, 2]
    assert rank(np.array([np.nan, 0.1, 0.3])).tolist() == [2, 1, 0]
    assert rank(np.array([np.nan, 0.1, 0.3]), threshold=-math.inf).tolist() == [2, 1]
    assert rank(np.array([200, 3, 250], dtype=np.uint8)).tolist() == [2, 0, 1]  # integer scores do not wrap


def test_prediction_from_scores_names_and_ids():
    scores = np.array([0.1, 0.6, 0.3])
    by_index = Prediction.from_scores(scores, ["a", "b", "c"], top_k=2)
    assert by_index.classes == [("b", 0.6), ("c", 0.3)] and by_index.class_ids == [1, 2] and by_index.top == ("b", 0.6)
    by_id = Prediction.from_scores(scores, ["a", "b", "c"], ids=[7, 3, 5], threshold=0.2, revision=4)
    assert by_id.class_ids == [3, 5] and by_id.revision == 4
    mapped = Prediction.from_scores(scores, {1: "gear"})
    assert mapped.classes == [("gear", 0.6), ("2", 0.3), ("0", 0.1)]  # ids without a label are named by number
    assert mapped.ranked[0] == ClassScore(1, "gear", 0.6) and mapped.ranked[0].to_dict() == {"id": 1, "label": "gear", "score": 0.6}
    assert by_index.to_dict() == {"top": {"label": "b", "score": 0.6}, "closest": {"label": "b", "score": 0.6}, "unknown": None,
                                  "similarity": None,
                                  "top_k": [{"class_id": 1, "label": "b", "score": 0.6}, {"class_id": 2, "label": "c", "score": 0.3}]}
    assert Prediction.from_scores(np.array([]), []).top is None


def test_an_unknown_prediction_answers_unknown_and_keeps_its_closest_class():
    unknown = Prediction.from_scores(np.array([0.1, 0.64, 0.26]), ["a", "roses", "c"], top_k=2, unknown=True, similarity=0.31)
    assert unknown.top == ("roses", 0.64) and unknown.answer == ("unknown", 0.64)
    assert unknown.describe() == "unknown (closest: roses 0.64)"
    data = unknown.to_dict()
    assert data["top"] == {"label": "unknown", "score": 0.64} and data["closest"] == {"label": "roses", "score": 0.64}
    assert data["unknown"] is True and data["similarity"] == 0.31 and data["top_k"][0]["label"] == "roses"
    known = Prediction.from_scores(np.array([0.1, 0.64, 0.26]), ["a", "roses", "c"], unknown=False, similarity=0.8)
    assert known.answer == known.top == ("roses", 0.64) and known.describe() == "roses 0.64"
    assert Prediction.from_scores(np.array([]), [], unknown=True).answer is None


def test_smoothing_carries_the_unknown_answer_by_majority():
    smoother = Smoother(window=3)
    flags = []
    for unknown, similarity in ((False, 0.9), (True, 0.2), (True, 0.3), (None, None), (False, 0.8), (False, 0.7)):
        smoothed = smoother.update(Prediction([("nut", 0.6), ("gear", 0.4)], [2, 1], unknown=unknown, similarity=similarity), 2)
        flags.append(smoothed.unknown)
    # windows: [F] [F T] [F T T] [T T -] [T - F] [- F F]: a frame without a rule does not vote; a tie is not unknown
    assert flags == [False, False, True, True, False, False]
    assert smoothed.similarity == pytest.approx(0.75) and smoothed.top == ("nut", 0.6)
    assert Smoother(2).update(Prediction([("nut", 1.0)], [2]), 1).unknown is None


def test_smoothing_ranks_with_the_same_rule():
    smoother = Smoother(window=2)
    smoother.update(Prediction([("nut", 0.6), ("gear", 0.4)], [2, 1]), top_k=2)
    smoothed = smoother.update(Prediction([("gear", 0.6), ("nut", 0.4)], [1, 2]), top_k=2)
    assert smoothed.classes == [("gear", 0.5), ("nut", 0.5)] and smoothed.class_ids == [1, 2]  # a tie: by label
    smoothed = smoother.update(Prediction([("washer", 0.9)], [3]), top_k=2)
    assert smoothed.classes == [("washer", 0.45), ("gear", 0.3)] and smoothed.class_ids == [3, 1]
