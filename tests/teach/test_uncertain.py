"""The queue of uncertain frames: what it keeps, its bounds in count and memory, dedupe, and teaching from it."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.errors import NotFoundError
from lastlayer.images.render import render_frame, write_image_folder
from lastlayer.runtime.prediction import Prediction
from lastlayer.sources import open_source
from lastlayer.teach.live import LiveLoop
from lastlayer.teach.session import TeachingSession
from lastlayer.teach.uncertain import UncertainQueue, uncertainty

from conftest import EXTRACTOR

DIM = 1024


def _unit(seed: int) -> np.ndarray:
    vector = np.abs(np.random.default_rng(seed).normal(size=DIM))
    return vector / np.linalg.norm(vector)


def _prediction(unknown=True, scores=(0.7, 0.2), embedding=None) -> Prediction:
    return Prediction.from_scores(np.array(scores), ["gear", "washer"], unknown=unknown, similarity=0.3 if unknown else 0.9,
                                  embedding=embedding)


PIXELS = np.zeros((48, 64, 3), np.uint8)


def test_only_unknown_or_nearly_tied_predictions_are_uncertain():
    assert uncertainty(_prediction(unknown=True)) == "unknown"
    assert uncertainty(_prediction(unknown=False, scores=(0.5, 0.42))) == "tied"
    assert uncertainty(_prediction(unknown=False, scores=(0.9, 0.1))) is None
    assert uncertainty(_prediction(unknown=None, scores=(0.9, 0.1))) is None
    assert uncertainty(_prediction(unknown=False, scores=(0.5, 0.42)), margin=0.0) is None
    assert uncertainty(Prediction.from_scores(np.array([1.0]), ["gear"], unknown=False)) is None  # one class: never tied
    queue = UncertainQueue()
    assert queue.offer(_prediction(unknown=False, scores=(0.9, 0.1), embedding=_unit(0)), PIXELS) is None and len(queue) == 0
    kept = queue.offer(_prediction(embedding=_unit(1)), PIXELS, frame=7)
    assert kept.reason == "unknown" and kept.frame == 7 and kept.describe() == "unknown (closest: gear 0.70)"
    tied = queue.offer(_prediction(unknown=False, scores=(0.5, 0.42), embedding=_unit(2)), PIXELS)
    assert tied.describe() == "tied: gear 0.50 / washer 0.42" and [i.id for i in queue.items()] == [tied.id, kept.id]


def test_the_same_sight_is_kept_once():
    queue = UncertainQueue()
    first = queue.offer(_prediction(embedding=_unit(1)), PIXELS)
    version = queue.version
    for _ in range(9):
        assert queue.offer(_prediction(embedding=_unit(1) + 0.001 * _unit(5)), PIXELS) is None
    assert len(queue) == 1 and queue.get(first.id).seen == 10 and queue.duplicates == 9 and queue.version == version
    other = queue.offer(_prediction(embedding=_unit(2)), PIXELS)  # a different sight
    assert other is not None and len(queue) == 2
    assert float(_unit(1) @ _unit(2)) < queue.duplicate
    loose = UncertainQueue(duplicate=float(_unit(1) @ _unit(2)) - 1e-6)  # the dedupe threshold decides
    loose.offer(_prediction(embedding=_unit(1)), PIXELS)
    assert loose.offer(_prediction(embedding=_unit(2)), PIXELS) is None and len(loose) == 1


def test_without_an_embedding_duplicates_are_found_by_the_picture():
    queue = UncertainQueue()
    gear, washer = render_frame("gear", 1, size=(96, 72)), render_frame("washer", 1, size=(96, 72))
    assert queue.offer(_prediction(), gear) is not None
    assert queue.offer(_prediction(), gear.copy()) is None
    kept = queue.offer(_prediction(), washer)
    assert kept is not None and len(queue) == 2 and kept.embedding is None and kept.to_dict()["teachable"] is False


def test_the_queue_is_bounded_in_count_and_in_memory():
    queue = UncertainQueue(capacity=5)
    kept = [queue.offer(_prediction(embedding=_unit(i)), render_frame("gear", i, size=(320, 240))) for i in range(12)]
    assert len(queue) == 5 and queue.evicted == 7
    assert [i.id for i in queue.items()] == [k.id for k in kept[::-1][:5]]  # the newest stay, newest first
    per_item = queue.nbytes / 5
    assert queue.nbytes == sum(i.nbytes for i in queue.items()) and per_item < 16_000  # thumbnail + float32 embedding
    small = UncertainQueue(capacity=100, max_bytes=int(3.5 * per_item))
    for i in range(20):
        small.offer(_prediction(embedding=_unit(i)), render_frame("gear", i, size=(320, 240)))
        assert small.nbytes <= small.max_bytes
    assert 2 <= len(small) <= 3
    with pytest.raises(NotFoundError):
        queue.get(kept[0].id)  # pushed out


def test_dismiss_and_seen_again_moves_to_the_front():
    queue = UncertainQueue(capacity=2)
    a = queue.offer(_prediction(embedding=_unit(1)), PIXELS)
    b = queue.offer(_prediction(embedding=_unit(2)), PIXELS)
    queue.offer(_prediction(embedding=_unit(1)), PIXELS)  # a seen again: now the most recent
    c = queue.offer(_prediction(embedding=_unit(3)), PIXELS)  # pushes out b, the one seen longest ago
    assert [i.id for i in queue.items()] == [c.id, a.id]
    assert queue.dismiss(a.id).id == a.id and [i.id for i in queue.items()] == [c.id]
    with pytest.raises(NotFoundError):
        queue.dismiss(b.id)


@pytest.mark.shared
def test_the_live_loop_fills_the_sessions_queue_and_one_call_teaches_an_item(model_file, tmp_path, monkeypatch):
    write_image_folder(tmp_path / "frames", [("gear", 4), ("nut", 4), ("washer", 4)])
    with TeachingSession(tmp_path / "state", model_file(EXTRACTOR)) as session:
        for kind in ("gear", "washer"):
            session.add_examples(kind, [render_frame(kind, 100 + i) for i in range(4)])
        with LiveLoop(session, open_source(tmp_path / "frames"), window=1) as loop:  # a session's loop fills its queue
            while loop.running:
                loop.wait_newer(0, 1.0)
        items = session.uncertain_frames()
        assert items and all(item.reason == "unknown" and 4 <= item.frame < 8 for item in items)
        assert sum(item.seen for item in items) == 4  # the four nut frames, folded into as many items as distinct sights
        item = items[0]

        def no_second_embedding(*args, **kwargs):
            raise AssertionError("the queued frame was embedded again")

        monkeypatch.setattr(session.embedder, "embed", no_second_embedding)
        added = session.teach_uncertain(item.id, "nut")
        stored = session.store.snapshot(None, every_example=True).examples
        assert stored[-1].id == added[0].id
        np.testing.assert_allclose(stored[-1].embedding, item.embedding, atol=1e-6)
        assert session.thumbnail(added[0].id)[:2] == b"\xff\xd8" and item.id not in [i.id for i in session.uncertain.items()]
        with pytest.raises(NotFoundError):
            session.teach_uncertain(item.id, "nut")
        other = session.uncertain.offer(_prediction(embedding=_unit(7)), PIXELS)
        assert session.dismiss_uncertain(other.id).id == other.id and other.id not in [i.id for i in session.uncertain_frames()]
        assert len(session.store.snapshot(None, every_example=True).examples) == len(stored)  # nothing added
        with pytest.raises(NotFoundError):
            session.dismiss_uncertain(other.id)
