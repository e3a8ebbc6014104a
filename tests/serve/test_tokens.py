"""The access token kept out of ``ps`` and other ports: from an environment variable or a 0600 file, a random one saved
0600 whatever the umask, and a cookie that is valid on this server's port only."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lastlayer.errors import LastLayerError
from lastlayer.serve.security import cookie_name, cookie_value, read_token_file, write_token_file
from serve.webtools import Lines, free_port, read_url

TOKEN = "env-token-0123456789abcdef"


def test_token_file_is_read_only_when_private(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\nignored\n")
    path.chmod(0o600)
    assert read_token_file(str(path)) == TOKEN
    path.chmod(0o640)
    with pytest.raises(LastLayerError, match=r"readable by other users; run: chmod 600 .*token"):
        read_token_file(str(path))
    path.write_text("\n")
    path.chmod(0o600)
    with pytest.raises(LastLayerError, match="is empty"):
        read_token_file(str(path))
    with pytest.raises(LastLayerError, match="cannot read the token file"):
        read_token_file(str(tmp_path / "missing"))


def test_a_written_token_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    saved = os.umask(0)
    try:
        write_token_file(str(tmp_path / "web-token"), TOKEN)
    finally:
        os.umask(saved)
    assert stat.S_IMODE((tmp_path / "web-token").stat().st_mode) == 0o600
    assert read_token_file(str(tmp_path / "web-token")) == TOKEN
    assert [p.name for p in tmp_path.iterdir()] == ["web-token"]


@pytest.mark.shared
def test_the_cookie_holds_no_token_and_works_on_its_port_only(make_client) -> None:
    client = make_client(token=TOKEN)
    client.headers.pop("X-Lastlayer-Token")
    page = client.get(f"/?token={TOKEN}")
    assert page.status_code == 200 and TOKEN not in page.headers["set-cookie"]
    assert page.headers["set-cookie"].startswith(f"{cookie_name(8765)}={cookie_value(TOKEN, 8765)};")
    client.cookies.clear()
    for value, status in [(TOKEN, 403), (cookie_value(TOKEN, 8766), 403), (cookie_value(TOKEN, 8765), 200)]:
        client.cookies.set(cookie_name(8765), value)
        assert client.get("/api/state").status_code == status, value
        client.cookies.clear()


def _teach_web(tmp_path: Path, extractor: Path, port: int, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lastlayer", "teach", "--web", "--state", str(tmp_path / "state"),
                             "--model", str(extractor), "--host", "0.0.0.0", "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _stopped(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output


@pytest.mark.shared
@pytest.mark.parametrize("given", ["env", "file"])
def test_the_server_takes_its_token_from_the_environment_or_a_file_not_the_command_line(
        given: str, tmp_path: Path, extractor: Path) -> None:
    pytest.importorskip("uvicorn")
    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    extra, env = (("--token-file", str(token_file)), None) if given == "file" else ((), {"LASTLAYER_TOKEN": TOKEN})
    process = _teach_web(tmp_path, extractor, port, *extra, env=env)
    try:
        lines = Lines(process)
        first = lines.wait_for(lambda line: "teaching page:" in line, 60, "the page URL")
        assert first.endswith(f"?token={TOKEN}")
        assert TOKEN not in Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()  # what ps shows
        assert read_url(f"http://127.0.0.1:{port}/api/state?token={TOKEN}")[0] == 200
        assert not (tmp_path / "state" / "web-token").exists()  # a given token is not written anywhere
    finally:
        _stopped(process)


@pytest.mark.shared
def test_a_random_token_is_saved_readable_by_its_owner_only(tmp_path: Path, extractor: Path) -> None:
    pytest.importorskip("uvicorn")
    port = free_port()
    process = _teach_web(tmp_path, extractor, port, env={"LASTLAYER_TOKEN": ""})
    try:
        lines = Lines(process)
        token = lines.wait_for(lambda line: "teaching page:" in line, 60, "the page URL").rsplit("?token=", 1)[1]
        saved = tmp_path / "state" / "web-token"
        assert saved.read_text().strip() == token and stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert read_url(f"http://127.0.0.1:{port}/api/state?token={token}")[0] == 200
    finally:
        _stopped(process)


@pytest.mark.shared
def test_a_token_file_others_can_read_is_refused_before_anything_is_created(tmp_path: Path, extractor: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    result = subprocess.run([sys.executable, "-m", "lastlayer", "teach", "--web", "--state", str(tmp_path / "state"),
                             "--model", str(extractor), "--token-file", str(token_file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"chmod 600 {token_file}" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "state").exists()
    both = subprocess.run([sys.executable, "-m", "lastlayer", "teach", "--web", "--state", str(tmp_path / "state"),
                           "--token", "x", "--token-file", str(token_file)], capture_output=True, text=True, timeout=60)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
