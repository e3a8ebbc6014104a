#!/usr/bin/env python3
"""Convert real Keras (and PyTorch) architectures to TFLite and run lastlayer end to end on them.

Outside CI: a check, by hand, that lastlayer's input rules (normalisation, layout, output type; see
README "Feeding a model") hold on graphs made by the real converters, not only on the test suite's
hand-built ones. Weights are random (nothing is downloaded but the converters themselves); the
BatchNorm statistics are calibrated on flower photos so that embeddings are not degenerate.

Three steps, each in its own environment (TensorFlow and PyTorch never enter the project's venv):

``convert`` (TensorFlow 2.17 venv)::

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu==2.17.0 pillow
    /tmp/tfenv/bin/python scripts/convert_models.py convert --out /tmp/corpus

  builds MobileNetV2, MobileNetV3Small, EfficientNetB0, ResNet50 and a small CNN (with and
  without softmax) with ``weights=None`` at 128x128, and writes for each ``float``, ``dynamic``
  (dynamic-range), ``int8-float-io`` (full int8, float input and output), ``int8`` (int8 I/O)
  and ``uint8`` (uint8 I/O) models with the batch fixed to 1, plus one ``float-dynamic-batch``.

``convert-torch`` (optional; a venv with litert-torch and torchvision)::

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install litert-torch torchvision
    /tmp/torchenv/bin/python scripts/convert_models.py convert-torch --out /tmp/corpus

  adds torchvision's MobileNetV3-Small and ResNet18 (channels-first ``[1, 3, H, W]`` inputs).

``evaluate`` (the project's venv)::

    .venv/bin/python scripts/convert_models.py evaluate --corpus /tmp/corpus

  runs the ``lastlayer`` CLI (``inspect``, ``cut``, ``imprint``, ``train``, ``classify``, ``check``)
  on every converted model via subprocess, feeds each written model to a stock LiteRT interpreter
  the way its TFLite metadata says and compares the scores with ``lastlayer classify``, measures
  the embedding spread with the old rule (always ``(p - 128) / 128``) and with the automatic one,
  and prints a table, also written to ``CORPUS/results.md`` (details in ``CORPUS/results.json``).

The conversion steps write ``CORPUS/manifest-*.json``: one entry per model file, with how the
architecture expects its pixels. Photos come from ``/work/shared/datasets/flowers`` (read in
place; the subsets for imprint/train are folders of symbolic links under ``CORPUS/data``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

FLOWERS = Path("/work/shared/datasets/flowers")
SIZE = 128  # input height and width of every converted model
CALIBRATION_PHOTOS = 32  # BatchNorm statistics are set from this many photos
REPRESENTATIVE_PHOTOS = 20  # int8 calibration (the converter's representative dataset)
SUBSET_CLASSES = ("daisy", "roses", "tulips")
SUBSET_PHOTOS = 15  # per class: classes of fewer than 10 photos are not split by lastlayer
SPREAD_PHOTOS = 10
CLASSIFY_PHOTOS = 5
VARIANTS = ("float", "dynamic", "int8-float-io", "int8", "uint8")
DYNAMIC_BATCH = "float-dynamic-batch"
TORCH_VARIANTS = ("float", "dynamic", "int8")  # litert-torch gives PT2E static int8 models int8 I/O

# --- photos: read the way lastlayer reads them ------------------------------------------------------


def flower_photos() -> dict[str, list[Path]]:
    """Every flower photo by class, sorted (the same list in every environment)."""
    return {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            for d in sorted(FLOWERS.iterdir()) if d.is_dir()}


def held_photos(count: int, start: int) -> list[Path]:
    """``count`` photos taken round-robin over the classes from index ``start`` of each class.

    Calibration uses indices 40 and up, the spread 20 and up, the imprint/train subset 0..14:
    the three never share a photo.
    """
    by_class = flower_photos()
    longest = max(len(photos) for photos in by_class.values())
    picked = [photos[i] for i in range(start, longest) for photos in by_class.values() if i < len(photos)]
    if len(picked) < count:
        raise SystemExit(f"{FLOWERS} has {len(picked)} photos from index {start} on; {count} are needed")
    return picked[:count]


def load_pixels(path: Path, size: int = SIZE) -> np.ndarray:
    """``size x size x 3`` uint8 RGB as lastlayer loads it: upright, JPEG draft decoding, bilinear resize."""
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        if opened.format == "JPEG":
            opened.draft("RGB", (size, size))
        image = ImageOps.exif_transpose(opened).convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def luminance(pixels: np.ndarray) -> np.ndarray:
    """``...xHxWx3`` uint8 RGB -> ``...xHxWx1`` grey, as Pillow's ``convert("L")`` (and lastlayer) compute it."""
    rgb = pixels.astype(np.uint32)
    grey = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return grey.astype(np.uint8)[..., np.newaxis]


# --- architectures and how each expects its pixels -------------------------------------------------


@dataclass(frozen=True)
class Preprocessing:
    """What an architecture expects, as a function of float RGB pixels 0..255, and as lastlayer options.

    ``mean`` / ``std`` give ``(p - mean) / std`` per channel (RGB); ``note`` says what they cannot express.
    """

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    note: str = ""

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        values = pixels.astype(np.float32)
        if self.name == "caffe":  # keras.applications.resnet50.preprocess_input: BGR, ImageNet means subtracted
            return values[..., ::-1] - np.array([103.939, 116.779, 123.68], dtype=np.float32)
        return ((values - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)).astype(np.float32)


PREPROCESSING = {
    "minus1-1": Preprocessing("minus1-1", (127.5,), (127.5,)),
    "raw": Preprocessing("raw", (0.0,), (1.0,), "Rescaling inside the model"),
    "caffe": Preprocessing("caffe", (123.68, 116.779, 103.939), (1.0,),
                           "BGR order in the model; lastlayer feeds RGB, so the per-channel mean is only close"),
    "unit": Preprocessing("unit", (0.0,), (255.0,)),
    "torch-imagenet": Preprocessing("torch-imagenet", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}


@dataclass(frozen=True)
class Entry:
    """One converted model file in the corpus."""

    model: str  # architecture
    variant: str  # float, dynamic, int8-float-io, int8, uint8, float-dynamic-batch
    file: str  # relative to the corpus
    preprocessing: str  # key of PREPROCESSING
    source: str  # keras or torch
    seconds: float = 0.0  # conversion time


def write_manifest(out: Path, name: str, entries: list[Entry]) -> None:
    """Add ``entries`` to ``CORPUS/manifest-NAME.json`` (an entry for the same file is replaced)."""
    path = out / f"manifest-{name}.json"
    kept = {e["file"]: e for e in (json.loads(path.read_text()) if path.exists() else [])}
    kept.update({e.file: asdict(e) for e in entries})
    path.write_text(json.dumps([e for e in kept.values() if (out / e["file"]).exists()], indent=1) + "\n")


def read_manifests(corpus: Path) -> list[Entry]:
    entries: list[Entry] = []
    for path in sorted(corpus.glob("manifest-*.json")):
        entries += [Entry(**e) for e in json.loads(path.read_text())]
    return entries


# --- convert (TensorFlow venv) ----------------------------------------------------------------------


def _keras_models() -> dict[str, tuple[Callable[[], Any], str]]:
    """name -> (builder, preprocessing key); every builder makes a 128x128 model with random weights."""
    import keras

    shape = (SIZE, SIZE, 3)

    def efficientnet() -> Any:
        model = keras.applications.EfficientNetB0(weights=None, input_shape=shape)
        norm = next(layer for layer in model.layers if isinstance(layer, keras.layers.Normalization))
        # weights=None leaves the Normalization layer at mean 0, variance 1; the ImageNet weights set these
        mean, count = np.array([0.485, 0.456, 0.406], np.float32), np.asarray(norm.get_weights()[2])
        norm.set_weights([mean, np.array([0.229, 0.224, 0.225], np.float32) ** 2, np.ones_like(count)])
        norm.finalize_state()
        return model

    def custom(softmax: bool, channels: int = 3) -> Callable[[], Any]:
        def build() -> Any:
            layers = keras.layers
            inputs = keras.Input((SIZE, SIZE, channels))
            x = inputs
            for filters in (16, 32, 64):
                x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
                x = layers.BatchNormalization()(x)
                x = layers.ReLU()(x)
            x = layers.GlobalAveragePooling2D()(x)
            x = layers.Dense(10, activation="softmax" if softmax else None, name="classes")(x)
            return keras.Model(inputs, x, name=f"custom_cnn_{'softmax' if softmax else 'logits'}_{channels}")
        return build

    return {
        "MobileNetV2": (lambda: keras.applications.MobileNetV2(weights=None, input_shape=shape), "minus1-1"),
        "MobileNetV3Small": (lambda: keras.applications.MobileNetV3Small(weights=None, input_shape=shape), "raw"),
        "EfficientNetB0": (efficientnet, "raw"),
        "ResNet50": (lambda: keras.applications.ResNet50(weights=None, input_shape=shape), "caffe"),
        "CustomCNN-softmax": (custom(True), "unit"),
        "CustomCNN-logits": (custom(False), "unit"),
        "CustomCNN-grey": (custom(True, channels=1), "unit"),
    }


def calibrate_keras_batchnorm(model: Any, images: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics to the batch statistics of ``images`` (already preprocessed).

    One forward pass in training mode with momentum 0 (and dropout off) makes each layer's moving
    mean and variance those of its input on these images, computed with the layers before it
    already normalised the same way: what inference will then see.
    """
    import keras

    saved: list[tuple[Any, str, float]] = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            saved.append((layer, "momentum", layer.momentum))
            layer.momentum = 0.0
        elif isinstance(layer, keras.layers.Dropout):
            saved.append((layer, "rate", layer.rate))
            layer.rate = 0.0
    model(images, training=True)
    for layer, attribute, value in saved:
        setattr(layer, attribute, value)


def convert_keras(out: Path, only: Sequence[str], force: bool) -> list[Entry]:
    """Build, calibrate and convert every Keras architecture (those in ``only`` when given)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's native INFO and WARNING lines
    import tensorflow as tf

    calibration = np.stack([load_pixels(p) for p in held_photos(CALIBRATION_PHOTOS, 40)])
    entries: list[Entry] = []
    for name, (build, prep_key) in _keras_models().items():
        if only and name not in only:
            continue
        prep = PREPROCESSING[prep_key]
        wanted = [(v, out / name / f"{v}.tflite") for v in (*VARIANTS, DYNAMIC_BATCH) if v != DYNAMIC_BATCH
                  or name == "CustomCNN-softmax"]
        if not force and all(path.exists() for _, path in wanted):
            entries += [Entry(name, v, str(path.relative_to(out)), prep_key, "keras") for v, path in wanted]
            print(f"{name}: already converted", flush=True)
            continue
        started = time.perf_counter()
        tf.keras.utils.set_random_seed(0)
        model = build()
        grey = model.input_shape[-1] == 1
        preprocessed = prep.apply(luminance(calibration) if grey else calibration)
        calibrate_keras_batchnorm(model, preprocessed)
        representative = preprocessed[:REPRESENTATIVE_PHOTOS]
        print(f"{name}: built and calibrated in {time.perf_counter() - started:.1f} s", flush=True)
        for variant, path in wanted:
            started = time.perf_counter()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_keras_to_tflite(model, variant, representative))
            seconds = time.perf_counter() - started
            print(f"  {variant}: {path.stat().st_size / 1e6:.1f} MB in {seconds:.1f} s", flush=True)
            entries.append(Entry(name, variant, str(path.relative_to(out)), prep_key, "keras", round(seconds, 1)))
    return entries


def _keras_to_tflite(model: Any, variant: str, representative: np.ndarray) -> bytes:
    """One TFLite variant of ``model``; the batch is fixed to 1 except for ``float-dynamic-batch``."""
    import keras
    import tensorflow as tf

    if variant != DYNAMIC_BATCH:  # the same layers (and weights) behind an input whose batch is 1
        image = keras.Input(model.input_shape[1:], batch_size=1, name="image")
        model = keras.Model(image, model(image, training=False), name=model.name)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant != "float" and variant != DYNAMIC_BATCH:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant in ("int8-float-io", "int8", "uint8"):
        def dataset() -> Iterator[list[np.ndarray]]:
            for row in representative:
                yield [row[np.newaxis]]

        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if variant != "int8-float-io":
            io_type = tf.int8 if variant == "int8" else tf.uint8
            converter.inference_input_type = converter.inference_output_type = io_type
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the exported signature
        return converter.convert()


# --- convert-torch (litert-torch venv) ---------------------------------------------------------------


def convert_torch(out: Path, only: Sequence[str], force: bool) -> list[Entry]:
    """torchvision MobileNetV3-Small and ResNet18: random weights, BatchNorm calibrated, NCHW float and int8."""
    import torch
    import torchvision

    prep = PREPROCESSING["torch-imagenet"]
    pixels = np.stack([load_pixels(p) for p in held_photos(CALIBRATION_PHOTOS, 40)])
    calibration = torch.from_numpy(np.ascontiguousarray(prep.apply(pixels).transpose(0, 3, 1, 2)))
    builders = {"torch-MobileNetV3Small": torchvision.models.mobilenet_v3_small,
                "torch-ResNet18": torchvision.models.resnet18}
    entries: list[Entry] = []
    for name, build in builders.items():
        if only and name not in only:
            continue
        torch.manual_seed(0)
        model = build(weights=None)
        for module in model.modules():  # momentum None: a cumulative average, over one pass this batch's statistics
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None
        model.train()
        with torch.no_grad():
            model(calibration)
        model.eval()
        for variant in TORCH_VARIANTS:
            path = out / name / f"{variant}.tflite"
            started = time.perf_counter()
            if force or not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_torch_to_tflite(model, variant, calibration[:REPRESENTATIVE_PHOTOS]))
            seconds = time.perf_counter() - started
            print(f"{name} {variant}: {path.stat().st_size / 1e6:.1f} MB in {seconds:.1f} s", flush=True)
            relative = str(path.relative_to(out))
            entries.append(Entry(name, variant, relative, "torch-imagenet", "torch", round(seconds, 1)))
    return entries


def _torch_to_tflite(model: Any, variant: str, representative: Any) -> bytes:
    """One TFLite variant of a torch model with litert-torch: float, PT2E dynamic-range or static int8."""
    import tempfile

    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import quantize_pt2e

    sample = (representative[:1],)
    options: dict[str, Any] = {}
    if variant != "float":
        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=variant == "dynamic"))
        prepared = quantize_pt2e.prepare_pt2e(torch.export.export(model, sample).module(), quantizer)
        with torch.no_grad():
            for index in range(len(representative)):
                prepared(representative[index:index + 1])
        model = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        options["quant_config"] = quant_config.QuantConfig(pt2e_quantizer=quantizer)
    converted = litert_torch.convert(model, sample, **options)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.tflite"
        converted.export(str(path))
        return path.read_bytes()


# --- evaluate (project venv) --------------------------------------------------------------------------


@dataclass
class Row:
    """What one converted model gave; ``None`` where a step did not run or failed."""

    model: str
    variant: str
    file: str
    expected: str
    normalization: str = ""
    source: str = ""
    layout: str = ""
    kind: str = ""
    output_type: str = ""
    written_imprint_type: str = ""
    written_train_type: str = ""
    cut_tensor: str = ""
    imprint_accuracy: float | None = None
    train_accuracy: float | None = None
    stock_agrees: str = ""
    degenerate_warning: bool = False
    spread_old: float | None = None
    spread_auto: float | None = None
    spread_expected: float | None = None
    relative_old: float | None = None
    relative_auto: float | None = None
    relative_expected: float | None = None
    check: str = ""
    exit_codes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def make_subset(corpus: Path) -> Path:
    """``CORPUS/data/<class>/`` with symbolic links to the first photos of a few flower classes."""
    data = corpus / "data"
    by_class = flower_photos()
    for name in SUBSET_CLASSES:
        folder = data / name
        folder.mkdir(parents=True, exist_ok=True)
        for photo in by_class[name][:SUBSET_PHOTOS]:
            link = folder / photo.name
            if not link.is_symlink():
                link.symlink_to(photo)
    return data


def lastlayer(args: Sequence[str], row: Row, step: str, corpus: Path) -> Any:
    """Run ``python -m lastlayer ARGS --json``; record the exit code, the error line, a degenerate warning."""
    env = {**os.environ, "LASTLAYER_CACHE": str(corpus / "cache"), "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, "-m", "lastlayer", *args, "--json"], capture_output=True, text=True, env=env)
    row.exit_codes[step] = done.returncode
    if "hardly differ" in done.stderr:
        row.degenerate_warning = True
    if done.returncode != 0:
        row.errors[step] = (done.stderr.strip().splitlines() or ["(no message)"])[-1][:300]
    try:
        return json.loads(done.stdout) if done.stdout.strip() else None
    except json.JSONDecodeError:
        return None


def spread(embeddings: np.ndarray) -> tuple[float, float]:
    """(absolute, relative) spread of embeddings of different photos, one row each.

    absolute: the standard deviation across photos, averaged over the features (the issue's measure);
    relative: the mean pairwise L2 distance over the mean L2 norm (0: all alike; scale-free).
    """
    rows = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    absolute = float(rows.std(axis=0).mean())
    pairs = [np.linalg.norm(a - b) for a, b in itertools.combinations(rows, 2)]
    relative = float(np.mean(pairs) / (np.linalg.norm(rows, axis=1).mean() + 1e-12))
    return absolute, relative


def measure_spreads(path: Path, prep: Preprocessing, row: Row) -> None:
    """Embeddings of :data:`SPREAD_PHOTOS` photos fed by the old rule, the automatic one and the expected one."""
    from lastlayer import ModelFile, extractor_model
    from lastlayer.model.normalization import OPTION, Normalization, input_normalization
    from lastlayer.runtime.interpreter import Interpreter

    model = ModelFile.read(path)
    extractor = extractor_model(model)
    feeds = {
        "old": Normalization((128.0,), (128.0,), OPTION, "the old rule"),
        "auto": input_normalization(model),
        "expected": Normalization(prep.mean, prep.std, OPTION, "what the architecture expects"),
    }
    photos = held_photos(SPREAD_PHOTOS, 20)
    for label, normalization in feeds.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = Interpreter(extractor, normalization=normalization, num_threads=2)
            layout = interpreter.layout
            embeddings = np.stack([interpreter.run(load_pixels(p, layout.width)) for p in photos])
        absolute, relative = spread(embeddings)
        setattr(row, f"spread_{label}", absolute)
        setattr(row, f"relative_{label}", relative)


def metadata_normalization(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """The input's ``NormalizationOptions`` (mean, std) in a model's ``TFLITE_METADATA``, read with schemas only."""
    from ai_edge_litert import schema_py_generated as schema

    from lastlayer.model import metadata_schema_py_generated as meta  # the FlatBuffers compiler's output, unchanged

    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() != b"TFLITE_METADATA":
            continue
        blob = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
        metadata = meta.ModelMetadataT.InitFromPackedBuf(blob, 0)
        tensor = metadata.subgraphMetadata[0].inputTensorMetadata[0]
        for unit in tensor.processUnits or []:
            if unit.optionsType == meta.ProcessUnitOptions.NormalizationOptions:
                return np.asarray(unit.options.mean, np.float32), np.asarray(unit.options.std, np.float32)
    return None


def stock_scores(path: Path, photos: Sequence[Path]) -> list[np.ndarray]:
    """Scores of a model in a plain ``ai_edge_litert`` interpreter, fed as its metadata says (else raw pixels)."""
    from ai_edge_litert.interpreter import Interpreter

    data = path.read_bytes()
    found = metadata_normalization(data)
    mean, std = found if found is not None else (np.zeros(1, np.float32), np.ones(1, np.float32))
    interpreter = Interpreter(model_content=data, num_threads=2)
    interpreter.allocate_tensors()
    detail, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    shape = [int(d) for d in detail["shape"]]
    channels_first = shape[1] in (1, 3) and shape[3] not in (1, 3)
    size, channels = (shape[2], shape[1]) if channels_first else (shape[1], shape[3])
    results = []
    for photo in photos:
        pixels = load_pixels(photo, size)
        pixels = luminance(pixels) if channels == 1 else pixels
        values = (pixels.astype(np.float32) - mean) / std
        if detail["dtype"] != np.float32:
            scale, zero_point = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            values = np.clip(np.round(values / scale + zero_point), info.min, info.max)
        tensor = values.astype(detail["dtype"])
        tensor = np.transpose(tensor, (2, 0, 1)) if channels_first else tensor
        interpreter.set_tensor(detail["index"], tensor[np.newaxis])
        interpreter.invoke()
        scores = interpreter.get_tensor(out["index"]).reshape(-1).astype(np.float32)
        if out["dtype"] != np.float32 and out["quantization"][0]:
            scores = (scores - out["quantization"][1]) * out["quantization"][0]
        results.append(scores)
    return results


def compare_with_stock(model_path: Path, row: Row, corpus: Path, photos: Sequence[Path]) -> str:
    """``lastlayer classify`` against a stock interpreter on the same photos: 'yes', 'NO (...)' or '-'."""
    if not model_path.exists():
        return "-"
    result = lastlayer(["classify", "-m", str(model_path), "--top-k", "100", *map(str, photos)],
                       row, f"classify {model_path.parent.name}", corpus)
    if not result:
        return "NO (classify failed)"
    stock = stock_scores(model_path, photos)
    worst, same_top = 0.0, True
    for mine, theirs in zip(result["results"], stock):
        ours = np.zeros_like(theirs)
        for c in mine["classes"]:
            ours[c["id"]] = c["score"]
        worst = max(worst, float(np.abs(ours - theirs).max()))
        same_top &= int(np.argmax(ours)) == int(np.argmax(theirs)) or abs(float(ours.max() - theirs.max())) < 1e-6
    # classify rounds to 6 decimals; a uint8/int8 output moves in steps of 1/256
    tolerance = 1e-4 if "float32" in (row.written_train_type, row.written_imprint_type) else 0.005
    ok = same_top and worst <= max(tolerance, 1e-4)
    return "yes" if ok else f"NO (max diff {worst:.3g}{'' if same_top else ', top-1 differs'})"


def written_type(path: Path, row: Row, corpus: Path, step: str) -> str:
    if not path.exists():
        return "-"
    found = lastlayer(["inspect", str(path)], row, step, corpus)
    return found["output_type"] if found else "?"


def evaluate_one(entry: Entry, corpus: Path, data: Path, photos: Sequence[Path]) -> Row:
    """Every lastlayer step on one converted model, results in a :class:`Row`."""
    prep = PREPROCESSING[entry.preprocessing]
    path = corpus / entry.file
    work = corpus / "runs" / entry.model / entry.variant
    work.mkdir(parents=True, exist_ok=True)
    expected = f"mean {','.join(f'{v:g}' for v in prep.mean)}, std {','.join(f'{v:g}' for v in prep.std)}"
    row = Row(entry.model, entry.variant, entry.file, expected)
    found = lastlayer(["inspect", str(path)], row, "inspect", corpus)
    if found:
        norm = found["normalization"]
        row.normalization = f"{','.join(f'{v:g}' for v in norm['mean'])} / {','.join(f'{v:g}' for v in norm['std'])}"
        row.source = norm["source"] + (f": {norm['reason']}" if norm["source"] == "input quantization" else "")
        row.layout, row.kind = found.get("layout", "?"), found.get("kind", "?")
        row.output_type = found.get("output_type", "?")
    checked = lastlayer(["check", str(path)], row, "check", corpus)
    row.check = check_summary(checked)
    if checked and row.exit_codes["check"] == 1:  # exit 1 is the answer "not fully mapped", not a failure
        row.exit_codes.pop("check")
        row.errors.pop("check", None)
    cut = lastlayer(["cut", str(path), "-o", str(work / "extractor.tflite")], row, "cut", corpus)
    row.cut_tensor = f"{cut['embedding_tensor']} ({cut['embedding_size']})" if cut else "-"
    imprint = lastlayer(["imprint", str(data), "-m", str(path), "-o", str(work / "imprint"), "--test-ratio", "0.3"],
                        row, "imprint", corpus)
    row.imprint_accuracy = imprint.get("test_accuracy") if imprint else None
    train = lastlayer(["train", str(data), "-e", str(path), "-o", str(work / "train")], row, "train", corpus)
    row.train_accuracy = train.get("val_accuracy") if train else None
    row.written_imprint_type = written_type(work / "imprint" / "model.tflite", row, corpus, "inspect imprint")
    row.written_train_type = written_type(work / "train" / "model.tflite", row, corpus, "inspect train")
    verdicts = [compare_with_stock(work / kind / "model.tflite", row, corpus, photos) for kind in ("imprint", "train")]
    row.stock_agrees = " / ".join(verdicts)
    try:
        measure_spreads(path, prep, row)
    except Exception as exc:  # noqa: BLE001  (recorded in the table: one model's failure must not stop the run)
        row.errors["spread"] = f"{type(exc).__name__}: {exc}"[:300]
    return row


def check_summary(checked: Any) -> str:
    """``lastlayer check`` in a few words: fully mapped to the Edge TPU, or the rules of its blocking findings."""
    if not checked:
        return "?"
    if checked.get("fully_supported"):
        return "maps fully"
    rules = sorted({f["rule"] for f in checked.get("findings", []) if f.get("blocking")})
    return "blocked by " + ", ".join(rules) if rules else "not fully mapped"


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


HEADER = ("model", "variant", "normalisation chosen (mean / std)", "source", "expects", "layout",
          "output -> written (imprint, train)", "cut: embedding (size)", "imprint acc", "train acc",
          "stock LiteRT agrees (imprint / train)", "degenerate warning", "spread old -> auto (expected)",
          "relative spread old -> auto (expected)", "lastlayer check", "non-zero exits")


def table_cells(r: Row) -> list[str]:
    codes = ", ".join(f"{step}={code}" for step, code in r.exit_codes.items() if code != 0) or "-"
    return [r.model, r.variant, r.normalization, r.source, r.expected, r.layout,
            f"{r.output_type} -> {r.written_imprint_type}, {r.written_train_type}", r.cut_tensor,
            _acc(r.imprint_accuracy), _acc(r.train_accuracy), r.stock_agrees, "yes" if r.degenerate_warning else "no",
            f"{_f(r.spread_old)} -> {_f(r.spread_auto)} ({_f(r.spread_expected)})",
            f"{_f(r.relative_old)} -> {_f(r.relative_auto)} ({_f(r.relative_expected)})", r.check, codes]


def table(rows: Sequence[Row]) -> str:
    """The results as a markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in table_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def evaluate(corpus: Path, only: Sequence[str]) -> list[Row]:
    entries = [e for e in read_manifests(corpus) if not only or e.model in only]
    if not entries:
        raise SystemExit(f"no converted model in {corpus}: run the convert step first (see --help)")
    # A fresh embedding cache: lastlayer warns about degenerate embeddings only when it computes them
    shutil.rmtree(corpus / "cache", ignore_errors=True)
    data = make_subset(corpus)
    photos = held_photos(CLASSIFY_PHOTOS, 30)
    rows = []
    for entry in entries:
        started = time.perf_counter()
        row = evaluate_one(entry, corpus, data, photos)
        rows.append(row)
        print(f"{entry.model} {entry.variant}: {row.normalization} ({row.source}); "
              f"imprint {_acc(row.imprint_accuracy)}, train {_acc(row.train_accuracy)}, stock {row.stock_agrees}, "
              f"spread {_f(row.spread_old)} -> {_f(row.spread_auto)}"
              f"{'; errors: ' + json.dumps(row.errors) if row.errors else ''} [{time.perf_counter() - started:.0f} s]",
              flush=True)
    return rows


def versions() -> str:
    """The versions that made and ran the corpus, for the report."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("lastlayer", "ai-edge-litert", "numpy", "pillow"):
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{package} {version(package)}")
    return f"Python {sys.version.split()[0]}; " + ", ".join(found)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="See the module docstring (or scripts/README.md) for the environments.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("convert", "convert-torch"):
        tool = "TensorFlow" if name == "convert" else "litert-torch"
        sub = commands.add_parser(name, help=f"{name} (run in the venv with {tool})")
        sub.add_argument("--out", type=Path, default=Path("/tmp/corpus"), help="corpus folder (default: /tmp/corpus)")
        sub.add_argument("--force", action="store_true", help="convert again even when the files exist")
        sub.add_argument("--only", nargs="*", default=[], help="these architectures only")
    sub = commands.add_parser("evaluate", help="run lastlayer on the corpus (run in the project's venv)")
    sub.add_argument("--corpus", type=Path, default=Path("/tmp/corpus"), help="corpus folder (default: /tmp/corpus)")
    sub.add_argument("--only", nargs="*", default=[], help="these architectures only")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.command in ("convert", "convert-torch"):
        args.out.mkdir(parents=True, exist_ok=True)
        convert = convert_keras if args.command == "convert" else convert_torch
        entries = convert(args.out, args.only, args.force)
        write_manifest(args.out, "keras" if args.command == "convert" else "torch", entries)
        print(f"{len(entries)} models in {args.out} ({time.perf_counter() - started:.0f} s)")
        return 0
    rows = evaluate(args.corpus, args.only)
    markdown = table(rows)
    print("\n" + markdown)
    minutes = (time.perf_counter() - started) / 60
    (args.corpus / "results.md").write_text(
        f"# lastlayer on converted architectures\n\n{versions()}; evaluated in {minutes:.1f} min.\n\n{markdown}\n")
    (args.corpus / "results.json").write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    print(f"\nwritten {args.corpus / 'results.md'} and results.json ({minutes:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
