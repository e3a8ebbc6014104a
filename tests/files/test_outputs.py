"""Atomic single files and all-or-nothing file sets: permissions, stale temps, interrupted commits."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lastlayer.errors import OutputError
from lastlayer.files.outputs import JOURNAL_NAME, OutputSet, atomic_write_bytes, recover_folder, signals_held, temp_name


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_new_files_get_the_umask_permissions(tmp_path, umask_022):
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    with OutputSet(tmp_path / "out") as out:
        out.add_text("labels.txt", "0 a\n")
        out.commit()
    assert _mode(tmp_path / "a.bin") == 0o644 and _mode(tmp_path / "out" / "labels.txt") == 0o644
    os.umask(0o077)
    atomic_write_bytes(tmp_path / "b.bin", b"x")
    assert _mode(tmp_path / "b.bin") == 0o600


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_an_overwritten_file_keeps_its_mode(tmp_path, umask_022, mode):
    single, member = tmp_path / "model.tflite", tmp_path / "labels.txt"
    for path in (single, member):
        path.write_bytes(b"old")
        path.chmod(mode)
    atomic_write_bytes(single, b"new")
    with OutputSet(tmp_path) as out:
        out.add_text("labels.txt", "new")
        out.commit()
    assert (_mode(single), _mode(member)) == (mode, mode)
    assert single.read_bytes() == b"new" and member.read_text() == "new"


def test_a_set_is_committed_together_and_an_old_extra_file_is_removed(tmp_path):
    (tmp_path / "confusion.png").write_bytes(b"old png")
    with OutputSet(tmp_path) as out:
        out.add_bytes("model.tflite", b"M")
        out.staging_path("labels.txt").write_text("L")  # a writer that wants a path
        out.remove("confusion.png")
        assert not (tmp_path / "model.tflite").exists()  # nothing visible before the commit
        written = out.commit()
    assert sorted(written) == ["labels.txt", "model.tflite"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.txt", "model.tflite"]


def test_an_error_before_the_commit_leaves_nothing_behind(tmp_path):
    target = tmp_path / "new" / "deeper"
    with pytest.raises(RuntimeError), OutputSet(target) as out:
        out.add_bytes("model.tflite", b"M")
        raise RuntimeError("model could not be built")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "model.tflite").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), OutputSet(tmp_path / "kept") as out:
        out.add_bytes("model.tflite", b"new")
        raise KeyboardInterrupt
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["model.tflite"]
    assert (tmp_path / "kept" / "model.tflite").read_bytes() == b"old"


def test_stale_temps_of_dead_writers_go_and_live_ones_stay(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    stale = tmp_path / f".model.tflite.{dead}.0123abcd.tmp"
    live = tmp_path / f".model.tflite.{alive}.0123abcd.tmp"
    own = tmp_path / temp_name("report.json")
    foreign = tmp_path / f".model.tflite.{dead}.notours.tmp"
    for path in (stale, live, own, foreign):
        path.write_bytes(b"partial")
    atomic_write_bytes(tmp_path / "model.tflite", b"M")
    assert not stale.exists() and live.exists() and own.exists() and foreign.exists()
    stale.write_bytes(b"partial")
    with OutputSet(tmp_path) as out:
        out.add_bytes("labels.txt", b"L")
        out.commit()
    assert not stale.exists() and live.exists() and own.exists()


def test_output_paths_that_are_folders_or_files_are_refused(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(OutputError, match=r"dir is a folder; give a file name"):
        atomic_write_bytes(tmp_path / "dir", b"x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"file is a file, not a folder"), OutputSet(tmp_path / "file"):
        pass
    with pytest.raises(OutputError, match=r"folder .*file is a file, not a folder"):
        atomic_write_bytes(tmp_path / "file" / "m.tflite", b"x")


def test_signals_are_held_during_a_commit_and_delivered_after(tmp_path):
    with pytest.raises(KeyboardInterrupt), signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        (tmp_path / "done").write_text("the block finished")
    assert (tmp_path / "done").exists()


_KILLED_MID_COMMIT = """
import os, signal, sys
from lastlayer.files import outputs as files
real = os.replace
count = {"n": 0}
def replace(a, b):
    real(a, b)
    if not str(b).endswith(files.JOURNAL_NAME):
        count["n"] += 1
        if count["n"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
files.os.replace = replace
with files.OutputSet(sys.argv[1]) as out:
    for name in ("model.tflite", "labels.txt", "report.json"):
        out.add_text(name, "new " + name)
    out.commit()
"""


def test_a_commit_killed_between_renames_is_rolled_forward_by_the_next_writer(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("model.tflite", "labels.txt", "report.json"):
        (out / name).write_text("old " + name)
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(_KILLED_MID_COMMIT))
    run = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL, run.stderr
    contents = {p.name: p.read_text() for p in out.iterdir() if not p.name.startswith(".")}
    assert sorted(contents.values()) == ["new labels.txt", "new model.tflite", "old report.json"]  # mixed until recovered
    assert (out / JOURNAL_NAME).exists()
    assert recover_folder(out)
    assert sorted(p.name for p in out.iterdir()) == ["labels.txt", "model.tflite", "report.json"]
    assert all(p.read_text().startswith("new ") for p in out.iterdir())
