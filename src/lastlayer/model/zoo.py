"""Where models come from: an explicit path, ``$LASTLAYER_MODELS``, the cache, or a pinned download.

Known models are Coral's public test models, each pinned to a SHA-256 so a download is verified
before it lands in the cache (pooch writes to a temporary file and moves it only after the check).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

from lastlayer.errors import ModelNotFoundError

if TYPE_CHECKING:
    from lastlayer.model.file import ModelFile

MODELS_ENV = "LASTLAYER_MODELS"
CACHE_ENV = "LASTLAYER_CACHE"
MIRROR_ENV = "LASTLAYER_MODEL_URL"
CORAL_TEST_DATA_URL = "https://raw.githubusercontent.com/google-coral/test_data/master/"

DEFAULT_CLASSIFIER = "mobilenet_v2_1.0_224_quant.tflite"
DEFAULT_EXTRACTOR = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"


@dataclass(frozen=True)
class KnownFile:
    """A downloadable file: its path below the base URL and its SHA-256."""

    url_path: str
    sha256: str


KNOWN_FILES: dict[str, KnownFile] = {
    "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite": KnownFile(
        "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
        "f409ef4f73fcbb9667841965623c5c8524aac33d41b9bf5f3667161fb4a76319",
    ),
    "mobilenet_v1_1.0_224_quant_embedding_extractor_edgetpu.tflite": KnownFile(
        "mobilenet_v1_1.0_224_quant_embedding_extractor_edgetpu.tflite",
        "33a249155302975d7e28f72a5250903cdf7f7afb7bd1ceec3d2cd8ca9ce6a609",
    ),
    "mobilenet_v1_0.25_128_quant.tflite": KnownFile(
        "mobilenet_v1_0.25_128_quant.tflite", "cb273c23ee76374b05b9583177e28aa19744858a7679c56a250e83d0333da785"
    ),
    "mobilenet_v1_0.5_160_quant.tflite": KnownFile(
        "mobilenet_v1_0.5_160_quant.tflite", "3cc6d2ca460abd2e0f699a6d0d2550c6b61c6e3b0e27a3616e384ea74cb86f43"
    ),
    "mobilenet_v2_1.0_224_quant.tflite": KnownFile(
        "mobilenet_v2_1.0_224_quant.tflite", "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776"
    ),
    "mobilenet_v2_1.0_224_inat_bird_quant.tflite": KnownFile(
        "mobilenet_v2_1.0_224_inat_bird_quant.tflite", "350fcd8cf1df1560060d464595dfed8b174b05792788052896004848d9ad04f9"
    ),
    "mobilenet_quant_v1_224_feature_layers_edgetpu.tflite": KnownFile(
        "tools/mobilenet_quant_v1_224_feature_layers_edgetpu.tflite",
        "7724b111333e09719edebc3485df6efd10eb7cddb7a6a05827412cc97300c0bc",
    ),
    "mobilenet_quant_v1_224_head_layers.tflite": KnownFile(
        "tools/mobilenet_quant_v1_224_head_layers.tflite", "65a88984b258c6f3c99d7573acac8cf85bd747293d83d51fafc1c2fb6d632286"
    ),
    "imagenet_labels.txt": KnownFile(
        "imagenet_labels.txt", "b8aaeb5630c62626a7d124a05c0e14230a7ffdd2136a31d0190a4fb71c1d82f1"
    ),
}


def cache_dir() -> Path:
    """``$LASTLAYER_CACHE``, else the user cache folder (``~/.cache/lastlayer`` on Linux)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    import pooch

    return Path(pooch.os_cache("lastlayer"))


def model_dirs() -> list[Path]:
    """Folders listed in ``$LASTLAYER_MODELS`` (``os.pathsep``-separated)."""
    value = os.environ.get(MODELS_ENV, "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part]


def download_url(name: str) -> str:
    """The URL a known file is fetched from (``$LASTLAYER_MODEL_URL`` replaces the base, for mirrors)."""
    base = os.environ.get(MIRROR_ENV) or CORAL_TEST_DATA_URL
    return base.rstrip("/") + "/" + KNOWN_FILES[name].url_path


def resolve_model(name_or_path: Union[str, os.PathLike[str]], *, download: bool = True) -> Path:
    """Find a model (or label file) and return its local path.

    Looks, in order, at: the path itself; ``$LASTLAYER_MODELS/<name>``; the cache folder; and, for
    a known file, a verified download into the cache. Raises :class:`ModelNotFoundError` saying
    which file is missing and how to provide it.
    """
    given = Path(name_or_path).expanduser()
    if given.is_file():
        return given
    if given.is_dir():
        raise ModelNotFoundError(f"model path {name_or_path} is a folder; give the .tflite file inside it", subject="model")
    name = given.name
    bare_name = given.parent == Path(".")
    for folder in [*model_dirs(), cache_dir()]:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    if name not in KNOWN_FILES:
        where = f" (nor in ${MODELS_ENV} or the cache)" if bare_name else ""
        raise ModelNotFoundError(f"model file {name_or_path} does not exist{where}; check the path "
                                 f"(known names: {', '.join(sorted(KNOWN_FILES))})", subject="model")
    if not download:
        raise ModelNotFoundError(_missing_message(name, "downloads are disabled"), subject="model")
    return _download(name)


def _missing_message(name: str, reason: str) -> str:
    return (
        f"model {name} is not available ({reason}); give its path, "
        f"or put the file in a folder named by ${MODELS_ENV} (or in {cache_dir()}); it is published at {download_url(name)}"
    )


def _short_reason(exc: BaseException, limit: int = 160) -> str:
    """The first line of an error, cut at a word boundary: network errors nest long reprs."""
    text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:(") + " ..."


def _download(name: str) -> Path:
    import pooch

    known = KNOWN_FILES[name]
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = pooch.retrieve(
            download_url(name), known_hash=f"sha256:{known.sha256}", fname=name, path=folder, progressbar=False
        )
    except ValueError as exc:
        if "hash" in str(exc).lower():
            raise ModelNotFoundError(
                f"download of {name} from {download_url(name)} failed its SHA-256 check (file rejected, nothing cached); "
                f"retry later, or give the file's path or put it in ${MODELS_ENV}", subject="model"
            ) from None
        raise ModelNotFoundError(_missing_message(name, f"download failed: {exc}"), subject="model") from None
    except Exception as exc:  # network errors come from requests/urllib3 in many shapes
        raise ModelNotFoundError(_missing_message(name, f"download failed: {_short_reason(exc)}"), subject="model") from None
    return Path(path)


def resolve_labels(name_or_path: Union[str, os.PathLike[str]]) -> Path:
    """A label file by path, or a known label file by name (found and downloaded like a model)."""
    from lastlayer.errors import LabelFileError

    given = Path(name_or_path).expanduser()
    if given.is_file():
        return given
    if given.is_dir():
        raise LabelFileError(f"label path {name_or_path} is a folder; give the label file inside it", subject="labels")
    if given.name in KNOWN_FILES and given.parent == Path("."):
        return resolve_model(given.name)
    raise LabelFileError(f"label file {name_or_path} does not exist; check its path", subject="labels")


def open_model(name_or_path: Union[str, os.PathLike[str], bytes], *, download: bool = True) -> ModelFile:
    """Find a model (see :func:`resolve_model`) and open it once as a :class:`~lastlayer.model.file.ModelFile`.

    Bytes are opened as they are; an already opened ``ModelFile`` is returned unchanged.
    """
    from lastlayer.model.file import ModelFile

    if isinstance(name_or_path, ModelFile):
        return name_or_path
    if isinstance(name_or_path, (bytes, bytearray)):
        return ModelFile.from_bytes(bytes(name_or_path))
    return ModelFile.read(resolve_model(name_or_path, download=download))
