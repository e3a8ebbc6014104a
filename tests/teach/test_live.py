"""The live loop: frames predicted several at once on the predictor's lanes, handed back in frame order."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from lastlayer.images.render import render_frame
from lastlayer.runtime.lanes import Lanes
from lastlayer.runtime.prediction import Prediction
from lastlayer.sources import Frame, FrameSource
from lastlayer.teach.live import predictions
from lastlayer.teach.session import TeachingSession

from conftest import EXTRACTOR


class ListSource(FrameSource):
    """Frames whose first pixel holds their index; ``paced`` as asked; raises ``error`` at ``fail_at``."""

    def __init__(self, count: int, *, paced: bool = False, fail_at: int | None = None) -> None:
        super().__init__("list")
        self.count, self._paced, self.fail_at, self.position = count, paced, fail_at, 0

    @property
    def paced(self) -> bool:
        return self._paced

    def read(self) -> Frame | None:
        if self.closed or self.position >= self.count:
            return None
        if self.position == self.fail_at:
            raise RuntimeError("sensor on fire")
        pixels = np.zeros((2, 2, 3), np.uint8)
        pixels[0, 0, 0] = self.position % 256
        self.position += 1
        return Frame(pixels, self.position - 1, self.position / 30)


class SlowPredictor:
    """Predicts a frame's index with a random delay, so that lanes finish out of order; records who ran what."""

    input_size = None

    def __init__(self, lanes: int = 3, fail_at: int | None = None) -> None:
        self._lanes, self.fail_at = lanes, fail_at
        self.lanes_asked = 0
        self.calls: list[tuple[int, int | None]] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    @property
    def lanes(self) -> int:
        self.lanes_asked += 1
        return self._lanes

    def predict(self, image: np.ndarray, top_k: int = 3, *, lane: int | None = None) -> Prediction:
        index = int(image[0, 0, 0])
        with self._lock:
            self.calls.append((index, lane))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(random.uniform(0.0, 0.004))
        with self._lock:
            self.running -= 1
        if index == self.fail_at:
            raise ValueError(f"cannot predict frame {index}")
        return Prediction([(f"frame {index}", 1.0)], [index])


def test_lanes_predict_several_frames_at_once_and_states_keep_frame_order():
    random.seed(1)
    predictor = SlowPredictor(lanes=3)
    states = list(predictions(predictor, ListSource(60), window=1))
    assert [s.frame.index for s in states] == list(range(60))
    assert [s.prediction.top[0] for s in states] == [f"frame {i}" for i in range(60)]
    assert [s.processed for s in states] == list(range(1, 61))
    assert {lane for _, lane in predictor.calls} == {0, 1, 2}
    assert predictor.most_at_once > 1


@pytest.mark.parametrize("lanes", [1, None])
def test_one_lane_uses_the_predictors_own_interpreter(lanes):
    paced = lanes is None  # a camera-like source: one lane by default, and no extra interpreters made
    predictor = SlowPredictor(lanes=3)
    states = list(predictions(predictor, ListSource(20, paced=paced), lanes=lanes))
    assert [s.frame.index for s in states] == list(range(20))
    assert {lane for _, lane in predictor.calls} == {None}
    assert predictor.lanes_asked == 0


def test_lanes_are_capped_by_what_the_predictor_has():
    predictor = SlowPredictor(lanes=2)
    list(predictions(predictor, ListSource(20), lanes=8))
    assert {lane for _, lane in predictor.calls} == {0, 1}


def test_every_and_max_frames_with_lanes():
    predictor = SlowPredictor(lanes=2)
    states = list(predictions(predictor, ListSource(40), every=3, max_frames=5))
    assert [s.frame.index for s in states] == [0, 3, 6, 9, 12]


def test_max_fps_paces_the_frames_read_from_a_live_source():
    predictor = SlowPredictor(lanes=2)
    source = ListSource(6)
    source.live = True  # a camera: at most max_fps frames per second of wall-clock time
    start = time.monotonic()
    states = list(predictions(predictor, source, max_fps=50))
    assert len(states) == 6 and time.monotonic() - start >= 5 / 50 - 0.01


def test_max_fps_on_a_recorded_source_keeps_that_many_frames_per_second_of_its_time():
    states = list(predictions(SlowPredictor(lanes=2), ListSource(60), max_fps=10))  # timestamps 1/30 .. 60/30 s
    assert [s.frame.index for s in states] == [0, *range(2, 60, 3)]  # the first frame of each tenth of a second


@pytest.mark.parametrize(("source_fails", "predictor_fails"), [(True, False), (False, True)])
def test_an_error_comes_after_every_earlier_frame(source_fails, predictor_fails):
    predictor = SlowPredictor(lanes=3, fail_at=7 if predictor_fails else None)
    seen = []
    with pytest.raises((RuntimeError, ValueError), match="sensor on fire|cannot predict frame 7"):
        for state in predictions(predictor, ListSource(40, fail_at=7 if source_fails else None)):
            seen.append(state.frame.index)
    assert seen == list(range(7))


def test_a_stop_event_ends_the_loop_and_its_workers():
    stop = threading.Event()
    predictor = SlowPredictor(lanes=2)
    before = threading.active_count()
    for state in predictions(predictor, ListSource(10_000), stop=stop):
        if state.processed == 10:
            stop.set()
    assert 10 <= len(predictor.calls) < 100
    assert threading.active_count() == before


class _Stub:
    def __init__(self, num_threads: int) -> None:
        self.num_threads, self.uses_edgetpu, self.clones = num_threads, False, 0

    def clone(self, num_threads: int) -> _Stub:
        self.clones += 1
        return _Stub(num_threads)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        return np.array([self.num_threads])


def test_lanes_clone_single_threaded_interpreters_or_share_the_one(monkeypatch):
    from lastlayer.runtime import batch

    monkeypatch.setattr(batch, "usable_cores", lambda: 4)
    owner, lock = _Stub(4), threading.RLock()
    lanes = Lanes(owner, lock)  # type: ignore[arg-type]
    assert owner.clones == 0  # made on first use only
    assert len(lanes) == 4 and owner.clones == 4 and lanes.run(np.zeros(1), 5).tolist() == [1]
    assert len(lanes) == 4 and owner.clones == 4  # and kept
    fresh = _Stub(4)
    assert Lanes(fresh, lock).run(np.zeros(1)).tolist() == [4] and fresh.clones == 0  # type: ignore[arg-type]  (no lane: the owner itself)
    single = _Stub(1)
    shared = Lanes(single, lock)  # type: ignore[arg-type]
    assert len(shared) == 1 and single.clones == 0
    with lock:  # the owner's own lock guards its only lane (re-entrant here, as the session's is)
        assert shared.run(np.zeros(1), 0).tolist() == [1]


@pytest.mark.shared
def test_a_session_predicts_the_same_on_its_lanes(model_file, tmp_path):
    with TeachingSession(tmp_path / "state", model_file(EXTRACTOR), num_threads=2) as session:
        for kind in ("gear", "washer"):
            session.add_examples(kind, [render_frame(kind, i) for i in range(3)])
        frames = [render_frame(kind, 40 + i) for kind in ("gear", "washer") for i in range(3)]
        own = [session.predict(frame) for frame in frames]
        for lane in range(session.lanes):
            on_lane = [session.predict(frame, lane=lane) for frame in frames]
            assert [p.class_ids for p in on_lane] == [p.class_ids for p in own]
            assert np.allclose([s for p in on_lane for _, s in p.classes], [s for p in own for _, s in p.classes], atol=1e-6)
