"""A teaching session that keeps a classifier's own classes: they rank with the state's new classes, take no
examples, and the export is the classifier with the new classes appended, its own layer bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lastlayer.errors import ConflictError, ModelError, TrainingError
from lastlayer.images.decode import load_image
from lastlayer.images.render import render_frame, write_image_folder
from lastlayer.jobs.imprint import ImprintOptions, imprint
from lastlayer.model.file import ModelFile
from lastlayer.runtime.predictor import ModelPredictor
from lastlayer.teach.kept import KeptEvaluation, Origin
from lastlayer.teach.session import ClassInfo, TeachingSession
from lastlayer.teach.store import StateError
from model.test_keep import _class_layer
from teach.test_session import _probe

from conftest import CLASSIFIER_V2, EXTRACTOR

NEW = ("gear", "washer")
OWN = 1001  # mobilenet_v2_1.0_224_quant's classes (background + ImageNet)
pytestmark = pytest.mark.shared


def _kept(model_file, folder) -> TeachingSession:
    return TeachingSession(folder, model_file(CLASSIFIER_V2), keep_classes=True)


def _teach(session: TeachingSession, shots: int = 4) -> None:
    for kind in NEW:
        session.add_examples(kind, [render_frame(kind, i) for i in range(shots)])


def _pixels(path) -> np.ndarray:
    return np.asarray(load_image(path))


def test_predictions_rank_the_classifiers_own_classes_with_the_new_ones(model_file, images_dir, tmp_path):
    cat = _pixels(images_dir / "cat.bmp")
    original = ModelPredictor(model_file(CLASSIFIER_V2)).predict(cat, top_k=1)
    with _kept(model_file, tmp_path / "state") as session:
        untaught = session.predict(cat)  # before any new class: the model's own answer
        assert (untaught.top[0], untaught.class_ids[0]) == (original.top[0], original.class_ids[0])
        _teach(session)
        kept = session.predict(cat, top_k=5)
        assert (kept.top[0], kept.class_ids[0]) == (original.top[0], original.class_ids[0])
        assert kept.top[1] == pytest.approx(untaught.top[1], abs=0.02)
        for kind in NEW:
            for index in (50, 51, 52):
                predicted = session.predict(render_frame(kind, index))
                assert predicted.top[0] == kind and predicted.class_ids[0] >= OWN
        assert [(c.name, c.examples, c.trainable) for c in session.classes()] == [(k, 4, True) for k in NEW]
        assert all(c.id >= OWN for c in session.classes())
        own = session.own_classes()
        assert len(own) == OWN and not any(c.trainable for c in own) and own[original.class_ids[0]].name == original.top[0]
        assert session.labels == [c.name for c in own] + list(NEW)


def test_the_classifiers_own_classes_take_no_examples(model_file, tmp_path):
    with _kept(model_file, tmp_path / "state") as session:
        _teach(session, shots=2)
        tabby = session.class_info("tabby, tabby cat")
        assert tabby == ClassInfo(tabby.id, "tabby, tabby cat", 0, trainable=False) and tabby.id < OWN
        assert session.class_info(tabby.id) == tabby and session.examples(tabby.id) == []
        for change in (lambda: session.add_examples(tabby.id, render_frame("gear", 9)),
                       lambda: session.add_examples("tabby, tabby cat", render_frame("gear", 9)),
                       lambda: session.rename_class(tabby.id, "kitty"), lambda: session.remove_class(tabby.id)):
            with pytest.raises(ConflictError, match="'tabby, tabby cat' came with the model"):
                change()
        for change in (lambda: session.add_class("tabby, tabby cat"), lambda: session.rename_class("gear", "tabby, tabby cat")):
            with pytest.raises(ConflictError, match="one of the model's own classes"):
                change()
        assert [(c.name, c.examples) for c in session.classes()] == [("gear", 2), ("washer", 2)]
        assert len(session.examples()) == 4


def test_the_export_keeps_the_classifier_bit_exact_and_is_continued(model_file, images_dir, tmp_path):
    base = ModelFile.read(model_file(CLASSIFIER_V2))
    probes = [_pixels(images_dir / "cat.bmp"), render_frame("gear", 60), render_frame("washer", 61)]
    with _kept(model_file, tmp_path / "state") as session:
        _teach(session)
        model_path, labels_path = session.export(tmp_path / "export")
        assert session.export_bytes() == model_path.read_bytes()
        expected = [session.predict(probe) for probe in probes]
    exported = ModelFile.read(model_path)
    assert _class_layer(exported) == _class_layer(base)  # the original rows, biases and quantization, byte for byte
    names = [line.split(maxsplit=1)[1] for line in labels_path.read_text().splitlines()]
    assert names == base.label_list(OWN) + list(NEW) == exported.label_list(OWN + 2)
    saved = ModelPredictor(model_path)
    for probe, prediction in zip(probes, expected):  # the saved model (uint8) scores as the session (float)
        scored = saved.predict(probe)
        assert scored.top[0] == prediction.top[0] and scored.top[1] == pytest.approx(prediction.top[1], abs=0.02)

    # A new state on the exported model imports its new classes and keeps the original ones.
    with TeachingSession(tmp_path / "again", model_path) as again:
        assert again.origin() == Origin(model_path.name, "classifier", OWN, True, False)
        assert [(c.name, c.examples) for c in again.classes()] == [(k, 4) for k in NEW]
        for probe, prediction in zip(probes, expected):
            continued = again.predict(probe)
            assert continued.class_ids == prediction.class_ids
            assert [score for _, score in continued.classes] == pytest.approx([score for _, score in prediction.classes], abs=1e-9)
        again.add_examples("nut", [render_frame("nut", i) for i in range(3)])
        again.add_examples("gear", render_frame("gear", 20))
        assert [(c.name, c.examples) for c in again.classes()] == [("gear", 5), ("washer", 4), ("nut", 3)]
        assert again.predict(render_frame("nut", 70)).top[0] == "nut"
        continued, _ = again.export(tmp_path / "export-again")
    # ... and `imprint --resume` adds a class to it, the original layer still bit for bit.
    data = tmp_path / "data" / "bracket"
    write_image_folder(data, [("bracket", 4)])
    written = imprint(data.parent, tmp_path / "resumed", resume=continued, options=ImprintOptions(progress=False),
                      log=lambda _: None)
    resumed = ModelFile.read(written.model_path)
    assert resumed.label_list(OWN + 4)[OWN:] == ["gear", "washer", "nut", "bracket"]
    assert _class_layer(resumed) == _class_layer(base)


_OTHER_PROCESS = """
import sys
from lastlayer.images.render import render_frame
from lastlayer.teach.session import TeachingSession
with TeachingSession(sys.argv[1]) as session:
    session.add_examples("nut", [render_frame("nut", i) for i in range(4)])
    print(session.origin().kept, session.class_info("nut").id, flush=True)
"""


def test_a_kept_state_is_followed_by_another_process_and_reopened(model_file, images_dir, tmp_path):
    state = tmp_path / "state"
    cat = _pixels(images_dir / "cat.bmp")
    with _kept(model_file, state) as session, TeachingSession(state, read_only=True) as watcher:
        _teach(session, shots=3)
        other = subprocess.run([sys.executable, "-c", _OTHER_PROCESS, str(state)], capture_output=True, text=True, timeout=300,
                               env={**os.environ})
        assert other.returncode == 0, other.stderr
        kept, nut = other.stdout.split()
        assert kept == "True" and int(nut) >= OWN
        for follower in (session, watcher):
            follower.refresh()
            predicted = follower.predict(render_frame("nut", 50))
            assert (predicted.top[0], predicted.class_ids[0]) == ("nut", int(nut))
        top = session.predict(cat).top[0]
    with TeachingSession(state) as reopened:
        assert reopened.origin() == Origin(CLASSIFIER_V2, "classifier", OWN, True, False)
        assert [c.name for c in reopened.classes()] == [*NEW, "nut"]
        assert reopened.predict(cat).top[0] == top and reopened.predict(render_frame("washer", 50)).top[0] == "washer"


def test_sessions_on_a_kept_state_follow_each_other_exactly(model_file, tmp_path):
    """Every change of one session (removals rebuild the kept head) shows in the other as in a session opened afresh."""
    rng = np.random.default_rng(0)

    def relu6(count: int) -> np.ndarray:  # embeddings as the extractor gives them: non-negative, sparse, up to 6
        return np.clip(rng.normal(0.5, 2.0, size=(count, 1280)), 0, 6)

    vectors, probes = relu6(40), relu6(6)
    pixels = np.zeros((8, 8, 3), np.uint8)
    with _kept(model_file, tmp_path / "state") as one, TeachingSession(tmp_path / "state") as two:
        steps = [
            lambda: one.add_examples("gear", [pixels] * 3, embeddings=vectors[:3]),
            lambda: two.add_examples("washer", [pixels] * 2, embeddings=vectors[3:5]),
            lambda: one.add_examples("gear", [pixels], embeddings=vectors[5:6]),  # into a class the head holds
            lambda: two.add_class("empty"),
            lambda: two.remove_example(one.examples("gear")[1].id),
            lambda: one.rename_class("washer", "disc"),
            lambda: one.add_examples("disc", [pixels], embeddings=vectors[6:7]),
            lambda: two.undo(),
            lambda: one.add_examples("nut", [pixels] * 2, embeddings=vectors[7:9]),
            lambda: two.remove_class("gear"),
            lambda: one.remove_example(one.examples("nut")[0].id),
        ]
        for number, step in enumerate(steps):
            step()
            with TeachingSession(tmp_path / "state") as fresh:
                for follower in (one, two):
                    follower.refresh()
                    assert follower.revision == fresh.revision and follower.classes() == fresh.classes()
                    assert follower.labels == fresh.labels and len(follower.labels) == OWN + len(
                        [c for c in fresh.classes() if c.examples])
                    assert _probe(follower, probes) == _probe(fresh, probes), f"step {number}"
        assert [(c.name, c.examples) for c in two.classes()] == [("disc", 2), ("empty", 0), ("nut", 1)]


def test_keeping_is_refused_without_a_class_layer_and_once_the_state_holds_a_class(model_file, tmp_path):
    with pytest.raises(ModelError, match="embedding extractor: it has no classes to keep"):
        TeachingSession(tmp_path / "x", model_file(EXTRACTOR), keep_classes=True)
    with pytest.raises(StateError, match="no model recorded"):  # nothing was recorded
        TeachingSession(tmp_path / "x", read_only=True)
    with TeachingSession(tmp_path / "x", model_file(EXTRACTOR)) as plain:
        assert plain.origin() == Origin(EXTRACTOR, "extractor", 0, False, False)
        with pytest.raises(ModelError, match="no classes to keep"):
            plain.keep_model_classes()

    frame = render_frame("gear", 3)
    with TeachingSession(tmp_path / "y", model_file(CLASSIFIER_V2)) as session, TeachingSession(tmp_path / "y") as other:
        assert session.origin() == Origin(CLASSIFIER_V2, "classifier", OWN, False, True)
        assert session.predict(frame).classes == []  # without keeping, the classifier's classes are dropped
        assert session.keep_model_classes().kept
        answer = session.predict(frame)
        assert answer.class_ids[0] < OWN  # the model's own answer
        other.refresh()  # another session on the state follows
        assert other.origin().kept and other.predict(frame).classes == answer.classes
        session.add_class("gear")
        assert session.origin() == Origin(CLASSIFIER_V2, "classifier", OWN, True, False)
        with pytest.raises(ConflictError, match="holds classes already"):
            session.keep_model_classes(False)
    with pytest.raises(StateError, match="while keeping the classes of .*use a new state folder"):
        TeachingSession(tmp_path / "y", keep_classes=False)
    with TeachingSession(tmp_path / "z", model_file(CLASSIFIER_V2)) as session:
        session.add_class("gear")
    with pytest.raises(StateError, match="without keeping the classes"):
        TeachingSession(tmp_path / "z", keep_classes=True)
    with TeachingSession(tmp_path / "z") as session:  # (the refusals changed nothing)
        assert not session.origin().kept and [c.name for c in session.classes()] == ["gear"]


def test_an_embedding_made_before_keeping_is_made_again(model_file, tmp_path):
    with TeachingSession(tmp_path / "state", model_file(CLASSIFIER_V2)) as session:
        frame = render_frame("gear", 1)
        shown = session.predict(frame)  # (a live loop's frame, predicted before the page kept the classes)
        assert np.linalg.norm(shown.embedding) == pytest.approx(1.0)
        session.keep_model_classes()
        session.add_examples("gear", frame, embeddings=[shown.embedding])
        stored = session.store.snapshot(every_example=True).examples[0].embedding
        assert np.linalg.norm(stored) > 2 and np.allclose(stored, session.embed(frame), rtol=1e-5)


def test_the_evaluation_reports_leave_one_out_and_how_the_own_classes_fared(model_file, images_dir, tmp_path):
    hotdogs = sorted(images_dir.glob("imprinting/hotdog_train_*.bmp"))
    with _kept(model_file, tmp_path / "state") as session:
        session.add_examples("hotdog", hotdogs)
        _teach(session, shots=3)
        evaluation = session.evaluate()
        assert isinstance(evaluation, KeptEvaluation)
        report = evaluation.to_dict()
        assert report["labels"] == ["hotdog", *NEW] and report["examples"] == len(hotdogs) + 6
        assert set(report["per_class"]) == {"hotdog", *NEW} and 0 <= report["accuracy"] <= 1
        kept = report["kept"]
        assert (kept["original_classes"], kept["new_classes"], kept["shots_total"]) == (OWN, 3, len(hotdogs) + 6)
        hotdog = next(shot for shot in kept["shots"] if shot["label"] == "hotdog")
        # pictures of an ImageNet class taught as a new class: the report names the original class they look like
        assert hotdog["original_top"] == "hotdog, hot dog, red hot" and hotdog["looks_like_original"]
        assert any("'hotdog' looks like the original class 'hotdog, hot dog, red hot'" in w for w in kept["warnings"])
        still_own = sum(session.predict(path).class_ids[0] < OWN for path in hotdogs)
        assert hotdog["kept_by_original"] == still_own
        with pytest.raises(TrainingError, match="not fine-tuned"):
            session.finetune(10)


def test_teach_keep_classes_on_the_command_line_and_watch_the_state(model_file, images_dir, tmp_path, capsys):
    from lastlayer.cli import main

    frames = tmp_path / "gears"
    write_image_folder(frames, [("gear", 3)])
    refused = subprocess.run([sys.executable, "-m", "lastlayer", "teach", "--keep-classes", "--model", str(model_file(EXTRACTOR)),
                              "--state", str(tmp_path / "x"), "--source", str(frames)], input="q\n", capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("lastlayer: error: ") and "no classes to keep (--keep-classes)" in refused.stderr
    state = tmp_path / "state"
    done = subprocess.run([sys.executable, "-m", "lastlayer", "teach", "--keep-classes", "--model", str(model_file(CLASSIFIER_V2)),
                           "--state", str(state), "--source", str(frames), "--json"], input="q\n", capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    with TeachingSession(state) as session:
        assert session.origin().kept
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "cat.bmp").symlink_to(images_dir / "cat.bmp")
    expected = ModelPredictor(model_file(CLASSIFIER_V2)).predict(_pixels(images_dir / "cat.bmp")).top[0]
    assert main(["watch", "--state", str(state), "--source", str(pictures), "--json"]) == 0
    changes = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert changes[0]["top"]["label"] == expected  # nothing taught yet: the classifier's own answer


def test_a_kept_state_without_a_class_of_its_own_has_nothing_to_export(model_file, tmp_path):
    with _kept(model_file, tmp_path / "state") as session:
        assert len(session.own_classes()) > 0  # the model's classes rank in predictions...
        with pytest.raises(ConflictError, match="nothing to export yet"):  # ...but the export is the classifier as it was
            session.export_bytes()
        session.add_examples("gear", [render_frame("gear", 0)])
        assert session.export_bytes()[4:8] == b"TFL3"
