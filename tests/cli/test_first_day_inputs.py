"""The bad inputs a first day at the line met: each is one line (exit 1) found before any work, and nothing is left behind.

A read-only file system under ``cut``, a two-input model under ``train -e``, an output path that is a file, copies of
one unreadable photo, a ``--compare`` model without a class of the data, a ``--record-class`` that no prediction can
name, and folders given to ``classify``.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lastlayer.jobs.evaluate as evaluate_job
from lastlayer.cli import main
from lastlayer.images.render import write_image_folder
from lastlayer.model.edit import add_tensor
from model.validation_cases import accepts, tree

from conftest import CLASSIFIER_V2, EXTRACTOR

pytestmark = pytest.mark.shared
SMALL = "mobilenet_v1_0.25_128_quant.tflite"


def _errors(err: str) -> list[str]:
    return [line for line in err.strip().splitlines() if line]


def _parts(folder: Path, count: int = 4) -> Path:
    for kind in ("gear", "washer"):
        write_image_folder(folder / kind, [(kind, count)])
    return folder


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_cut_to_a_read_only_file_system_is_one_line(model_file, tmp_path, capsys, monkeypatch):
    """The writes and the clean-up both fail as on a read-only mount (EROFS): the error is the write's, in one line."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("lastlayer.files.outputs._write_temp", read_only)
    monkeypatch.setattr(pathlib.Path, "unlink", read_only)
    target = tmp_path / "extractor.tflite"
    assert main(["cut", str(model_file(SMALL)), "-o", str(target)]) == 1
    err = _errors(capsys.readouterr().err)
    assert err == [f"lastlayer: error: cannot write {target}: Read-only file system; choose a writable output path (--output)"]


def test_cut_to_a_read_only_mount(model_file, tmp_path):
    """The same on a real read-only tmpfs (needs root to mount; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        done = subprocess.run([sys.executable, "-m", "lastlayer", "cut", str(model_file(SMALL)),
                               "-o", str(mount / "x.tflite")], capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    assert done.returncode == 1 and _errors(done.stderr) == [
        f"lastlayer: error: cannot write {mount / 'x.tflite'}: Read-only file system; choose a writable output path (--output)"]


def test_a_two_input_model_given_to_train_is_one_error(tmp_path, capsys):
    model = tree(EXTRACTOR)
    graph = model.subgraphs[0]
    graph.inputs = [graph.inputs[0], add_tensor(model, "second input", [1, 4], np.float32)]
    path = accepts(model, tmp_path, "two_inputs.tflite")
    data = _parts(tmp_path / "parts", 2)
    assert main(["train", str(data), "-o", str(tmp_path / "out"), "-e", str(path)]) == 1
    assert _errors(capsys.readouterr().err) == [
        f"lastlayer: error: {path} has 2 inputs; lastlayer needs a model with one image input (--extractor)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("verb", ["train", "imprint"])
def test_an_output_path_that_is_a_file_is_refused_before_any_image_is_embedded(verb, model_file, tmp_path, capsys):
    data = _parts(tmp_path / "parts", 2)
    (data / "gear" / "broken.jpg").write_bytes(b"not a picture")  # embedding it would warn: it must not be reached
    (tmp_path / "out").write_text("a file")
    assert main([verb, str(data), "-o", str(tmp_path / "out")]) == 1
    assert _errors(capsys.readouterr().err) == [
        f"lastlayer: error: output folder {tmp_path / 'out'} is a file, not a folder; choose another output folder or remove the file "
        "(--output)"]
    assert not list(Path(os.environ["LASTLAYER_CACHE"]).rglob("*.sqlite3"))  # nothing embedded, nothing cached


def test_evaluate_report_dir_below_a_file_is_refused_before_the_evaluation(model_file, tmp_path, capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(evaluate_job, "extract_embeddings", lambda *a, **k: ran.append(1))
    (tmp_path / "f").write_text("a file")
    data = _parts(tmp_path / "parts", 2)
    assert main(["evaluate", str(model_file(CLASSIFIER_V2)), str(data), "--report-dir", str(tmp_path / "f" / "eval")]) == 1
    assert "is a file; choose another output folder" in capsys.readouterr().err and ran == []


def test_copies_of_one_unreadable_photo_warn_once_and_are_all_skipped(model_file, tmp_path, capsys):
    data = _parts(tmp_path / "parts", 3)
    for copy in ("gear/broken.jpg", "gear/broken_2.jpg", "washer/broken_3.jpg"):
        (data / copy).write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    assert main(["train", str(data), "-o", str(tmp_path / "out"), "--json"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "skipped unreadable image" in line]
    assert len(warnings) == 1 and "broken.jpg" in warnings[0], captured.err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert sorted(Path(p).name for p in report["unreadable"]) == ["broken.jpg", "broken_2.jpg", "broken_3.jpg"]


def test_compare_with_a_model_missing_a_class_fails_before_the_first_evaluation(model_file, tmp_path, capsys, monkeypatch):
    data = _parts(tmp_path / "parts", 2)
    assert main(["imprint", str(data), "-o", str(tmp_path / "parts-model"), "--quiet"]) == 0
    ran = []
    real = evaluate_job.extract_embeddings
    monkeypatch.setattr(evaluate_job, "extract_embeddings", lambda *a, **k: ran.append(1) or real(*a, **k))
    other = model_file(CLASSIFIER_V2)  # ImageNet's classes: no 'gear', no 'washer'
    assert main(["evaluate", str(tmp_path / "parts-model" / "model.tflite"), str(data), "--compare", str(other)]) == 1
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and "class folder(s) gear, washer are not classes of" in err[0] and str(other) in err[0]
    assert ran == []  # refused before the first model ran on a single image


def test_watch_refuses_a_record_class_no_prediction_can_name(model_file, tmp_path, capsys):
    from lastlayer.images.render import render_frame
    from lastlayer.teach.session import TeachingSession

    frames = _parts(tmp_path / "frames", 2) / "gear"
    state = tmp_path / "state"
    with TeachingSession(state, model_file(EXTRACTOR)) as session:
        session.add_examples("gear", [render_frame("gear", 1)])
    before = _files(tmp_path)
    for source in (["--state", str(state)], ["--model", str(model_file(SMALL))]):
        argv = ["watch", *source, "--source", str(frames), "--record", str(tmp_path / "rec"), "--record-class", "nosuch"]
        assert main(argv) == 1
        err = _errors(capsys.readouterr().err)
        assert len(err) == 1 and err[0].startswith("lastlayer: error: there is no class 'nosuch' to record; the classes are: ")
        assert err[0].endswith("(--record-class)") and ("'gear'" in err[0] or "and 991 more" in err[0])
    assert _files(tmp_path) == before  # no record folder, nothing else
    assert main(["watch", "--state", str(state), "--source", str(frames), "--record", str(tmp_path / "rec"),
                 "--record-class", "gear", "--json", "--window", "1"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["recorded"] == 2


def test_classify_takes_folders_recursively_in_sorted_order(model_file, tmp_path, capsys):
    photos = tmp_path / "photos"
    write_image_folder(photos / "b", [("gear", 2)])
    write_image_folder(photos / "a" / "deeper", [("washer", 1)])
    (photos / ".hidden").mkdir()
    write_image_folder(photos / ".hidden", [("gear", 1)])
    (photos / "notes.txt").write_text("not an image")
    single = tmp_path / "single.png"
    single.write_bytes((photos / "b" / "frame_00000.png").read_bytes())
    assert main(["classify", "-m", str(model_file(SMALL)), str(photos), str(single), "--json"]) == 0
    images = [result["image"] for result in json.loads(capsys.readouterr().out)["results"]]
    assert images == [str(photos / "a" / "deeper" / "frame_00000.png"), str(photos / "b" / "frame_00000.png"),
                      str(photos / "b" / "frame_00001.png"), str(single)]
    (tmp_path / "empty").mkdir()
    assert main(["classify", "-m", str(model_file(SMALL)), str(tmp_path / "empty")]) == 1
    assert _errors(capsys.readouterr().err) == [
        f"lastlayer: error: folder {tmp_path / 'empty'} holds no images (.jpg, .png, ...); give image files or a folder of them (IMAGE)"]
