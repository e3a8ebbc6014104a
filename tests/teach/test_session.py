"""TeachingSession: teach from frames, predict, persist every change, survive kill -9, export a model LiteRT agrees with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter as StockInterpreter

from lastlayer.errors import ConflictError, NotFoundError, TrainingError
from lastlayer.images.decode import resize_array
from lastlayer.images.render import render_frame, write_image_folder
from lastlayer.jobs.imprint import ImprintOptions, imprint
from lastlayer.sources import open_source
from lastlayer.teach.session import TeachingSession
from lastlayer.teach.store import StateError

from conftest import EXTRACTOR

KINDS = ("gear", "washer", "bracket")
pytestmark = pytest.mark.shared


@pytest.fixture
def session(model_file, tmp_path):
    with TeachingSession(tmp_path / "state", model_file(EXTRACTOR)) as opened:
        yield opened


def _teach(session: TeachingSession, shots: int = 4) -> None:
    for kind in KINDS:
        session.add_examples(kind, [render_frame(kind, i) for i in range(shots)])


def test_frames_teach_classes_that_later_frames_are_recognised_as(session):
    _teach(session)
    later = [(kind, render_frame(kind, 50 + i)) for kind in KINDS for i in range(5)]
    right = sum(session.predict(frame).top[0] == kind for kind, frame in later)
    assert right == len(later)
    assert [(c.name, c.examples) for c in session.classes()] == [(k, 4) for k in KINDS]


def test_an_image_folder_source_teaches_and_predicts(session, tmp_path):
    write_image_folder(tmp_path / "frames", [("gear", 4), ("nut", 4)])
    with open_source(tmp_path / "frames") as source:
        frames = list(source)
    session.add_examples("gear", frames[:3])
    session.add_examples("nut", frames[4:7])
    assert session.predict(frames[3]).top[0] == "gear" and session.predict(frames[7]).top[0] == "nut"


def test_the_exported_model_agrees_with_the_session_in_stock_litert(session, tmp_path):
    _teach(session)
    model_path, labels_path = session.export(tmp_path / "export")
    assert labels_path.read_text().split() == ["0", "gear", "1", "washer", "2", "bracket"]
    stock = StockInterpreter(model_path=str(model_path))
    stock.allocate_tensors()
    detail, out = stock.get_input_details()[0], stock.get_output_details()[0]
    for kind in KINDS:
        frame = render_frame(kind, 77)
        stock.set_tensor(detail["index"], resize_array(frame, (224, 224))[np.newaxis])
        stock.invoke()
        scale, zero = out["quantization"]
        scores = scale * (stock.get_tensor(out["index"])[0].astype(np.float64) - zero)
        predicted = session.predict(frame, top_k=3)
        assert KINDS[int(np.argmax(scores))] == predicted.top[0] == kind
        assert abs(float(scores.max()) - predicted.top[1]) < 0.05


def test_every_change_is_kept_when_reopened(session, tmp_path):
    _teach(session, shots=3)
    removed = session.examples("washer")[0].id
    session.remove_example(removed)
    session.rename_class("bracket", "plate")
    session.add_class("empty")
    state = session.store.folder
    session.close()
    with TeachingSession(state) as reopened:
        assert [(c.name, c.examples) for c in reopened.classes()] == [("gear", 3), ("washer", 2), ("plate", 3), ("empty", 0)]
        assert removed not in [e.id for e in reopened.examples()]
        assert reopened.thumbnail(reopened.examples("gear")[0].id)[:2] == b"\xff\xd8"  # a JPEG
        assert reopened.predict(render_frame("bracket", 60)).top[0] == "plate"


def test_undo_remove_and_class_checks(session):
    session.add_examples("gear", render_frame("gear", 0))
    added = session.add_examples("gear", render_frame("gear", 1))[0]
    assert session.undo().id == added.id and session.classes()[0].examples == 1
    with pytest.raises(NotFoundError, match="no class 'nut'"):
        session.remove_class("nut")
    with pytest.raises(TrainingError, match="class name 'ro\\\\nses' holds a control character"):
        session.add_class("ro\nses")
    with pytest.raises(ConflictError, match="'gear' exists already"):
        session.add_class("gear")
    session.remove_class("gear")
    assert session.classes() == [] and session.undo() is None and session.predict(render_frame("gear", 2)).classes == []


def test_leave_one_out_evaluation_and_a_persisted_finetune(session):
    _teach(session)
    session.add_examples("nut", render_frame("nut", 0))
    evaluation = session.evaluate()
    assert evaluation.per_class["nut"] is None and evaluation.per_class["gear"] == 1.0 and evaluation.accuracy == 1.0
    assert np.array(evaluation.confusion).sum() == 13 and any("nut" in note for note in evaluation.notes)
    before = session.predict(render_frame("washer", 90)).top[1]
    result = session.finetune(steps=50)
    assert result["steps"] == 50 and session.store.finetuned_rows()
    after = session.predict(render_frame("washer", 90)).top[1]
    assert after != before


def test_a_state_is_bound_to_its_model(session, model_file):
    folder = session.store.folder
    session.close()
    with pytest.raises(StateError, match="was taught with"):
        TeachingSession(folder, model_file("mobilenet_v1_0.25_128_quant.tflite"))


def test_a_model_written_by_imprint_is_continued(model_file, tmp_path, images_dir):
    data = tmp_path / "data"
    for name in ("cat", "dog"):
        (data / name).mkdir(parents=True)
        for image in images_dir.glob(f"imprinting/{name}_*.bmp"):
            (data / name / image.name).symlink_to(image)
    written = imprint(data, tmp_path / "out", model_file(EXTRACTOR), ImprintOptions(test_ratio=0, progress=False), log=lambda _: None)
    with TeachingSession(tmp_path / "state", written.model_path) as session:
        assert [(c.name, c.examples) for c in session.classes()] == [("cat", 2), ("dog", 2)]
        assert session.predict(images_dir / "imprinting" / "cat_test_0.bmp").top[0] == "cat"
        session.add_examples("hotdog", sorted(images_dir.glob("imprinting/hotdog_train_*.bmp")))
        assert session.predict(images_dir / "imprinting" / "hotdog_test_0.bmp").top[0] == "hotdog"


def test_teaching_and_predicting_from_threads(session):
    session.add_examples("gear", render_frame("gear", 0))
    frames = {kind: [render_frame(kind, i) for i in range(6)] for kind in ("washer", "nut")}
    errors: list[BaseException] = []

    def teach(kind: str) -> None:
        try:
            for frame in frames[kind]:
                session.add_examples(kind, frame)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def predict() -> None:
        try:
            for i in range(10):
                session.predict(render_frame("gear", 20 + i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=teach, args=(k,)) for k in frames] + [threading.Thread(target=predict) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert {c.name: c.examples for c in session.classes()} == {"gear": 1, "washer": 6, "nut": 6}


_KILLED_TEACHER = """
import sys
from lastlayer.images.render import render_frame
from lastlayer.teach.session import TeachingSession
session = TeachingSession(sys.argv[1], sys.argv[2])
for i in range(1000):
    kind = ("gear", "washer")[i % 2]
    example = session.add_examples(kind, render_frame(kind, i))[0]
    print("ack", example.id, flush=True)
"""


@pytest.mark.parametrize("acks_before_kill", [1, 7])
def test_kill_9_while_teaching_loses_no_acknowledged_example(model_file, tmp_path, acks_before_kill):
    state = tmp_path / "state"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_TEACHER, str(state), str(model_file(EXTRACTOR))],
                             stdout=subprocess.PIPE, text=True, env={**os.environ})
    acknowledged = []
    deadline = time.monotonic() + 60
    while len(acknowledged) < acks_before_kill and time.monotonic() < deadline:
        line = child.stdout.readline()
        if line.startswith("ack"):
            acknowledged.append(int(line.split()[1]))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert len(acknowledged) == acks_before_kill
    with TeachingSession(state) as reopened:
        stored = {e.id for e in reopened.examples()}
        assert set(acknowledged) <= stored
        assert sum(c.examples for c in reopened.classes()) == len(stored)


def test_state_folder_that_is_not_a_session_is_refused(tmp_path, model_file):
    folder = tmp_path / "state"
    folder.mkdir()
    (folder / "session.sqlite").write_bytes(b"this is not a database, just text" * 100)
    with pytest.raises(StateError, match="cannot use"):
        TeachingSession(folder, model_file(EXTRACTOR))
    assert Path(folder / "session.sqlite").read_bytes().startswith(b"this is not")


def _probe(session: TeachingSession, units: np.ndarray) -> list[tuple[list[int], list[float]]]:
    return [(p.class_ids, [round(s, 6) for _, s in p.classes]) for p in (session.predict_embedding(u, top_k=10) for u in units)]


def test_sessions_on_one_state_follow_each_other_exactly(model_file, tmp_path):
    """Every change of one session shows in the other after a refresh, exactly as a session opened afresh sees it."""
    rng = np.random.default_rng(0)
    units = rng.normal(size=(40, 1024))
    probes = rng.normal(size=(5, 1024))
    pixels = np.zeros((8, 8, 3), np.uint8)
    with TeachingSession(tmp_path / "state", model_file(EXTRACTOR)) as one, TeachingSession(tmp_path / "state") as two:
        steps = [
            lambda: one.add_examples("gear", [pixels] * 3, embeddings=units[:3]),
            lambda: two.add_examples("washer", [pixels] * 2, embeddings=units[3:5]),
            lambda: one.add_examples("gear", [pixels], embeddings=units[5:6]),  # into a class the head holds
            lambda: two.add_class("empty"),
            lambda: two.remove_example(one.examples("gear")[1].id),
            lambda: one.rename_class("washer", "plate"),
            lambda: two.finetune(steps=20),
            lambda: one.add_examples("plate", [pixels], embeddings=units[6:7]),  # drops the fine-tuned rows
            lambda: two.undo(),
            lambda: one.add_examples("nut", [pixels] * 2, embeddings=units[7:9]),
            lambda: two.remove_class("gear"),
            lambda: one.remove_example(one.examples("nut")[0].id),
        ]
        last = one.revision
        for number, step in enumerate(steps):
            step()
            for follower in (one, two):
                follower.refresh()
                with TeachingSession(tmp_path / "state") as fresh:
                    assert follower.revision == fresh.revision > last
                    assert follower.classes() == fresh.classes() and follower.labels == fresh.labels
                    assert _probe(follower, probes) == _probe(fresh, probes), f"step {number}"
            last = one.revision
        assert [(c.name, c.examples) for c in two.classes()] == [("plate", 2), ("empty", 0), ("nut", 1)]


def test_conflicts_and_deletions_from_another_session_are_named(session, model_file):
    other = TeachingSession(session.store.folder)
    try:
        gear = session.add_class("gear")
        with pytest.raises(ConflictError, match="'gear' exists already"):
            other.add_class("gear")
        other.remove_class("gear")
        with pytest.raises(NotFoundError, match=f"no class {gear.id}"):
            session.add_examples(gear.id, render_frame("gear", 0))
        with pytest.raises(NotFoundError):
            session.rename_class(gear.id, "cog")
        added = session.add_examples("gear", render_frame("gear", 1))  # by name: made again
        other.remove_example(added[0].id)
        with pytest.raises(NotFoundError, match=f"no example {added[0].id}"):
            session.remove_example(added[0].id)
    finally:
        other.close()


def hold_finetunes(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make every fine-tune wait: ``started`` is set once one runs, which goes on when ``finish`` is set."""
    from lastlayer.learn.imprinting import ImprintingHead

    started, finish = threading.Event(), threading.Event()
    original = ImprintingHead.finetune

    def held(head, *args, **kwargs):
        started.set()
        finish.wait(60)
        return original(head, *args, **kwargs)

    monkeypatch.setattr(ImprintingHead, "finetune", held)
    return started, finish


def test_predictions_go_on_during_a_finetune_and_changes_meanwhile_void_it(session, monkeypatch):
    _teach(session, shots=3)
    started, finish = hold_finetunes(monkeypatch)
    outcome: list[object] = []
    tuning = threading.Thread(target=lambda: outcome.append(_outcome(session.finetune, 30)))
    tuning.start()
    assert started.wait(30)
    assert session.predict(render_frame("gear", 60)).top[0] == "gear"  # not waiting for the fine-tune
    session.add_examples("washer", render_frame("washer", 61))  # nor is teaching
    running = tuning.is_alive()
    finish.set()
    tuning.join(60)
    assert running and isinstance(outcome[0], ConflictError) and "changed while fine-tuning" in str(outcome[0])
    assert session.store.finetuned_rows() == {}
    assert session.finetune(steps=30)["steps"] == 30 and session.store.finetuned_rows()


def _outcome(call, *args):
    try:
        return call(*args)
    except Exception as error:  # noqa: BLE001 - the test looks at it
        return error


def test_a_read_only_session_follows_and_changes_nothing(session, tmp_path):
    from lastlayer.teach.store import StateError as StoreStateError

    missing = tmp_path / "misspelt"
    with pytest.raises(StoreStateError, match="no state folder"):
        TeachingSession(missing, read_only=True)
    assert not missing.exists()
    _teach(session, shots=2)
    with TeachingSession(session.store.folder, read_only=True) as watcher:
        assert watcher.predict(render_frame("washer", 50)).top[0] == "washer"
        session.add_examples("nut", [render_frame("nut", i) for i in range(3)])
        watcher.refresh()
        assert watcher.predict(render_frame("nut", 50)).top[0] == "nut"
        for change in (lambda: watcher.add_class("bolt"), lambda: watcher.add_examples("gear", render_frame("gear", 9)),
                       lambda: watcher.undo(), lambda: watcher.finetune(10)):
            with pytest.raises(StoreStateError, match="read-only"):
                change()


def test_an_embedding_already_known_is_stored_instead_of_embedding_again(session, monkeypatch):
    frame = render_frame("gear", 3)
    shown = session.predict(frame)  # what a live loop computed for the frame on screen
    calls: list[int] = []
    original = session.embedder.embed
    monkeypatch.setattr(session.embedder, "embed", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    [added] = session.add_examples("gear", frame, embeddings=[shown.embedding])
    assert not calls and shown.embedding is not None
    stored = session.store.snapshot(every_example=True).examples[0]
    assert stored.id == added.id and np.allclose(stored.embedding, shown.embedding, atol=1e-6)
    session.add_examples("gear", [frame, render_frame("gear", 4)], embeddings=[shown.embedding, None])
    assert len(calls) == 1  # only the frame without one
    with pytest.raises(TrainingError, match="one embedding of 1024 values"):
        session.add_examples("gear", [frame, frame], embeddings=[shown.embedding])
