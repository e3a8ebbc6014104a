"""A real server (its own process, uvicorn) against hostile clients: bad inputs answered 4xx on a kept connection,
silent and half-sent requests closed, a connection cap answering 503, and memory measured around hostile uploads."""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image

from serve.webtools import Server, free_port, wait_for

pytestmark = [pytest.mark.shared]
HEADERS = {"X-Lastlayer-Token": "-", "Content-Type": "application/json", "Host": "127.0.0.1"}
MAX_ID = 2**63 - 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, extractor: Path) -> Iterator[Server]:
    pytest.importorskip("uvicorn")
    started = Server(tmp_path_factory.mktemp("hostile") / "state", extractor, None, free_port(),
                     "--header-timeout", "1", "--body-timeout", "1")
    started.start()
    yield started
    started.kill()


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1].strip("/"))


def _kept_connection(server: Server) -> http.client.HTTPConnection:
    connection = http.client.HTTPConnection("127.0.0.1", _port(server), timeout=60)
    connection.connect()
    return connection


def _ask(connection: http.client.HTTPConnection, method: str, path: str, body: str | bytes | None = None) -> tuple[int, dict]:
    connection.request(method, path, body=body, headers=HEADERS)
    response = connection.getresponse()
    data = response.read()
    return response.status, json.loads(data) if data.startswith(b"{") else {}


# ----------------------------------------------------------------------------- bad input
NINES = "9" * 5000
BAD_INPUTS = [
    # (what, method, path, body, status)
    ("NaN", "POST", "/api/finetune", '{"learning_rate": NaN}', 400),
    ("Infinity", "POST", "/api/finetune", '{"learning_rate": Infinity}', 400),
    ("-Infinity", "POST", "/api/finetune", '{"steps": -Infinity}', 400),
    ("1e400", "POST", "/api/finetune", '{"learning_rate": 1e400}', 400),
    ("a 5,000-digit number", "POST", "/api/finetune", '{"steps": ' + NINES + "}", 400),
    ("a string for a number", "POST", "/api/finetune", '{"learning_rate": "fast"}', 400),
    ("a list for a name", "POST", "/api/classes", '{"name": ["gear"]}', 400),
    ("JSON nested 20,000 deep", "POST", "/api/classes", '{"name": ' + "[" * 20000 + "]" * 20000 + "}", 400),
    ("a lone surrogate in a name", "POST", "/api/classes", '{"name": "gear\\ud800"}', 400),
    ("a frame id of 2^63", "POST", "/api/classes/{gear}/frames", '{"frame": 9223372036854775808}', 400),
    ("a class id of 2^63", "PATCH", "/api/classes/9223372036854775808", '{"name": "x"}', 404),
    ("an example id of 10^30", "GET", "/api/examples/1000000000000000000000000000000/thumbnail.jpg", None, 404),
    ("an example id of 2^63 to delete", "DELETE", "/api/examples/9223372036854775808", None, 404),
    ("superscript digits in a count", "GET", "/api/events?max_events=%C2%B2", None, 400),
    ("Arabic-Indic digits in a count", "GET", "/api/events?max_events=%D9%A3", None, 400),
    ("a 5,000-digit count", "GET", "/api/events?max_events=" + NINES, None, 400),
]


def test_bad_inputs_are_answered_4xx_with_a_sentence_on_a_kept_connection(server: Server) -> None:
    connection = _kept_connection(server)
    status, created = _ask(connection, "POST", "/api/classes", '{"name": "gear"}')
    assert status == 201, created
    gear = created["class"]["id"]
    sock = connection.sock
    wrong = []
    for what, method, path, body, expected in BAD_INPUTS:
        try:
            status, answer = _ask(connection, method, path.format(gear=gear), body)
        except (OSError, http.client.HTTPException) as error:
            status, answer = 0, {"dropped": repr(error)}
        if status != expected or not (isinstance(answer.get("error"), str) and len(answer["error"]) > 10):
            wrong.append((what, status, answer))
        if connection.sock is not sock:
            wrong.append((what, "closed the connection"))
            connection.close()
            connection = _kept_connection(server)
            sock = connection.sock
    assert not wrong
    status, state = _ask(connection, "GET", "/api/state")
    assert status == 200 and [c["name"] for c in state["classes"]] == ["gear"]  # nothing stored by any of them
    assert connection.sock is sock
    connection.close()


def test_ids_up_to_the_largest_sqlite_holds_are_looked_up(server: Server) -> None:
    connection = _kept_connection(server)
    status, answer = _ask(connection, "PATCH", f"/api/classes/{MAX_ID}", '{"name": "x"}')
    assert status == 404 and "class" in answer["error"]  # the session looked for it: no such class
    connection.close()


# ----------------------------------------------------------------------------- slow and silent clients
def _closed_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout fails the test otherwise)."""
    received = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return received
        received += chunk


@pytest.mark.parametrize("sent", [b"", b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n"], ids=["silent", "half-sent"])
def test_a_request_whose_headers_never_complete_is_closed_with_408(server: Server, sent: bytes) -> None:
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=30) as sock:
        sock.sendall(sent)
        answer = _closed_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 s" in answer


def test_headers_trickling_in_slowly_are_closed_at_the_deadline(server: Server) -> None:
    request = b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 400
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=30) as sock:
        for byte in request:  # one byte every 0.1 s: each arrives well within any idle limit
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the server read 400 header bytes over 40 s without closing the connection")
        answer = _closed_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_a_stalled_body_closes_the_connection_and_stores_nothing(server: Server) -> None:
    head = (b"POST /api/classes HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Lastlayer-Token: -\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=30) as sock:
        sock.sendall(head + b'{"name": "sta')
        _closed_answer(sock)
    connection = _kept_connection(server)
    status, listing = _ask(connection, "GET", "/api/classes")
    assert status == 200 and "sta" not in [c["name"] for c in listing["classes"]]
    connection.close()


def test_connections_beyond_the_cap_are_answered_503(tmp_path: Path, extractor: Path) -> None:
    pytest.importorskip("uvicorn")
    server = Server(tmp_path / "state", extractor, None, free_port(), "--max-connections", "6", "--header-timeout", "60")
    server.start()
    try:
        held = [_kept_connection(server) for _ in range(6)]
        for connection in held:  # each answered once: the server has accepted all six
            assert _ask(connection, "GET", "/api/classes")[0] == 200
        with socket.create_connection(("127.0.0.1", _port(server)), timeout=30) as sock:
            sock.sendall(b"GET /api/classes HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = _closed_answer(sock)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 2" in answer.lower()
        for connection in held:
            connection.close()

        def answered() -> bool:
            probe = _kept_connection(server)
            try:
                return _ask(probe, "GET", "/api/classes")[0] == 200
            finally:
                probe.close()

        wait_for(answered, 20, 0.2, "a connection to be served once the others closed")
    finally:
        server.kill()


# ----------------------------------------------------------------------------- memory
def _peak_since_reset(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of process ``pid`` in bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def _image(size: tuple[int, int], form: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 30)).save(buffer, format=form, **options)
    return buffer.getvalue()


def _multipart(files: list[bytes], suffix: str) -> tuple[bytes, str]:
    """A multipart/form-data body of ``files`` and its content type (encoded by httpx, as a browser would)."""
    import httpx2

    request = httpx2.Request("POST", "http://127.0.0.1/", files=[("files", (f"p{n}.{suffix}", data, "application/octet-stream"))
                                                                 for n, data in enumerate(files)])
    return request.read(), request.headers["content-type"]


CEILING = 300 * 2**20  # the bound on what one request may take above idle


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is read from Linux's /proc")
def test_hostile_uploads_stay_within_the_memory_ceiling(server: Server) -> None:
    assert server.process is not None
    pid = server.process.pid
    connection = _kept_connection(server)
    status, created = _ask(connection, "POST", "/api/classes", '{"name": "bombs"}')
    assert status == 201, created
    connection.close()
    target = f"/api/classes/{created['class']['id']}/examples"
    webp = _image((7000, 7000), "WEBP", lossless=True, method=0)  # 49 megapixels in a few bytes
    assert len(webp) < 2000
    cases = [
        ("32 x 49-MP WebP", target, *_multipart([webp] * 32, "webp"), {413}),
        ("one 49-MP WebP to predict", "/api/predict", webp, "image/webp", {413}),
        ("8 x 24-MP PNG", target, *_multipart([_image((6000, 4000), "PNG")] * 8, "png"), {201}),
        ("16 x 24-MP JPEG", target, *_multipart([_image((6000, 4000), "JPEG", quality=70)] * 16, "jpg"), {201}),
    ]
    peaks = {}
    for what, path, body, content_type, statuses in cases:
        time.sleep(0.5)  # let the previous request's buffers go back
        connection = _kept_connection(server)  # (a new one: an idle one is closed after the 1 s header timeout)
        _reset_peak(pid)
        idle, _ = _peak_since_reset(pid)
        connection.request("POST", path, body=body, headers={**HEADERS, "Content-Type": content_type})
        response = connection.getresponse()
        answer = response.read()
        _, peak = _peak_since_reset(pid)
        peaks[what] = (peak - idle) / 2**20
        connection.close()
        assert response.status in statuses, (what, response.status, answer[:300])
        assert peak - idle <= CEILING, f"{what}: {peaks[what]:.0f} MiB above idle ({peaks})"
    print("peak memory above idle (MiB):", {what: round(mib) for what, mib in peaks.items()})
