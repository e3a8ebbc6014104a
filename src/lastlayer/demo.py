"""The tour behind ``make demo``: teach a camera new kinds of parts and defects from five photos each.

Renders a small, deterministic, photo-free dataset of machine parts (gears, washers, brackets) and
defects (a chipped gear, a scratched washer, a bracket missing a hole) with
:mod:`lastlayer.images.render` (random pose, light, work surface and sensor noise); imprints it from
5 shots per class; adds one class later without the old images; trains a backprop head on the same
images; and compares them on held-out renders.
"""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
from PIL import Image

from lastlayer.embeddings.cache import embed_dataset
from lastlayer.files.datasets import load_dataset
from lastlayer.files.outputs import OutputSet, ensure_output_dir
from lastlayer.images.render import render_frame
from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.learn.softmax import SoftmaxRegression
from lastlayer.model.export import extractor_model, output_type_of, read_imprinting_layer, write_head
from lastlayer.model.file import ModelFile
from lastlayer.model.labels import format_labels
from lastlayer.model.zoo import DEFAULT_EXTRACTOR, open_model, resolve_model
from lastlayer.runtime import Interpreter

DEFAULT_OUTPUT = "lastlayer-demo"
FIRST_CLASSES = ["bracket", "gear", "gear_chipped", "washer", "washer_scratched"]
LATER_CLASS = "bracket_missing_hole"
SHOTS = 5
IMAGE_SIDE = 224
PathLike = Union[str, "os.PathLike[str]"]


def make_dataset(folder: Path, classes: list[str], per_class: int, seed: int) -> Path:
    """Write ``per_class`` PNG renders of each class into ``folder/<class>/``; deterministic in ``seed``.

    Photo ``number`` of every class is taken on its own work surface (the same for each class, so
    the surface tells nothing about the class), with the part's pose and light jittered per class.
    """
    for kind in classes:
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            surface = zlib.crc32(f"{seed}:{number}".encode())
            pixels = render_frame(kind, number, (IMAGE_SIDE, IMAGE_SIDE), surface)
            Image.fromarray(pixels).save(folder / kind / f"{kind}_{number:03d}.png")
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
