"""Real processes on one teaching state: a web server, a terminal ``teach`` and a ``watch`` follow each other;
a write lock held by another process; SIGTERM while a change waits for it.

The convergence times are printed (run with ``-s``), never asserted: the waits below only poll.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from lastlayer.images.render import render_frame, write_image_folder
from lastlayer.teach.session import TeachingSession
from lastlayer.teach.store import BUSY_MESSAGE, DATABASE_NAME
from serve.webtools import Lines, Server, call, free_port, wait_for
from teach.test_store import hold_write_lock, release

pytestmark = pytest.mark.shared


def _lastlayer(*args: str, stdin: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lastlayer", *args], stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _json(line: str) -> dict:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _send(process: subprocess.Popen, line: str) -> None:
    process.stdin.write(line + "\n")
    process.stdin.flush()


def _stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def test_a_web_server_a_terminal_and_a_watcher_follow_one_state(extractor: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with TeachingSession(state, extractor) as session:
        for kind in ("gear", "washer"):
            session.add_examples(kind, [render_frame(kind, i, seed=5) for i in range(3)])
    nuts = tmp_path / "nuts"
    write_image_folder(nuts, [("nut", 6)])
    server = Server(state, extractor, None, free_port())
    server.start()
    base = server.url.rstrip("/")
    terminal = _lastlayer("teach", "--state", str(state), "--source", str(nuts), "--loop", "--json", stdin=True)
    watcher = _lastlayer("watch", "--state", str(state), "--source", str(nuts), "--loop", "--json", "--window", "1", "--max-fps", "10")
    said, seen = Lines(terminal), Lines(watcher)
    try:
        said.wait_for(lambda line: "classes:" in line, 60, "the terminal to start")
        seen.wait_for(lambda line: _json(line).get("event") == "top_changed", 60, "the watcher's first event")

        # the terminal teaches a class: the web API, its event stream and the watcher see it
        changed: list[tuple[float, int]] = []
        events = threading.Thread(target=_read_changes, args=(base, changed), daemon=True)
        events.start()
        _send(terminal, "n nut")
        said.wait_for(lambda line: _json(line).get("event") == "class", 30, "the new class")
        first = 0.0
        for count in (1, 2, 3):
            _send(terminal, "3")
            said.wait_for(lambda line, count=count: _json(line).get("examples") == count, 30, f"example {count} acknowledged")
            first = first or said.arrived
        acknowledged = said.arrived
        state_now = wait_for(lambda: next((c for c in call(base, "GET", "/api/state")[1]["classes"] if c["name"] == "nut"
                                           and c["examples"] == 3), None), 10, 0.01, "the class on the web")
        on_web = time.time()
        seen.wait_for(lambda line: (_json(line).get("top") or {}).get("label") == "nut", 30, "the watcher to predict nut")
        in_watch = seen.arrived
        revision = call(base, "GET", "/api/state")[1]["revision"]
        wait_for(lambda: any(r >= revision for _, r in changed), 10, 0.01, "a 'changed' event of the server")
        print(f"\nconvergence after the terminal's acknowledgement: web API {on_web - acknowledged:.3f} s, "
              f"'changed' event {min(t for t, r in changed if r >= revision) - acknowledged:.3f} s, "
              f"watcher's prediction {in_watch - first:.3f} s after the first example")

        # a name taken by the web is a conflict in the terminal, which goes on
        assert call(base, "POST", "/api/classes", {"name": "bolt"})[0] == 201
        _send(terminal, "n bolt")
        refused = _json(said.wait_for(lambda line: "error" in _json(line), 30, "the conflict"))
        assert "'bolt' exists already" in refused["error"]

        # deleted by one process: not found in the others
        _send(terminal, "u")
        undone = _json(said.wait_for(lambda line: _json(line).get("event") == "undo", 30, "the undo"))["message"]
        example = int(undone.split()[-1])
        status, answer = call(base, "DELETE", f"/api/examples/{example}")
        assert status == 404 and f"no example {example}" in answer["error"]
        nut = state_now["id"]
        assert call(base, "DELETE", f"/api/classes/{nut}")[0] == 200
        _send(terminal, "p")  # the terminal is still alive and answering
        said.wait_for(lambda line: _json(line).get("event") == "prediction", 30, "the terminal to answer")
        with TeachingSession(state) as python:  # the Python API, a fourth process
            with pytest.raises(LookupError, match=f"no class {nut}"):
                python.add_examples(nut, render_frame("nut", 1))
            assert [c.name for c in python.classes()] == ["gear", "washer", "bolt"]
        _send(terminal, "q")
        assert terminal.wait(30) == 0
    finally:
        for process in (terminal, watcher):
            if process.poll() is None:
                process.kill()
        server.kill()


def _read_changes(base: str, changed: list[tuple[float, int]]) -> None:
    """Arrival time and revision of each ``changed`` Server-Sent Event (runs until the server goes)."""
    request = urllib.request.Request(base + "/api/events", headers={"X-Lastlayer-Token": "-"})
    try:
        with urllib.request.urlopen(request, timeout=60) as stream:
            name = None
            for raw in stream:
                line = raw.decode().strip()
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name == "changed":
                    changed.append((time.time(), json.loads(line[6:])["revision"]))
    except OSError:
        return


def test_a_server_answers_while_another_process_holds_the_write_lock(extractor: Path, tmp_path: Path) -> None:
    server = Server(tmp_path / "state", extractor, None, free_port(), "--busy-timeout", "1")
    server.start()
    base = server.url.rstrip("/")
    try:
        assert call(base, "POST", "/api/classes", {"name": "gear"})[0] == 201
        holder = hold_write_lock(tmp_path / "state" / DATABASE_NAME)
        try:
            started = time.perf_counter()
            status, state = call(base, "GET", "/api/state")
            read = time.perf_counter() - started
            assert status == 200 and [c["name"] for c in state["classes"]] == ["gear"]
            assert urllib.request.urlopen(server.url + "static/app.js", timeout=10).status == 200
            status, answer = call(base, "POST", "/api/classes", {"name": "washer"})
            assert status == 503 and answer["error"] == BUSY_MESSAGE
            print(f"\nwhile another process holds the write lock: GET /api/state {read * 1000:.1f} ms, a change refused with 503")
        finally:
            release(holder)
        assert call(base, "POST", "/api/classes", {"name": "washer"})[0] == 201  # works again at once
    finally:
        server.kill()


def test_sigterm_stops_a_server_whose_change_waits_for_the_lock(extractor: Path, tmp_path: Path) -> None:
    server = Server(tmp_path / "state", extractor, None, free_port(), "--busy-timeout", "3600")
    server.start()
    base = server.url.rstrip("/")
    holder = hold_write_lock(tmp_path / "state" / DATABASE_NAME)
    try:
        waiting = threading.Thread(target=lambda: _ignore_errors(call, base, "POST", "/api/classes", {"name": "gear"}), daemon=True)
        waiting.start()
        time.sleep(1.0)  # the change is now waiting for the lock (for up to an hour)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0  # (a generous bound: the wait would otherwise last an hour)
        assert "server stopped" in server.process.stdout.read()
    finally:
        server.kill()
        release(holder)


def _ignore_errors(function, *args) -> None:
    with contextlib.suppress(OSError, ValueError):  # the server stops under it
        function(*args)


def test_sigterm_stops_a_server_during_a_long_finetune(extractor: Path, tmp_path: Path) -> None:
    with TeachingSession(tmp_path / "state", extractor) as session:
        for kind in ("gear", "washer"):
            session.add_examples(kind, [render_frame(kind, i) for i in range(2)])
    server = Server(tmp_path / "state", extractor, None, free_port(), "--hold-finetunes")
    server.start()
    lines = Lines(server.process)
    try:
        threading.Thread(target=lambda: _ignore_errors(call, server.url.rstrip("/"), "POST", "/api/finetune", {"steps": 5000}),
                         daemon=True).start()
        lines.wait_for(lambda line: line == "fine-tuning", 30, "the fine-tune to start")  # it would now last an hour
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        lines.wait_for(lambda line: line == "server stopped", 10, "the server to say it stopped")
    finally:
        server.kill()
    with TeachingSession(tmp_path / "state") as reopened:
        assert reopened.store.finetuned_rows() == {}  # the interrupted fine-tune stored nothing

