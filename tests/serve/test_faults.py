"""Storage faults get words and lose nothing acknowledged: a full disk (a small tmpfs), a read-only folder, a database
deleted while the server runs. The mounts need root; without it these tests skip with the reason."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from lastlayer.images.render import write_image_folder
from lastlayer.teach.session import TeachingSession
from lastlayer.teach.store import DATABASE_NAME, StateError
from serve.test_api import _upload
from serve.webtools import frame_png

pytestmark = pytest.mark.shared


class Disk:
    """A small tmpfs mounted at ``path`` (unmounted at teardown)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mount(self, size: str, *options: str) -> None:
        subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(self.path)], check=True)

    def remount(self, *options: str) -> None:
        subprocess.run(["mount", "-o", ",".join(["remount", *options]), str(self.path)], check=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path = tmp_path / "disk"
    path.mkdir()
    mounted = Disk(path)
    try:
        mounted.mount("2m")
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot mount a tmpfs here: {error}")
    try:
        yield mounted
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_507_with_the_space_needed_and_loses_nothing_acknowledged(disk, extractor) -> None:
    from starlette.testclient import TestClient

    from lastlayer.serve.app import create_app

    state = disk.path / "state"
    session = TeachingSession(state, extractor)
    app = create_app(session, None, log=lambda line: None)
    client = TestClient(app, base_url="http://127.0.0.1:8765", headers={"X-Lastlayer-Token": "-"})
    acknowledged: list[int] = []
    try:
        gear = client.post("/api/classes", json={"name": "gear"}).json()["class"]["id"]
        photos = [frame_png("gear", i) for i in range(8)]
        for _ in range(200):
            response = _upload(client, gear, *photos)
            if response.status_code != 201:
                break
            acknowledged += [e["id"] for e in response.json()["added"]]
        assert response.status_code == 507, response.text
        error = response.json()["error"]
        assert f"state folder {state} is full" in error and "free at least 1 MiB there and retry" in error
        assert "nothing of this change was stored" in error and acknowledged
        assert client.get("/api/state").status_code == 200  # reads still answer
        disk.remount("size=16m")  # the user frees space: the same server stores again
        again = _upload(client, gear, photos[0])
        assert again.status_code == 201, again.text
        acknowledged += [e["id"] for e in again.json()["added"]]
    finally:
        app.state.feed.stop()
        session.close()
    with TeachingSession(state) as restarted:
        assert set(acknowledged) <= {e.id for e in restarted.examples()}
        assert restarted.classes()[0].examples == len(acknowledged)


def test_the_terminal_stops_with_exit_1_when_the_disk_is_full(disk, extractor, tmp_path) -> None:
    frames = tmp_path / "frames"
    write_image_folder(frames, [("gear", 4)])
    state = disk.path / "state"
    with TeachingSession(state, extractor):
        pass
    terminal = subprocess.Popen([sys.executable, "-m", "lastlayer", "teach", "--state", str(state), "--source", str(frames), "--loop",
                                 "--json"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        terminal.stdin.write("n gear\n")
        for _ in range(3000):
            if terminal.poll() is not None:
                break
            try:
                terminal.stdin.write("1\n")
                terminal.stdin.flush()
            except BrokenPipeError:
                break
            time.sleep(0.02)
        code = terminal.wait(60)
    finally:
        if terminal.poll() is None:
            terminal.kill()
    errors = terminal.stderr.read().strip().splitlines()
    assert code == 1 and len(errors) == 1, errors
    assert errors[0].startswith(f"lastlayer: error: the disk holding state folder {state} is full") and "free at least" in errors[0]
    added = [line for line in terminal.stdout.read().splitlines() if '"event": "added"' in line]
    disk.remount("size=16m")
    with TeachingSession(state) as restarted:
        assert restarted.classes()[0].examples == len(added) > 0  # every acknowledged frame, and nothing else


def test_a_read_only_state_folder_is_refused_at_start(disk, extractor) -> None:
    state = disk.path / "state"
    with TeachingSession(state, extractor) as session:
        session.add_class("gear")
    disk.remount("ro")
    with pytest.raises(StateError, match=f"cannot write to state folder {state} .*Read-only file system"):
        TeachingSession(state)
    done = subprocess.run([sys.executable, "-m", "lastlayer", "teach", "--web", "--state", str(state), "--port", "9"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and str(state) in done.stderr
    with TeachingSession(state, read_only=True) as watcher:  # following it read-only still works
        assert [c.name for c in watcher.classes()] == ["gear"]


def test_a_database_deleted_while_serving_is_reported_not_acknowledged(make_client, session) -> None:
    client = make_client(live=False)
    gear = client.post("/api/classes", json={"name": "gear"}).json()["class"]["id"]
    assert _upload(client, gear, frame_png("gear", 1)).status_code == 201
    for suffix in ("", "-wal", "-shm"):
        Path(f"{session.store.folder / DATABASE_NAME}{suffix}").unlink(missing_ok=True)
    response = _upload(client, gear, frame_png("gear", 2))
    assert response.status_code == 507 and "was deleted or replaced" in response.json()["error"] and "restart" in response.json()["error"]
    assert client.post("/api/classes", json={"name": "washer"}).status_code == 507
