"""The tour behind ``make demo``: teach a camera new kinds of parts and defects from five photos each.

Renders a small, deterministic, photo-free dataset of machine parts (gears, washers, brackets) and
defects (a chipped gear, a scratched washer, a bracket missing a hole) with random pose, light and
background noise; imprints it from 5 shots per class; adds one class later without the old images;
trains a backprop head on the same images; and compares them on held-out renders.
"""

from __future__ import annotations

import math
import os
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lastlayer.data import load_dataset
from lastlayer.embeddings import embed_dataset
from lastlayer.files import OutputSet, ensure_output_dir
from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.learn.softmax import SoftmaxRegression
from lastlayer.model.export import extractor_model, output_type_of, read_imprinting_layer, write_head
from lastlayer.model.file import ModelFile
from lastlayer.model.labels import format_labels
from lastlayer.runtime import Interpreter
from lastlayer.zoo import DEFAULT_EXTRACTOR, open_model, resolve_model

DEFAULT_OUTPUT = "lastlayer-demo"
FIRST_CLASSES = ["bracket", "gear", "gear_chipped", "washer", "washer_scratched"]
LATER_CLASS = "bracket_missing_hole"
SHOTS = 5
PathLike = Union[str, "os.PathLike[str]"]


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    base = rng.uniform(40, 200)
    ys, xs = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * math.pi)
    gradient = (np.cos(angle) * xs + np.sin(angle) * ys - 0.5) * rng.uniform(20, 60)
    gray = base + gradient + rng.normal(0, 8, (size, size))
    tint = rng.uniform(0.9, 1.1, size=3)
    return np.clip(gray[..., None] * tint, 0, 255), base


def _gear(draw: ImageDraw.ImageDraw, c: float, r: float, teeth: int, chipped: bool, rng: np.random.Generator) -> None:
    points = []
    for i in range(teeth * 4):
        a = 2 * math.pi * i / (teeth * 4)
        radius = r * (1.18 if (i // 2) % 2 else 1.0)
        points.append((c + radius * math.cos(a), c + radius * math.sin(a)))
    draw.polygon(points, fill=255)
    draw.ellipse([c - r * 0.3, c - r * 0.3, c + r * 0.3, c + r * 0.3], fill=0)
    if chipped:  # a wedge broken off the rim
        a = rng.uniform(0, 2 * math.pi)
        width = rng.uniform(0.35, 0.55)
        draw.polygon([(c + r * 0.55 * math.cos(a), c + r * 0.55 * math.sin(a)),
                      (c + r * 1.4 * math.cos(a - width), c + r * 1.4 * math.sin(a - width)),
                      (c + r * 1.4 * math.cos(a + width), c + r * 1.4 * math.sin(a + width))], fill=0)


def _washer(draw: ImageDraw.ImageDraw, c: float, r: float) -> None:
    draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
    draw.ellipse([c - r * 0.45, c - r * 0.45, c + r * 0.45, c + r * 0.45], fill=0)


def _bracket(draw: ImageDraw.ImageDraw, c: float, r: float, holes: int) -> None:
    t = r * 0.45
    draw.polygon([(c - r, c - r), (c - r + t, c - r), (c - r + t, c + r - t), (c + r, c + r - t), (c + r, c + r), (c - r, c + r)], fill=255)
    hole = t * 0.28
    spots = [(c - r + t / 2, c - r + t * 1.2), (c + r - t * 1.2, c + r - t / 2)][:holes]
    for x, y in spots:
        draw.ellipse([x - hole, y - hole, x + hole, y + hole], fill=0)


def render_part(kind: str, rng: np.random.Generator, size: int = 224) -> Image.Image:
    """One photo-like render of a part of class ``kind`` (one of the demo's class names)."""
    background, base = _background(rng, size)
    canvas = size * 2  # draw at 2x, then rotate and shrink: smooth edges
    mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    c, r = canvas / 2, canvas * rng.uniform(0.26, 0.33)
    if kind.startswith("gear"):
        _gear(draw, c, r, int(rng.integers(8, 12)), kind == "gear_chipped", rng)
    elif kind.startswith("washer"):
        _washer(draw, c, r)
    else:
        _bracket(draw, c, r, 1 if kind == LATER_CLASS else 2)
    direction = 1 if base < 110 else -1 if base > 150 else rng.choice([-1, 1])  # keep the part visible
    tone = float(np.clip(base + direction * rng.uniform(55, 90), 15, 245))
    ys, xs = np.mgrid[0:canvas, 0:canvas] / canvas
    shade = tone + (xs - ys) * rng.uniform(-35, 35)  # light falling across the metal
    surface = Image.fromarray(np.clip(shade, 0, 255).astype(np.uint8))
    if kind == "washer_scratched":
        scratch = ImageDraw.Draw(surface)
        a = rng.uniform(0, math.pi)
        length, offset = r * rng.uniform(0.9, 1.3), rng.uniform(-0.3, 0.3) * r
        x0, y0 = c + offset * math.sin(a), c - offset * math.cos(a)
        scratch.line([(x0 - length * math.cos(a), y0 - length * math.sin(a)), (x0 + length * math.cos(a), y0 + length * math.sin(a))],
                     fill=int(np.clip(tone - 110 if tone > 128 else tone + 110, 0, 255)), width=int(canvas * 0.012) + 2)
    angle = rng.uniform(0, 360)
    mask = mask.rotate(angle, resample=Image.Resampling.BILINEAR)
    surface = surface.rotate(angle, resample=Image.Resampling.BILINEAR)
    scale = rng.uniform(0.85, 1.1)
    part_size = int(size * scale)
    mask = mask.resize((part_size, part_size), Image.Resampling.BILINEAR)
    surface = surface.resize((part_size, part_size), Image.Resampling.BILINEAR)
    image = Image.fromarray(background.astype(np.uint8))
    shift = int((size - part_size) / 2)
    offset = (shift + int(rng.integers(-18, 19)), shift + int(rng.integers(-18, 19)))
    image.paste(Image.merge("RGB", [surface] * 3), offset, mask)
    light = rng.uniform(0.8, 1.2)
    pixels = np.asarray(image, dtype=np.float32) * light + rng.normal(0, 4, (size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))


def make_dataset(folder: Path, classes: list[str], per_class: int, seed: int) -> Path:
    """Write ``per_class`` PNG renders of each class into ``folder/<class>/``; deterministic in ``seed``."""
    for kind in classes:
        rng = np.random.default_rng([seed, zlib.crc32(kind.encode()), per_class])  # per kind: poses differ across kinds
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            image = render_part(kind, rng)
            path = folder / kind / f"{kind}_{number:03d}.png"
            image.save(path)
    return folder


def _accuracy(scores: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.argmax(scores, axis=1) == truth)) if len(truth) else float("nan")


def _write_model(folder: Path, model_bytes: bytes, labels: list[str]) -> None:
    with OutputSet(folder) as out:
        out.add_bytes("model.tflite", model_bytes)
        out.add_text("labels.txt", format_labels(labels))
        out.commit()


def run_demo(
    output: PathLike = DEFAULT_OUTPUT,
    extractor: PathLike = DEFAULT_EXTRACTOR,
    test_per_class: int = 20,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the tour; write data, models and reports under ``output``; return the summary table."""
    start_all = time.perf_counter()
    extractor_path = resolve_model(extractor)  # says how to provide it when offline
    out = ensure_output_dir(output)
    everything = FIRST_CLASSES + [LATER_CLASS]
    log(f"rendering {SHOTS} training and {test_per_class} test images of {len(everything)} kinds of parts into {out / 'data'}")
    for split, count in (("train", SHOTS), ("test", test_per_class)):
        for kind in everything:
            folder = out / "data" / split
            if not (folder / kind).is_dir() or len(list((folder / kind).glob("*.png"))) != count:
                make_dataset(folder, [kind], count, seed + (0 if split == "train" else 1000))
    train_all, test_all = load_dataset(out / "data" / "train"), load_dataset(out / "data" / "test")
    first = np.array([train_all.classes.index(k) for k in FIRST_CLASSES])
    later = train_all.classes.index(LATER_CLASS)
    rows: list[dict[str, Any]] = []

    base = open_model(extractor_path)

    # 1. Imprint the first five classes from 5 shots each.
    timer = time.perf_counter()
    l2_extractor = Interpreter(extractor_model(base))
    train_emb = embed_dataset(l2_extractor, train_all, progress=False)
    test_emb = embed_dataset(l2_extractor, test_all, progress=False)
    head = ImprintingHead()
    for new_id, local in enumerate(first):
        head.add(train_emb.X[train_emb.y == local], new_id, train_all.classes[local])
    _write_model(out / "imprinted", write_head(base, head.export()), head.labels)
    old_test = np.isin(test_emb.y, first)
    to_first = {int(local): i for i, local in enumerate(first)}
    truth_first = np.array([to_first[int(v)] for v in test_emb.y[old_test]])
    accuracy_first = _accuracy(head.saved_scores(test_emb.X[old_test]), truth_first)
    rows.append({"step": "imprint 5 classes (5 shots each)", "classes": 5, "test_accuracy": accuracy_first,
                 "old_classes_accuracy": accuracy_first, "seconds": time.perf_counter() - timer})

    # 2. Later, add a sixth class to the saved model, without the first classes' images.
    timer = time.perf_counter()
    saved = ModelFile.read(out / "imprinted" / "model.tflite")
    resumed = ImprintingHead.from_layer(read_imprinting_layer(saved))
    resumed.add(train_emb.X[train_emb.y == later], resumed.num_classes, LATER_CLASS)
    _write_model(out / "imprinted_plus_one", write_head(saved, resumed.export()), resumed.labels)
    order = [train_all.classes[i] for i in first] + [LATER_CLASS]
    to_model = np.array([order.index(name) for name in test_all.classes])
    truth_all = to_model[test_emb.y]
    scores = resumed.saved_scores(test_emb.X)
    rows.append({"step": f"+ add '{LATER_CLASS}' later (5 shots)", "classes": 6, "test_accuracy": _accuracy(scores, truth_all),
                 "old_classes_accuracy": _accuracy(scores[old_test], truth_all[old_test]), "seconds": time.perf_counter() - timer})

    # 3. The same 30 images through backprop: a softmax head on the raw embeddings.
    timer = time.perf_counter()
    raw_extractor = Interpreter(base)
    raw_train = embed_dataset(raw_extractor, train_all, progress=False)
    raw_test = embed_dataset(raw_extractor, test_all, progress=False)
    softmax_head = SoftmaxRegression(num_iter=300, batch_size=30, momentum=0.9, init="class_means", seed=seed)
    softmax_head.fit(raw_train.X, to_model[raw_train.y])
    output_type = output_type_of(base)
    _write_model(out / "backprop", write_head(base, softmax_head.export(order), output_type=output_type), order)
    scores = softmax_head.saved_scores(raw_test.X, output_type)
    rows.append({"step": "backprop head, same 30 images", "classes": 6, "test_accuracy": _accuracy(scores, to_model[raw_test.y]),
                 "old_classes_accuracy": _accuracy(scores[old_test], to_model[raw_test.y][old_test]), "seconds": time.perf_counter() - timer})

    # 4. Check the saved imprinted model file itself with the interpreter, as a user would.
    from lastlayer.jobs.evaluate import EvaluateOptions, evaluate

    evaluation = evaluate(out / "imprinted_plus_one" / "model.tflite", out / "data" / "test",
                          EvaluateOptions(report_dir=out / "imprinted_plus_one" / "evaluation", progress=False)).report
    rows.append({"step": "saved 6-class model, run by LiteRT", "classes": 6, "test_accuracy": evaluation["top1_accuracy"],
                 "old_classes_accuracy": None, "seconds": None})

    log("")
    log(f"{'step':44} {'classes':>7} {'test acc':>9} {'old classes':>12} {'time':>7}")
    for row in rows:
        old = "-" if row["old_classes_accuracy"] is None else f"{row['old_classes_accuracy']:.3f}"
        seconds = "-" if row["seconds"] is None else f"{row['seconds']:.1f}s"
        log(f"{row['step']:44} {row['classes']:>7} {row['test_accuracy']:>9.3f} {old:>12} {seconds:>7}")
    log("")
    log(f"models, labels and reports are in {out}/ (imprinted/, imprinted_plus_one/, backprop/); "
        f"confusion matrix: {evaluation.get('confusion_png')}")
    log(f"try: lastlayer classify --model {out / 'imprinted_plus_one' / 'model.tflite'} {out / 'data' / 'test' / LATER_CLASS / (LATER_CLASS + '_000.png')}")
    return {"output": str(out), "rows": rows, "evaluation_report": evaluation.get("report_json"),
            "seconds": round(time.perf_counter() - start_all, 2)}
