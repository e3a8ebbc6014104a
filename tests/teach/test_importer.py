"""``lastlayer teach --import DIR``: a folder-per-class photo set into a state, all or nothing, deduplicated by content."""

from __future__ import annotations

import io
import json
import shutil
import sys

import pytest

from lastlayer.cli import main
from lastlayer.errors import ConflictError, DatasetError
from lastlayer.images.render import render_frame, write_image_folder
from lastlayer.teach.importer import import_photos, scan_photos
from lastlayer.teach.session import TeachingSession

from conftest import EXTRACTOR

pytestmark = pytest.mark.shared


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    for kind in ("gear", "washer"):
        write_image_folder(folder / kind, [(kind, 5)])
    shutil.copy(folder / "gear" / "frame_00000.png", folder / "gear" / "again.png")  # the same photo twice
    return folder


def test_a_photo_set_is_imported_once_and_teaches_the_state(model_file, photos, tmp_path):
    lines = []
    with TeachingSession(tmp_path / "state", model_file(EXTRACTOR)) as session:
        session.add_class("washer")
        result = import_photos(session, photos, progress=False, log=lines.append)
        assert result.added == {"gear": 5, "washer": 5} and result.created == ["gear"] and result.repeated == 1
        assert lines == ["11 photos in 2 classes: gear (6), washer (5)"]
        assert [(c.name, c.examples) for c in session.classes()] == [("washer", 5), ("gear", 5)]
        assert all(session.thumbnail(e.id)[:2] == b"\xff\xd8" for e in session.examples())  # a JPEG thumbnail each
        assert session.predict(render_frame("gear", 77)).top[0] == "gear"
        assert session.predict(render_frame("washer", 78)).top[0] == "washer"
        revision = session.revision
        again = import_photos(session, photos, progress=False)  # everything is there already: nothing is stored
        assert again.total == 0 and again.already_there == 11 and session.revision == revision
        session.remove_class("washer")  # a class deleted: its photos are new again
        assert import_photos(session, photos, progress=False).added == {"gear": 0, "washer": 5}


def test_an_unreadable_photo_imports_nothing(model_file, photos, tmp_path):
    (photos / "washer" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a photo")
    with TeachingSession(tmp_path / "state", model_file(EXTRACTOR)) as session:
        revision = session.revision
        with pytest.raises(DatasetError, match=r"1 of the photos of .*photos cannot be read \(.*broken\.jpg.*nothing was imported"):
            import_photos(session, photos, progress=False)
        assert session.classes() == [] and session.revision == revision


def test_a_class_that_cannot_take_photos_rolls_back_the_whole_import(model_file, photos, tmp_path):
    with TeachingSession(tmp_path / "state", model_file(EXTRACTOR)) as session:
        session.store.add_class("washer", trainable=False)  # as a class that came with an imprinted model
        session.refresh()
        with pytest.raises(ConflictError, match="'washer' came with the model"):
            import_photos(session, photos, progress=False)
        assert [c.name for c in session.classes()] == ["washer"] and session.examples() == []  # gear was not created either


def test_the_command_imports_and_checks_the_folder_before_creating_the_state(model_file, photos, tmp_path, capsys):
    state = tmp_path / "state"
    assert main(["teach", "--state", str(tmp_path / "never"), "--import", str(tmp_path / "nosuch")]) == 1
    assert capsys.readouterr().err.strip().endswith("(--import)") and not (tmp_path / "never").exists()
    assert main(["teach", "--state", str(state), "--model", str(model_file(EXTRACTOR)), "--import", str(photos), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"folder": str(photos), "added": {"gear": 5, "washer": 5}, "total": 10,
                                                   "created": ["gear", "washer"], "already_there": 0, "repeated": 1}
    assert main(["teach", "--state", str(state), "--import", str(photos)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"imported 0 photos from {photos}: nothing new; skipped 11 already in the state")


def test_scan_reads_no_state_and_names_a_class_without_photos(tmp_path):
    (tmp_path / "set" / "empty").mkdir(parents=True)
    with pytest.raises(DatasetError, match="has no images"):
        scan_photos(tmp_path / "set")


def test_teach_web_without_the_web_extra_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "starlette", None)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["teach", "--web", "--state", str(tmp_path / "state")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install" in err and not (tmp_path / "state").exists()
