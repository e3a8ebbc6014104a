"""Fixtures of the web tests: a session on the shared extractor, a generated video, an app and its client."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from lastlayer.images.render import write_video
from serve.webtools import FPS, SEGMENTS

from conftest import EXTRACTOR, MODELS, need

pytest.importorskip("starlette", reason="the web tests need lastlayer[web] (starlette, uvicorn, python-multipart)")
pytest.importorskip("httpx2", reason="Starlette's TestClient needs httpx2")

@pytest.fixture(scope="session")
def extractor() -> Path:
    return need(MODELS / EXTRACTOR)


@pytest.fixture(scope="session")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("cv2", reason="writing the test video needs OpenCV (lastlayer[camera])")
    return write_video(tmp_path_factory.mktemp("video") / "parts.avi", SEGMENTS, fps=FPS)


@pytest.fixture
def session(extractor: Path, tmp_path: Path) -> Iterator[Any]:
    from lastlayer.teach.session import TeachingSession

    with TeachingSession(tmp_path / "state", extractor) as opened:
        yield opened


@pytest.fixture
def make_client(session: Any, video: Path) -> Iterator[Callable[..., Any]]:
    """``make_client(live=True, token=None, **create_app_options) -> TestClient`` (apps stopped at teardown)."""
    from starlette.testclient import TestClient

    from lastlayer.serve.app import create_app
    from lastlayer.serve.server import source_opener

    apps = []

    def make(live: bool = True, token: str | None = None, raise_server_exceptions: bool = True, **options: Any) -> TestClient:
        source = source_opener(str(video)) if live else None
        app = create_app(session, None, token=token, source=source, source_name="parts.avi" if live else None,
                         log=options.pop("log", lambda line: None), **options)
        apps.append(app)
        client = TestClient(app, raise_server_exceptions=raise_server_exceptions, base_url="http://127.0.0.1:8765")
        client.headers["X-Lastlayer-Token"] = token or "-"
        return client

    yield make
    for app in apps:
        app.state.feed.stop()

