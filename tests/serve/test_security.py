"""Access token, CSRF, Host check, upload limits, the missing extra, and the real server's token URL and SIGTERM."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lastlayer.errors import LastLayerError
from lastlayer.images.render import render_frame
from lastlayer.serve.security import host_name, is_loopback, token_matches
from lastlayer.serve.uploads import UploadError, decode_upload
from serve.webtools import frame_png, free_port, png, read_url

TOKEN = "s3cret-token"
GET_ROUTES = ["/", "/static/app.js", "/api/state", "/api/stream.mjpg?max_frames=1", "/api/events?max_events=1",
              "/api/export/model.tflite", "/api/export/labels.txt", "/api/examples/1/thumbnail.jpg"]


# ----------------------------------------------------------------------------- no model needed
def test_loopback_detection() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.com", ""))
    assert host_name("[::1]:8765") == "::1" and host_name("localhost:80") == "localhost" and host_name("evil.test") == "evil.test"
    assert token_matches("a", "a") and not token_matches("b", "a") and not token_matches(None, "a")


def test_decode_upload_checks_content_not_names() -> None:
    pixels = decode_upload(frame_png("gear", 0))
    assert pixels.shape == (240, 320, 3) and pixels.dtype == np.uint8
    for data, status in [(b"", 400), (b"GIF89a-but-not-really", 415), (b"%PDF-1.4 hello", 415), (frame_png("gear", 0)[:200], 400)]:
        with pytest.raises(UploadError) as caught:
            decode_upload(data)
        assert caught.value.status == status, data[:20]
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="ICO")
    with pytest.raises(UploadError) as caught:
        decode_upload(buffer.getvalue())
    assert caught.value.status == 415


def test_decode_upload_refuses_huge_pixel_counts() -> None:
    buffer = io.BytesIO()
    Image.new("1", (12000, 9000)).save(buffer, format="PNG")  # 108 MP in a few KB: a decompression bomb
    assert len(buffer.getvalue()) < 200_000
    with pytest.raises(UploadError) as caught:
        decode_upload(buffer.getvalue())
    assert caught.value.status == 413
    with pytest.raises(UploadError) as caught:
        decode_upload(png(np.zeros((100, 100, 3), np.uint8)), max_pixels=5000)
    assert caught.value.status == 413


def test_missing_web_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from lastlayer.serve import require_web

    monkeypatch.setitem(sys.modules, "starlette", None)
    with pytest.raises(LastLayerError, match="pip install starlette uvicorn python-multipart"):
        require_web()


# ----------------------------------------------------------------------------- through the app
@pytest.mark.shared
def test_token_required_everywhere(make_client) -> None:
    client = make_client(token=TOKEN)
    client.headers.pop("X-Lastlayer-Token")
    for route in GET_ROUTES:
        assert client.get(route).status_code == 401, route
        assert client.get(route, headers={"X-Lastlayer-Token": "wrong"}).status_code == 403, route
        assert client.get(f"{route}{'&' if '?' in route else '?'}token=wrong").status_code == 403, route
    assert client.post("/api/classes", json={"name": "x"}).status_code == 403
    assert client.post("/api/classes", json={"name": "x"}, headers={"X-Lastlayer-Token": "wrong"}).status_code == 403
    assert client.get("/api/state", headers={"X-Lastlayer-Token": TOKEN}).status_code == 200
    assert client.get("/api/stream.mjpg?max_frames=1", headers={"X-Lastlayer-Token": TOKEN}).status_code == 200


@pytest.mark.shared
def test_cookie_authorises_reads_but_never_changes(make_client) -> None:
    client = make_client(token=TOKEN)
    client.headers.pop("X-Lastlayer-Token")
    page = client.get(f"/?token={TOKEN}")
    assert page.status_code == 200
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.cookies  # the client keeps it, like a browser
    assert client.get("/api/state").status_code == 200  # a read with the cookie alone
    assert client.get("/static/style.css").status_code == 200
    # CSRF: a cross-site form can make the browser send the cookie (and put the token in the query), never a header
    assert client.post("/api/classes", json={"name": "evil"}).status_code == 403
    assert client.post(f"/api/classes?token={TOKEN}", json={"name": "evil"}).status_code == 403
    assert client.delete("/api/examples/1").status_code == 403
    assert client.post("/api/classes", json={"name": "ok"}, headers={"X-Lastlayer-Token": TOKEN}).status_code == 201
    assert [c["name"] for c in client.get("/api/classes").json()["classes"]] == ["ok"]


@pytest.mark.shared
def test_without_token_only_localhost_and_header(make_client) -> None:
    client = make_client(live=False)
    assert client.post("/api/classes", json={"name": "x"}, headers={"X-Lastlayer-Token": ""}).status_code == 201
    client.headers.pop("X-Lastlayer-Token")
    assert client.post("/api/classes", json={"name": "y"}).status_code == 403  # CSRF without a token too
    assert client.get("/api/state", headers={"host": "evil.example:8765"}).status_code == 403  # DNS rebinding
    assert client.get("/api/state", headers={"host": "localhost:8765"}).status_code == 200


@pytest.mark.shared
def test_upload_limits(make_client) -> None:
    client = make_client(live=False, max_upload_bytes=60_000, max_pixels=1_000_000)
    class_id = client.post("/api/classes", json={"name": "gear"}).json()["class"]["id"]
    url = f"/api/classes/{class_id}/examples"
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    big = client.post(url, files=[("files", ("big.png", png(noise), "image/png"))])
    assert big.status_code == 413 and "error" in big.json()

    def chunks():
        for _ in range(10):
            yield b"x" * 10_000

    streamed = client.post(url, content=chunks(), headers={"content-type": "multipart/form-data; boundary=zz"})
    assert streamed.status_code == 413  # no Content-Length: counted while it arrives
    text = client.post(url, files=[("files", ("photo.jpg", b"just text, named .jpg", "image/jpeg"))])
    assert text.status_code in (400, 415)
    tall = client.post(url, files=[("files", ("a.png", png(np.zeros((1200, 1000, 3), np.uint8)), "image/png"))])
    assert tall.status_code == 413 and "pixels" in tall.json()["error"]
    assert client.post(url, content=b"{}", headers={"content-type": "application/json"}).status_code == 415
    assert client.post(url, files={"note": (None, "no file")}).status_code == 400
    # one bad photo among good ones: nothing is added
    small = png(np.ascontiguousarray(render_frame("gear", 1)[::4, ::4]))
    mixed = client.post(url, files=[("files", ("a.png", small, "image/png")), ("files", ("b.png", b"junk", "image/png"))])
    assert mixed.status_code in (400, 415) and "photo 2" in mixed.json()["error"]
    assert client.get("/api/classes").json()["classes"][0]["examples"] == 0


@pytest.mark.shared
def test_real_server_on_the_network_prints_a_token_url_and_stops_on_sigterm(extractor: Path, tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    port = free_port()
    launcher = Path(__file__).with_name("launch_server.py")
    process = subprocess.Popen([sys.executable, str(launcher), str(tmp_path / "state"), str(extractor), str(port), "--host", "0.0.0.0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ})
    try:
        first = process.stdout.readline()
        assert "teaching page: http://" in first and "?token=" in first, first
        token = first.strip().rsplit("?token=", 1)[1]
        assert len(token) >= 30
        local = f"http://127.0.0.1:{port}"
        status, _ = read_url(f"{local}/api/state?token={token}", timeout=20)
        assert status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{local}/api/state", timeout=5)
        assert refused.value.code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0 and "server stopped" in output and "Traceback" not in output
