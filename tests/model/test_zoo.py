from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from lastlayer.errors import ModelNotFoundError
from lastlayer.model import zoo

from conftest import EXTRACTOR


@pytest.fixture
def http_mirror(tmp_path):
    """A local HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (url, folder)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_explicit_path_wins(model_file):
    path = model_file(EXTRACTOR)
    assert zoo.resolve_model(path) == path


def test_models_env_then_cache(model_file, tmp_path, monkeypatch):
    assert zoo.resolve_model(EXTRACTOR) == model_file(EXTRACTOR)
    monkeypatch.setenv("LASTLAYER_MODELS", str(tmp_path / "empty"))
    cached = zoo.cache_dir() / EXTRACTOR
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_file(EXTRACTOR), cached)
    assert zoo.resolve_model(EXTRACTOR) == cached


def test_download_verifies_checksum_into_cache(model_file, http_mirror, monkeypatch, tmp_path):
    url, root = http_mirror
    shutil.copy(model_file(EXTRACTOR), root / EXTRACTOR)
    monkeypatch.setenv("LASTLAYER_MODELS", str(tmp_path / "empty"))
    monkeypatch.setenv("LASTLAYER_MODEL_URL", url)
    path = zoo.resolve_model(EXTRACTOR)
    assert path.parent == zoo.cache_dir()
    assert path.read_bytes() == model_file(EXTRACTOR).read_bytes()
    (root / EXTRACTOR).unlink()  # second resolve uses the cache, not the network
    assert zoo.resolve_model(EXTRACTOR) == path


def test_download_with_wrong_checksum_is_rejected_and_nothing_cached(model_file, http_mirror, monkeypatch, tmp_path):
    url, root = http_mirror
    shutil.copy(model_file("mobilenet_v1_0.25_128_quant.tflite"), root / EXTRACTOR)  # wrong content
    monkeypatch.setenv("LASTLAYER_MODELS", str(tmp_path / "empty"))
    monkeypatch.setenv("LASTLAYER_MODEL_URL", url)
    with pytest.raises(ModelNotFoundError, match="SHA-256") as info:
        zoo.resolve_model(EXTRACTOR)
    assert "\n" not in str(info.value)
    cache = zoo.cache_dir()
    assert not cache.exists() or list(cache.iterdir()) == []


def test_offline_names_the_file_and_both_ways_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LASTLAYER_MODELS", str(tmp_path / "empty"))
    with pytest.raises(ModelNotFoundError) as info:
        zoo.resolve_model(EXTRACTOR)
    message = str(info.value)
    assert EXTRACTOR in message and "give its path" in message and "LASTLAYER_MODELS" in message and "--" not in message
    assert "download failed" in message
    with pytest.raises(ModelNotFoundError, match="downloads are disabled"):
        zoo.resolve_model(EXTRACTOR, download=False)


def test_unknown_name_or_missing_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        zoo.resolve_model(tmp_path / "mine.tflite")
    with pytest.raises(ModelNotFoundError, match="known names"):
        zoo.resolve_model("no_such_model.tflite")


def test_every_known_file_is_pinned_and_matches_the_shared_copy(models_dir):
    import hashlib

    for name, known in zoo.KNOWN_FILES.items():
        assert len(known.sha256) == 64
        local = Path(models_dir) / name
        if local.exists():
            assert hashlib.sha256(local.read_bytes()).hexdigest() == known.sha256, name


def test_long_download_errors_are_cut_between_words():
    original = ("HTTPSConnectionPool(host='x', port=443): Max retries exceeded with url: /a/b (Caused by NameResolutionError("
                "\"<urllib3.connection.HTTPSConnection object>: Failed to resolve 'x' ([Errno -3] Temporary failure in name resolution)\"))")
    reason = zoo._short_reason(OSError(original))
    prefix = reason.removesuffix(" ...")
    assert reason.endswith(" ...") and len(reason) <= 165 and original.startswith(prefix)
    assert original[len(prefix)] in " :,;("  # never inside a word, as in "NameReso"
    assert zoo._short_reason(OSError("short")) == "short"
