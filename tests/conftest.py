"""Shared fixtures: where the shared test data is, and isolation from the user's cache and network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LASTLAYER_SHARED", ROOT.parent / "shared"))
MODELS = Path(os.environ.get("LASTLAYER_MODELS", str(SHARED / "models")).split(os.pathsep)[0])
REQUIRE_DATA = os.environ.get("LASTLAYER_REQUIRE_DATA") == "1"


def need(path: Path) -> Path:
    """Return ``path``, or skip (fail under CI, where the data must be present) when it is missing."""
    if not path.exists():
        message = f"shared test data missing: {path} (set LASTLAYER_SHARED / LASTLAYER_MODELS)"
        if REQUIRE_DATA:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own empty cache and a download mirror on a port nothing listens on."""
    monkeypatch.setenv("LASTLAYER_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("LASTLAYER_MODEL_URL", "http://127.0.0.1:9/unreachable")
    monkeypatch.setenv("LASTLAYER_MODELS", str(MODELS))


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return need(MODELS)


@pytest.fixture(scope="session")
def images_dir() -> Path:
    return need(SHARED / "images")


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    return need(SHARED / "datasets")


@pytest.fixture(scope="session")
def model_file(models_dir: Path):
    """``model_file(name)`` -> path of a shared model (skips when absent)."""

    def get(name: str) -> Path:
        return need(models_dir / name)

    return get


EXTRACTOR = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
EXTRACTOR_EDGETPU = "mobilenet_v1_1.0_224_quant_embedding_extractor_edgetpu.tflite"
CLASSIFIER_V2 = "mobilenet_v2_1.0_224_quant.tflite"
CPU_MODELS = [
    "mobilenet_quant_v1_224_head_layers.tflite",
    "mobilenet_v1_0.25_128_quant.tflite",
    "mobilenet_v1_0.5_160_quant.tflite",
    EXTRACTOR,
    "mobilenet_v2_1.0_224_inat_bird_quant.tflite",
    CLASSIFIER_V2,
    "tf2_mobilenet_v2_1.0_224_ptq.tflite",
]
EDGETPU_MODELS = [EXTRACTOR_EDGETPU, "mobilenet_quant_v1_224_feature_layers_edgetpu.tflite"]


_SHARED_FIXTURES = {"models_dir", "images_dir", "datasets_dir", "model_file"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses ../shared with ``shared``, so ``-m "not shared"`` runs the data-free ones."""
    for item in items:
        if _SHARED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared)
